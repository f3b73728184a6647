"""The grid's stages, the settings each finished stage recorded, and the input checks that run
before anything trains.

A stage is one script run. When it finishes, the grid writes `grid_stage.json` beside its
results: the script and the exact argv that made it, with the work folder written `<work>` so a
moved work folder still matches. A later grid reuses a finished stage only when its recorded
argv equals the planned one; otherwise it refuses before anything runs, naming the flags that
differ, so a results table never mixes runs made with different settings.
"""
import contextlib
import importlib.util
import io
import json
import os
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path

from BERT.pytorch_pretrained_bert import load_config
from utils import teacher_outputs  # the teacher file's owner names it
from utils.checkpoints import write_json
from utils.errors import PeakdError
from utils.glue import get_task
from utils.modeling import resolve_bert_model
from utils import methods
from utils.args import DISTILL_FLAGS, TRAIN_TYPE_FLAGS
from utils.distill import LIVE_TEACHER
from utils.methods import CKD, MINILM, TINYBERT
from utils.ptp import parse_thresholds_flag

SRC = Path(__file__).resolve().parents[2] / "src"
RECORD = "grid_stage.json"
WORK = "<work>"

@dataclass(frozen=True)
class Variant:
    """A student variant: its train type and layer schedule, the start point it needs (a PTP
    run of that model type, or an intermediate `layer` stage of that train type, whose final
    encoder it loads), and whose settings its stages take: `peakd` (the protocol's) or a
    compared method's own published ones (utils/methods.py)."""
    train_type: str
    model_type: str
    ptp: str = None
    layer: str = None
    method: str = "peakd"


def _sps(variant):
    return replace(variant, model_type="SPS")


# the compared methods (docs/baselines.md), each also on an SPS student (`sps_<method>`)
METHODS = {"tinybert": Variant("tinybert_pred", "Original", layer="tinybert_layer",
                               method="tinybert"),
           "minilm": Variant("ft", "Original", layer="minilm_layer", method="minilm"),
           "ckd": Variant("ckd", "Original", method="ckd"),
           "distil_cos": Variant("distil_cos", "Original", method="distil_cos")}
VARIANTS = {
    "ft": Variant("ft", "Original"),
    "kd": Variant("kd", "Original"),
    "pkd": Variant("pkd", "Original"),
    "sps_no_shuffle_pkd": Variant("pkd", "SPS_no_shuffle"),
    "sps_pkd": Variant("pkd", "SPS"),
    "ptp_pkd": Variant("pkd", "Original", ptp="Original"),
    "ptp_sps_pkd": Variant("pkd", "SPS", ptp="SPS"),
    **{name: v for m, v in METHODS.items() for name, v in ((m, v), (f"sps_{m}", _sps(v)))},
}
# the variants a grid runs unless --variants names others: the paper's ablation
PAPER_VARIANTS = ("ft", "kd", "pkd", "sps_no_shuffle_pkd", "sps_pkd", "ptp_pkd", "ptp_sps_pkd")
# stage kind -> (script, the grid flag whose extra script flags every stage of that kind gets)
KINDS = {"teacher": ("finetune.py", "--teacher_args"),
         "teacher_outputs": ("save_teacher_outputs.py", "--teacher_outputs_args"),
         "ptp": ("PTP.py", "--ptp_args"),
         "layer": ("finetune.py", "--layer_args"),
         "student": ("finetune.py", "--student_args")}
# the stages --teacher_from takes from another grid's work folder
TEACHER_KINDS = ("teacher", "teacher_outputs")


class GridError(Exception):
    """A one-line problem with the grid's inputs or work folder."""


@dataclass
class Stage:
    """One script run. argv: the script's flags; done: the file whose existence means
    finished; record: where its settings are written; needs: labels of stages run first."""
    label: str
    kind: str
    argv: list
    done: Path
    record: Path
    needs: tuple = ()
    variant: str = None
    seed: str = None
    ptp_dir: Path = None
    extra: list = field(default_factory=list)

    @property
    def script(self):
        return KINDS[self.kind][0]


def parse_seeds(text):
    """'1,2,3' -> ['1', '2', '3'] (canonical ints as text); GridError for anything else."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        seeds = [str(int(p)) for p in parts]
    except ValueError:
        raise GridError(f"--seeds {text!r} must be integers separated by commas, "
                        "e.g. 1,2,3,4,5") from None
    duplicates = sorted({s for s in seeds if seeds.count(s) > 1}, key=int)
    if duplicates:
        raise GridError(f"--seeds {text!r} repeats {', '.join(duplicates)}; give each seed once")
    return seeds


def parse_variants(text):
    names = [v.strip() for v in str(text).split(",")]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise GridError(f"unknown --variants {unknown}; known: {list(VARIANTS)}")
    if len(set(names)) != len(names):
        raise GridError(f"--variants {text!r} names a variant twice; give each once")
    return names


def split_extra(flag, text):
    """A pass-through flag's value ('--warmup_proportion 0.2') as argv tokens (shlex)."""
    try:
        return shlex.split(text or "")
    except ValueError as e:
        raise GridError(f"{flag} {text!r} cannot be split into flags ({e}); quote it as one "
                        f"shell word, e.g. {flag}=\"--warmup_proportion 0.2\"") from None


def check_inputs(args):
    """Checks every input the grid can check before the teacher trains, and canonicalises
    them: args.task (the task's name), args.data_dir and args.bert_model (absolute),
    args.seed_list, args.variant_list. Returns the pretrained model's depth."""
    positive = {"--teacher_epochs": args.teacher_epochs, "--epochs": args.epochs,
                "--ptp_epochs": args.ptp_epochs, "--teacher_lr": args.teacher_lr,
                "--lr": args.lr, "--ptp_lr": args.ptp_lr, "--jobs": args.jobs,
                "--train_batch_size": args.train_batch_size,
                "--max_seq_length": args.max_seq_length}
    for flag, value in positive.items():
        if not value > 0:
            raise GridError(f"{flag} {value} must be > 0")
    if args.cores is not None and args.cores < 1:
        raise GridError(f"--cores {args.cores} must be >= 1 (the cores this grid's stages "
                        "share; leave it out to use all)")
    if args.max_steps is not None and args.max_steps < 1:
        raise GridError(f"--max_steps {args.max_steps} must be >= 1 (it caps each run's "
                        "optimizer steps; leave it out to train the full epochs)")
    args.seed_list = parse_seeds(args.seeds)
    args.variant_list = parse_variants(args.variants)
    if args.ptp_thresholds != "table":
        try:
            parse_thresholds_flag(args.ptp_thresholds)
        except PeakdError as e:
            raise GridError(f"{e}, or `table` for PTP.py's per-task table") from None
    for flag, value in (("--work_dir", args.work_dir),
                        ("--records_dir", getattr(args, "records_dir", None))):
        if value is not None and not str(value).strip():
            raise GridError(f"{flag} is empty; pass a folder")
        if value is not None and Path(value).exists() and not Path(value).is_dir():
            raise GridError(f"{flag} {value} is a file; give a folder (it is created if "
                            "missing)")
    try:
        task = get_task(args.task)
        model_dir = resolve_bert_model(args.bert_model)
        config = load_config(model_dir)
    except PeakdError as e:
        raise GridError(str(e)) from None
    depth = config.num_hidden_layers
    if args.max_seq_length > config.max_positions:
        raise GridError(f"--max_seq_length {args.max_seq_length} exceeds the "
                        f"{config.max_positions} positions of {args.bert_model}; "
                        "lower it")
    args.task, args.bert_model = task.name, str(Path(model_dir).resolve())
    args.data_dir = str(Path(args.data_dir).resolve())
    train = Path(args.data_dir) / task.dir_name / task.processor.splits["train"]
    if not train.is_file():
        raise GridError(f"--data_dir {args.data_dir}: {train} not found; run "
                        "src/data/data_raw/download_glue_data.py or pass the GLUE folder")
    k = args.student_hidden_layers
    if not 1 <= k <= depth:
        raise GridError(f"--student_hidden_layers {k} must be in 1..{depth} (the pretrained "
                        f"model {args.bert_model} has {depth} layers)")
    sps = [v for v in args.variant_list if VARIANTS[v].model_type != "Original"]
    # PKD-skip pairs n effective layers with a depth-layer teacher only while n < 2 * depth
    if sps and 2 * k >= 2 * depth:
        raise GridError(f"--student_hidden_layers {k}: the SPS variants {sps} run {2 * k} "
                        f"effective layers, too deep for PKD with a {depth}-layer teacher; "
                        f"use fewer than {depth} layers or leave those variants out")
    return depth


def plan_grid(args, work, depth):
    """Every stage of the grid in order: the teacher, its outputs, then per seed each variant
    (a PTP variant after its own PTP run). args as after check_inputs (seed_list,
    variant_list) or with seeds/variants strings."""
    seeds = getattr(args, "seed_list", None) or parse_seeds(args.seeds)
    variants = getattr(args, "variant_list", None) or parse_variants(args.variants)
    extra = {kind: split_extra(flag, getattr(args, flag[2:])) for kind, (_, flag)
             in KINDS.items()}
    base = ["--task", args.task, "--data_dir", args.data_dir, "--max_seq_length",
            str(args.max_seq_length)]
    train = base + ["--bert_model", args.bert_model, "--train_batch_size",
                    str(args.train_batch_size)]
    if args.max_steps:
        train += ["--max_steps", str(args.max_steps)]
    # each flag only where it differs from the scripts' default, so that the recorded argv of
    # runs made before the flag existed still match
    select = ["--select", args.select] if getattr(args, "select", "dev") != "dev" else []
    train += select
    teacher = work / "teacher"
    teacher_file = teacher_outputs.default_path(args.task, depth, folder=work)
    stages = [
        Stage("teacher", "teacher", train + [
            "--train_type", "ft", "--model_type", "Original", "--student_hidden_layers",
            str(depth), "--learning_rate", str(args.teacher_lr), "--num_train_epochs",
            str(args.teacher_epochs), "--train_seed", str(args.teacher_seed), "--output_dir",
            str(teacher)], teacher / "eval_results.json", teacher / RECORD),
        Stage("teacher_outputs", "teacher_outputs", base + [
            "--teacher_dir", str(teacher), "--output_dir", str(work)], teacher_file,
            work / f"teacher_outputs.{RECORD}", needs=("teacher",))]
    student = train + ["--student_hidden_layers", str(args.student_hidden_layers),
                       "--teacher_prediction", str(teacher_file)]
    thresholds = [] if args.ptp_thresholds == "table" else ["--ptp_thresholds",
                                                             args.ptp_thresholds]
    order = ["--no_shuffle"] if getattr(args, "no_shuffle", False) else []
    ptp_schedule = order + optional("--schedule_epochs", args, "ptp_schedule_epochs") + \
        optional("--eval_steps", args, "ptp_eval_steps")
    student_schedule = order + optional("--schedule_epochs", args, "schedule_epochs") + \
        (["--schedule_applied_twice"] if getattr(args, "schedule_applied_twice", False)
         else []) + optional("--eval_steps", args, "eval_steps") + \
        (["--eval_start_epoch", str(args.eval_start_epoch)]
         if getattr(args, "eval_start_epoch", 1) not in (None, 1) else []) + \
        optional("--select_metric", args, "select_metric")
    # Per seed: the start-point stages first (PTP runs, then intermediate layer stages), SPS's
    # leading, then the students that need them, then the rest. The runner starts the first ready
    # stage in this order, so with --jobs > 1 the longest chains start first and do not finish
    # the seed last.
    def chain_first(name):
        v = VARIANTS[name]
        chained = v.ptp is not None or v.layer is not None
        return (not chained, not chained or v.model_type != "SPS")

    method_common = optional("--eval_steps", args, "eval_steps")
    for seed in seeds:
        seed_args = student + ["--train_seed", seed]
        # a student that reads no teacher file (ft; a teacher running alongside) is not given it
        no_file = train + ["--student_hidden_layers", str(args.student_hidden_layers),
                           "--train_seed", seed]
        starts = {}
        for ptp in sorted({VARIANTS[n].ptp for n in variants} - {None}, key=lambda m: m != "SPS"):
            ptp_dir = work / f"ptp_{ptp}_seed{seed}"
            starts["ptp", ptp] = Stage(f"ptp_{ptp}_seed{seed}", "ptp", seed_args + thresholds + [
                "--num_train_epochs", str(args.ptp_epochs), "--learning_rate",
                str(args.ptp_lr), "--model_type", ptp, "--output_dir", str(ptp_dir)]
                + ptp_schedule,
                ptp_dir / "PTP.eval_results.json", ptp_dir / RECORD,
                needs=("teacher_outputs",), seed=seed, ptp_dir=ptp_dir)
        layers = sorted({(VARIANTS[n].layer, VARIANTS[n].model_type, VARIANTS[n].method)
                         for n in variants if VARIANTS[n].layer},
                        key=lambda t: (t[1] != "SPS", t[0]))
        for layer, model_type, method in layers:
            out = work / f"{layer}_{model_type}_seed{seed}"
            settings = methods_table(method)["layer"]
            starts["layer", layer, model_type] = Stage(
                out.name, "layer", no_file + [
                    "--num_train_epochs", str(settings["epochs"]), "--learning_rate",
                    str(settings["learning_rate"]), "--train_type", layer, "--model_type",
                    model_type, "--teacher_dir", str(teacher), "--output_dir", str(out)]
                + method_common, out / "eval_results.json", out / RECORD,
                needs=("teacher",), seed=seed)
        stages += starts.values()
        for name in sorted(variants, key=chain_first):
            v = VARIANTS[name]
            out = work / f"{name}_seed{seed}"
            start, needs, ptp_dir = [], ("teacher_outputs",), None
            if v.ptp:
                ptp_dir = starts["ptp", v.ptp].ptp_dir
                start = ["--load_model_dir", str(ptp_dir / "PTP.encoder_loss.pkl")]
                needs = (starts["ptp", v.ptp].label,)
            if v.layer:
                first = starts["layer", v.layer, v.model_type]
                start = ["--load_model_dir", str(first.record.parent / "BERT.encoder_final.pkl")]
                needs = (first.label,) + (("teacher_outputs",) if v.train_type != "ft" else ())
            lr, epochs, schedule = args.lr, args.epochs, student_schedule
            if v.method != "peakd":
                lr, epochs = method_settings(v, args)
                schedule = method_common
            if v.train_type == "ft":
                head = no_file
            elif v.train_type in LIVE_TEACHER:
                head = no_file + ["--teacher_dir", str(teacher)]
                needs = ("teacher",)
            else:
                head = seed_args
            stages.append(Stage(f"{name}_seed{seed}", "student", head + start + [
                "--num_train_epochs", str(epochs), "--learning_rate", str(lr),
                "--train_type", v.train_type, "--model_type", v.model_type, "--output_dir",
                str(out)] + schedule, out / "eval_results.json", out / RECORD,
                needs=needs, variant=name, seed=seed, ptp_dir=ptp_dir))
    for stage in stages:
        stage.extra = extra[stage.kind]
        check_extra(stage)
        stage.argv = stage.argv + stage.extra
    return teacher, stages


def methods_table(method):
    """A compared method's published settings (utils/methods.py)."""
    return {"tinybert": TINYBERT, "minilm": MINILM}[method]


def method_settings(variant, args):
    """(learning rate, epochs) of a compared method's student stage: its authors' values where
    they published them (TinyBERT's prediction stage, CKD's per-task table), else the grid's."""
    if variant.method == "tinybert":
        return TINYBERT["pred"]["learning_rate"], TINYBERT["pred"]["epochs"]
    if variant.method == "ckd":
        row = methods.for_task(CKD, args.task)
        return row["learning_rate"], row["epochs"]
    return args.lr, args.epochs


def optional(flag, args, key):
    """[flag, value] when the grid setting `key` is set (not None), else []."""
    value = getattr(args, key, None)
    return [] if value is None else [flag, str(value)]


def flag_names(argv):
    """The --flags in an argv list ('--x=1' counts as --x)."""
    return [t.split("=", 1)[0] for t in argv if t.startswith("--")]


def check_extra(stage):
    """Refuses pass-through flags the grid itself sets for this stage: each has a grid flag
    (or is the grid's bookkeeping), and two values of one flag would hide which one ran."""
    flag = KINDS[stage.kind][1]
    clash = sorted(set(flag_names(stage.extra)) & set(flag_names(stage.argv)))
    if clash:
        raise GridError(f"{flag} sets {', '.join(clash)}, which the grid sets for every "
                        f"{stage.kind} stage; use the grid's own flag (bench/reproduce.py --help)")


def load_script_parser(script):
    """The argparse parser of a script in src/ (scripts do no work at import)."""
    spec = importlib.util.spec_from_file_location(f"_grid_{Path(script).stem}", SRC / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_parser()


def check_script_flags(stages):
    """Parses the first stage of each kind with its script's own parser, so a misspelt or
    ill-typed pass-through flag fails now rather than after hours of training."""
    seen = set()
    for stage in stages:
        if stage.kind in seen:
            continue
        seen.add(stage.kind)
        parser = load_script_parser(stage.script)
        # argparse would take an abbreviation (--warmup for --warmup_proportion); refusing
        # them keeps the recorded argv exact and the clash check above complete
        # (_option_string_actions: argparse's table of every option string)
        unknown = [f for f in flag_names(stage.extra) if f not in parser._option_string_actions]
        if unknown:
            raise GridError(f"{KINDS[stage.kind][1]} {shlex.join(stage.extra)!r}: "
                            f"{stage.script} has no flag {', '.join(unknown)} (give full flag "
                            f"names; python src/{stage.script} --help lists them)")
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                parser.parse_args(stage.argv)
            except SystemExit:
                lines = err.getvalue().strip().splitlines() or ["bad flags"]
                raise GridError(f"{KINDS[stage.kind][1]} {shlex.join(stage.extra)!r}: "
                                f"{stage.script} says {lines[-1]}") from None


def portable(argv, work):
    """argv with the work folder written <work>, so a moved work folder still matches."""
    root = str(work)
    return [WORK + t[len(root):] if t == root or t.startswith(root + "/") else t
            for t in argv]


def settings(stage, work):
    return {"script": stage.script, "argv": portable(stage.argv, work)}


def write_record(stage, work, wall_seconds=None):
    """grid_stage.json: the stage's settings, and its wall time (start to exit, not compared)."""
    write_json(stage.record, {**settings(stage, work), "wall_seconds": wall_seconds})


def as_flags(argv):
    """{--flag: value text} from an argv list (a bare flag maps to '')."""
    flags, key = {}, None
    for token in argv:
        if token.startswith("--"):
            key, _, value = token.partition("=")
            flags[key] = value
        elif key is not None:
            flags[key] = (flags[key] + " " + token).strip()
    return flags


def read_argv(argv):
    """argv less the distillation flags (and their values) that its --train_type does not read
    (TRAIN_TYPE_FLAGS), which cannot change a run's result: runs recorded before finetune.py
    refused them (ft given --teacher_prediction, before 40fbed6) still match."""
    flags = as_flags(argv)
    if "--train_type" not in flags:
        return list(argv)
    read = TRAIN_TYPE_FLAGS.get(flags["--train_type"], DISTILL_FLAGS)
    kept, keep = [], True
    for token in argv:
        if token.startswith("--"):
            name = token.partition("=")[0][2:]
            keep = name not in DISTILL_FLAGS or name in read
        if keep:
            kept.append(token)
    return kept


def differences(stage, work):
    """None when the finished stage was made with the planned settings; else a short text
    naming the flags that differ (or why the settings are unknown)."""
    if not stage.record.is_file():
        return "no record of its settings (made before the grid recorded them)"
    try:
        saved = json.loads(stage.record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"unreadable {stage.record.name}"
    now = settings(stage, work)
    saved = {**saved, "argv": read_argv(saved.get("argv", []))}
    if {k: saved.get(k) for k in now} == {**now, "argv": read_argv(now["argv"])}:
        return None
    if saved.get("script") != now["script"]:
        return f"script {saved.get('script')} (now {now['script']})"
    old, new = as_flags(saved["argv"]), as_flags(now["argv"])
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if not changed:
        return "flags in another order"
    return ", ".join(f"{k} {old.get(k, '(unset)')} (now {new.get(k, '(unset)')})"
                     for k in changed)


def check_finished(stages, work, unrecorded_ok=False):
    """Refuses, in one line, when a finished stage in `work` was made with other settings.
    unrecorded_ok passes a finished stage without a record: a view of a grid that is running,
    where a stage's results exist a moment before the grid records it at the stage's exit."""
    stale = [(s.label, d) for s in stages if s.done.exists()
             and not (unrecorded_ok and not s.record.is_file())
             for d in [differences(s, work)] if d]
    if stale:
        shown = "; ".join(f"{label}: {d}" for label, d in stale[:3])
        more = f"; and {len(stale) - 3} more" if len(stale) > 3 else ""
        raise GridError(f"--work_dir {work} holds {len(stale)} finished run(s) made with other "
                        f"settings ({shown}{more}); use another --work_dir or delete those "
                        "runs")


def check_teacher_link(source, stages, work):
    """The links ({link: target}) that make another grid's finished teacher and teacher outputs
    (its work folder `source`) this grid's, so that one teacher serves several studies (say, a
    confirmatory one with new seeds); `make_links` makes them. Checks both stages in `source`
    against this grid's settings and refuses in one line, writing nothing, when either is
    missing or was made otherwise."""
    source = Path(source).resolve()
    if source == work:
        raise GridError(f"--teacher_from {source} is the --work_dir itself; name the work "
                        "folder of another grid")
    links = {}
    for stage in (s for s in stages if s.kind in TEACHER_KINDS):
        there = {path: source / path.relative_to(work) for path in (stage.done, stage.record)}
        moved = replace(stage, done=there[stage.done], record=there[stage.record])
        if not moved.done.exists():
            raise GridError(f"--teacher_from {source}: its {stage.label} stage has not "
                            f"finished ({moved.done.name} is missing); finish that grid first")
        problem = differences(moved, work)
        if problem:
            raise GridError(f"--teacher_from {source}: its {stage.label} was made with other "
                            f"settings ({problem}); give this grid the same teacher flags")
        for path in there:
            top = work / path.relative_to(work).parts[0]  # e.g. <work>/teacher, a folder
            links[top] = source / top.name
    # links an earlier call made are kept; anything else already there is this folder's own
    missing = [link for link, target in links.items()
               if not (link.is_symlink() and link.resolve() == target.resolve())]
    for link in missing:
        if link.exists() or link.is_symlink():
            raise GridError(f"--work_dir {work} already has its own {link.name}; leave out "
                            "--teacher_from or use a new --work_dir")
    return {link: links[link] for link in missing}


def make_links(links, work):
    """Makes the relative links `check_teacher_link` planned ({link: target})."""
    work.mkdir(parents=True, exist_ok=True)
    for link, target in links.items():
        link.symlink_to(os.path.relpath(target, link.parent))
