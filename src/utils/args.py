"""Every command-line flag, defined once in argument groups the scripts pick from.

Flags whose default depends on `--train_type` default to None and are filled from PRESETS by
`apply_presets`; a value given on the command line is never overridden.
"""
import argparse
import math
import sys
from pathlib import Path

import envs

from .errors import PeakdError, warn
from .glue import TASKS, get_task
from .methods import DISTIL_COS, loss_presets

TASK_NAMES = tuple(spec.name for spec in TASKS.values())

# Visible per-train-type defaults (README: Training types and presets); a flag given explicitly
# always wins. Each train type reads only the distillation flags named in TRAIN_TYPE_FLAGS; a
# preset is given for those of them that have one.
PRESETS = {
    "ft": {},
    "kd": {"alpha": 0.7, "T": 10.0},
    "pkd": {"alpha": 0.7, "T": 10.0, "beta": 100.0, "normalize_patience": True},
    # the methods Pea-KD is compared with (utils/methods.py: their sources and per-task values)
    "tinybert_layer": {},
    "tinybert_pred": {"T": 1.0},
    "minilm_layer": {},
    "ckd": {"alpha": 0.7, "T": 4.0, "relation_weights": "1,1"},
    "distil_cos": {"T": DISTIL_COS["T"], "alpha_ce": DISTIL_COS["alpha_ce"],
                   "alpha_task": DISTIL_COS["alpha_task"], "alpha_cos": DISTIL_COS["alpha_cos"]},
}
TRAIN_TYPES = tuple(PRESETS)
# the distillation flags each train type reads; another one given on the command line is
# refused, and args.json records only these
TRAIN_TYPE_FLAGS = {
    "ft": (),
    "kd": ("alpha", "T", "teacher_prediction"),
    "pkd": ("alpha", "T", "beta", "normalize_patience", "fc_layer_idx", "teacher_prediction"),
    "tinybert_layer": ("teacher_dir", "teacher_prediction"),
    "tinybert_pred": ("T", "teacher_prediction"),
    "minilm_layer": ("teacher_dir", "teacher_prediction"),
    "ckd": ("alpha", "T", "relation_weights", "teacher_dir", "teacher_prediction"),
    "distil_cos": ("T", "alpha_ce", "alpha_task", "alpha_cos", "teacher_dir",
                   "teacher_prediction"),
}
DISTILL_FLAGS = tuple(dict.fromkeys(f for flags in TRAIN_TYPE_FLAGS.values() for f in flags))

# torch.compile's modes. Those with CUDA graphs record one graph per padded batch shape on CUDA
# (at most 16 with the CUDA default --pad_to_multiple_of 8) and replay it: a launch-bound step's
# lever (issue 11), not yet measured on a GPU here.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def add_compile_arg(parser, what="the model"):
    """--compile [MODE], shared by the scripts and the benchmarks."""
    parser.add_argument("--compile", nargs="?", const="default", default=None,
                        choices=COMPILE_MODES,
                        help=f"torch.compile {what} with this mode (bare --compile: default; "
                             "reduce-overhead adds CUDA graphs on CUDA). Batch lengths are then "
                             "rounded up to a few buckets, each compiled once and cached on disk "
                             "($PEAKD_COMPILE_CACHE). On an H200 compiling took 52-66 s and then "
                             "ran MRPC steps 1.4x faster, so only runs of many minutes repay it; "
                             "on a CPU, and for shorter runs, eager (the default) is faster")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` that gives every flag's default: `(default: X)` unless the help text already
    says it, `(default: off)` for switches, `(required)` for required flags."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" in text or "default:" in text or action.default is argparse.SUPPRESS:
            return text
        if action.required:
            return f"{text} (required)"
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return f"{text} (default: {'on' if action.default else 'off'})"
        if action.default is None:
            return f"{text} (default: none)"
        return f"{text} (default: %(default)s)"


class RawHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """HelpFormatter that prints the description as written (a docstring with commands)."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors (unknown flag, `--alpha ''`, a bad choice) are one
    `error: ...` line and exit 2, as the scripts' other errors are one line.

    A flag that takes one value also takes one that starts with '-' and is none of the parser's
    flags (`--ptp_thresholds -1,-2`, `--teacher_args --bf16`), which argparse alone would refuse
    with "expected one argument": the value then reaches the flag's own check."""

    def error(self, message):
        self.exit(2, f"error: {message}; see {self.prog} --help\n")

    def parse_known_args(self, args=None, namespace=None):
        argv = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(self._attach_dash_values(argv), namespace)

    def _attach_dash_values(self, argv):
        out, i = [], 0
        while i < len(argv):
            token = argv[i]
            action = self._option_string_actions.get(token)
            takes_one = action is not None and action.nargs is None and \
                isinstance(action, argparse._StoreAction)
            if takes_one and i + 1 < len(argv) and argv[i + 1].startswith("-") and \
                    argv[i + 1].split("=", 1)[0] not in self._option_string_actions:
                out.append(f"{token}={argv[i + 1]}")
                i += 2
                continue
            out.append(str(token))
            i += 1
        return out


def new_parser(doc):
    """A script's parser: the first paragraph of its docstring as description, HelpFormatter."""
    return Parser(description=doc.split("\n\n")[0], formatter_class=HelpFormatter)


def preset_help(text, key):
    """A preset flag's help: `text`, its default per --train_type from PRESETS, and the train
    types that read it."""
    values = ", ".join(f"{t} {PRESETS[t][key]}" for t in TRAIN_TYPES if key in PRESETS[t])
    return f"{text} (default: per --train_type: {values}; {used_by(key)})"


def used_by(key):
    """'read by --train_type a, b' for a distillation flag."""
    return "read by --train_type " + ", ".join(t for t, f in TRAIN_TYPE_FLAGS.items() if key in f)


def str2bool(value):
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def add_task_args(parser, max_seq_length=128):
    """max_seq_length None: the value comes from the teacher run (save_teacher_outputs.py)."""
    g = parser.add_argument_group("task and data")
    g.add_argument("--task", required=True,
                   help="GLUE task name (case-insensitive): " + ", ".join(TASK_NAMES))
    g.add_argument("--data_dir", default=str(envs.GLUE_DIR),
                   help="folder holding <TASK>/train.tsv etc. (default: %(default)s; "
                        "environment: PEAKD_GLUE_DIR or PEAKD_DATA_DIR)")
    g.add_argument("--max_seq_length", type=int, default=max_seq_length,
                   help="tokens per example, [CLS] and [SEP]s included; longer pairs are cut "
                        "longest-first" + ("" if max_seq_length else
                                           " (default: the teacher run's value)"))
    g.add_argument("--eval_batch_size", type=int, default=64, help="examples per dev batch")
    g.add_argument("--pad_to_max_length", action="store_true",
                   help="pad every batch to --max_seq_length instead of its longest sequence")
    g.add_argument("--pad_to_multiple_of", type=int, default=None,
                   help="round each batch's length up to a multiple of this, so that few "
                        "shapes occur (default: 8 on CUDA, 1 on the CPU; utils/device.py)")
    g.add_argument("--no_cuda", action="store_true", help="run on the CPU even if CUDA is there")
    g.add_argument("--fp16", action="store_true", help="fp16 autocast and grad scaling (CUDA)")
    g.add_argument("--bf16", action="store_true",
                   help="bf16 autocast (GPUs or CPUs with fast bf16; where bf16 is slow, it warns)")
    return g


def add_model_args(parser):
    g = parser.add_argument_group("model")
    g.add_argument("--bert_model", default="bert-base-uncased",
                   help="pretrained BERT directory, or a name under src/data/models/pretrained "
                        "(environment: PEAKD_PRETRAINED_DIR)")
    g.add_argument("--model_type", default="Original",
                   choices=("Original", "SPS", "SPS_no_shuffle"),
                   help="student layer schedule: Original runs L1..Lk; SPS runs them again "
                        "with Query and Key swapped (2k effective layers, same parameters); "
                        "SPS_no_shuffle repeats them without the swap")
    g.add_argument("--student_hidden_layers", type=int, default=3,
                   help="physical layers of the trained model (12 for a BERT-base teacher)")
    g.add_argument("--layer_initialization", default=None,
                   help="1-based pretrained layers to initialise the student from, e.g. 1,5,9 "
                        "(default: the first k)")
    g.add_argument("--load_model_dir", default=None,
                   help="encoder checkpoint to start from (e.g. run-1/PTP.encoder_loss.pkl); "
                        "relative paths are under the task's output folder (default: the "
                        "--bert_model weights)")
    return g


def add_output_args(parser):
    g = parser.add_argument_group("output")
    g.add_argument("--output_dir", required=True,
                   help="run folder; relative paths are under src/data/outputs/KD/<TASK>/ "
                        "(environment: PEAKD_OUTPUT_DIR replaces src/data/outputs/KD)")
    g.add_argument("--overwrite_output_dir", action="store_true",
                   help="allow writing into a folder that already holds a finished run")
    g.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --output_dir from its "
                        "resume_state.pkl (repeat the run's other flags)")
    return g


def add_train_args(parser):
    g = parser.add_argument_group("training")
    g.add_argument("--learning_rate", type=float, default=2e-5, help="peak BertAdam learning rate")
    g.add_argument("--num_train_epochs", type=float, default=4.0,
                   help="epochs over the train split (a fraction stops mid-epoch)")
    g.add_argument("--train_batch_size", type=int, default=32,
                   help="examples per optimizer step (all micro-batches and processes together)")
    g.add_argument("--warmup_proportion", type=float, default=0.1,
                   help="fraction of the steps with a linearly rising learning rate, in [0, 1)")
    g.add_argument("--weight_decay", type=float, default=0.01,
                   help="decoupled weight decay (not on biases and LayerNorm weights)")
    g.add_argument("--adam_bias_correction", action="store_true",
                   help="bias-correct BertAdam's moments as AdamW does (off as in BERT and the "
                        "paper: uncorrected steps are several times larger early on)")
    g.add_argument("--gradient_accumulation_steps", type=int, default=1,
                   help="micro-batches per optimizer step; must divide --train_batch_size")
    g.add_argument("--train_seed", type=int, default=42,
                   help="seed of the batch order, dropout and the new head's weights")
    g.add_argument("--max_steps", type=int, default=None,
                   help="stop after this many optimizer steps (smoke runs; default: no limit)")
    g.add_argument("--eval_steps", type=int, default=None,
                   help="also evaluate every N optimizer steps (default: once per epoch)")
    g.add_argument("--save_steps", type=int, default=None,
                   help="also write resume_state.pkl every N optimizer steps (default: only "
                        "at each evaluation, where it is always written)")
    g.add_argument("--logging_steps", type=int, default=20,
                   help="optimizer steps between loss log lines (and non-finite checks)")
    g.add_argument("--saving_criterion_acc", type=float, default=float("-inf"),
                   help="save *_acc checkpoints only when the dev metric beats this too "
                        "(default: no bar; MCC can be <= 0)")
    g.add_argument("--saving_criterion_loss", type=float, default=float("inf"),
                   help="save *_loss checkpoints only when the dev loss is below this too")
    g.add_argument("--do_predict", action="store_true",
                   help="after training, write predictions on the test split (no labels)")
    add_compile_arg(g)
    add_schedule_args(parser)
    add_select_args(parser)
    return g


def add_schedule_args(parser):
    """The released Pea-KD code's schedule and data order, as settings (the grid's
    `authors_exact` protocol sets them; each default is this project's own choice)."""
    g = parser.add_argument_group(
        "schedule and data order (defaults: this project's; the released code's are settings)")
    g.add_argument("--no_shuffle", action="store_true",
                   help="train on the examples in file order every epoch, as the released code "
                        "did (default: a seeded shuffle per epoch)")
    g.add_argument("--schedule_epochs", type=float, default=None,
                   help="length of the warmup-linear schedule in epochs, computed as the released "
                        "code did (floor(train examples / batch) x this); training still stops "
                        "after --num_train_epochs (default: the steps actually trained)")
    g.add_argument("--schedule_applied_twice", action="store_true",
                   help="also write lr x warmup_linear(step) into the optimizer's learning rate "
                        "before each step, as the released finetune.py did, so that the step "
                        "uses lr x w^2 (default: the schedule applied once)")
    g.add_argument("--eval_start_epoch", type=int, default=1,
                   help="first epoch (1-based) with dev evaluations; the released finetune.py "
                        "never evaluated in its first epoch (2)")
    return g


SELECT_RULES = ("dev", "train_slice")


def add_select_args(parser):
    g = parser.add_argument_group("checkpoint selection")
    g.add_argument("--select", default="dev", choices=SELECT_RULES,
                   help="what chooses the saved checkpoints: dev (the dev set, which is then "
                        "also the reported score) or train_slice (a stratified slice of train, "
                        "held out of training; dev is then only scored)")
    g.add_argument("--select_fraction", type=float, default=0.1,
                   help="with --select train_slice: the share of train held out")
    g.add_argument("--select_seed", type=int, default=0,
                   help="with --select train_slice: the seed that draws the slice (keep it the "
                        "same for every run that is compared)")
    g.add_argument("--select_metric", default=None,
                   help="the metric that chooses *_acc checkpoints (f1 for MRPC in the released "
                        "code; default: the task's main metric)")
    return g


def add_distill_args(parser):
    g = parser.add_argument_group("distillation (presets per --train_type; flags win)")
    g.add_argument("--train_type", default="ft", choices=TRAIN_TYPES,
                   help="loss: ft cross-entropy (MSE for regression); kd adds the teacher's "
                        "softened predictions; pkd also its per-layer [CLS] vectors; "
                        "tinybert_layer / tinybert_pred TinyBERT's two stages; minilm_layer "
                        "MiniLM's attention and value relations (then ft); ckd CKD's word and "
                        "layer relations with KD; distil_cos DistilBERT's cosine loss with KD "
                        "(docs/baselines.md)")
    g.add_argument("--alpha", type=float, default=None,
                   help=preset_help("weight of the KD term, in [0, 1]", "alpha"))
    g.add_argument("--T", type=float, default=None,
                   help=preset_help("softmax temperature of the KD term, > 0", "T"))
    g.add_argument("--beta", type=float, default=None,
                   help=preset_help("weight of the patient loss, >= 0", "beta"))
    g.add_argument("--fc_layer_idx", default=None,
                   help="0-based teacher layers paired with the student's, e.g. 3,7 "
                        "(default: the PKD-skip rule; " + used_by("fc_layer_idx") + ")")
    g.add_argument("--normalize_patience", type=str2bool, default=None,
                   help=preset_help("L2-normalise [CLS] vectors in the patient loss "
                                    "(true/false)", "normalize_patience"))
    return g


def add_teacher_file_args(parser):
    g = parser.add_argument_group("teacher predictions")
    g.add_argument("--teacher_prediction", default=None,
                   help="teacher outputs file (default: the one save_teacher_outputs.py writes "
                        "for this task, in the task's output folder; finetune.py: "
                        + used_by("teacher_prediction") + ")")
    return g


def add_method_args(parser):
    """The compared methods' teacher and the weights of their loss terms (defaults: their
    authors')."""
    g = parser.add_argument_group("compared methods (defaults: their authors' values)")
    g.add_argument("--teacher_dir", default=None,
                   help="the teacher's finetune.py run folder, for the train types whose teacher "
                        "runs beside the student (tinybert_layer, minilm_layer, ckd, "
                        "distil_cos; default: the run the teacher outputs file names)")
    g.add_argument("--relation_weights", default=None,
                   help=preset_help("weights of CKD's word and layer-transforming relation "
                                    "terms, WR,LTR", "relation_weights"))
    g.add_argument("--alpha_ce", type=float, default=None,
                   help=preset_help("weight of T^2 KL(teacher || student), DistilBERT's",
                                    "alpha_ce"))
    g.add_argument("--alpha_task", type=float, default=None,
                   help=preset_help("weight of the task's cross-entropy, in the place of "
                                    "DistilBERT's masked-LM loss (its alpha_mlm)", "alpha_task"))
    g.add_argument("--alpha_cos", type=float, default=None,
                   help=preset_help("weight of the cosine loss on the last hidden states",
                                    "alpha_cos"))
    return g


def add_ptp_args(parser):
    g = parser.add_argument_group("PTP")
    g.add_argument("--ptp_thresholds", default=None,
                   help="t1,t2 confidence thresholds, or 'median' (default: per-task table)")
    return g


def add_sps_args(parser):
    g = parser.add_argument_group("SPS")
    g.add_argument("--sps_layers", default=None,
                   help="1-based physical layers the second pass re-runs, e.g. 4,5,6 "
                        "(default: all)")
    g.add_argument("--swap_prob", type=float, default=0.0,
                   help="training only: probability of flipping each effective layer's Q/K "
                        "swap per step (0: deterministic SPS)")
    return g


def apply_presets(args):
    """Refuses the distillation flags --train_type does not read (TRAIN_TYPE_FLAGS), fills the
    ones it reads left at None from PRESETS[train_type] (and, for the compared methods with
    per-task values, utils/methods.py), and checks their ranges. The unread flags stay None
    and are left out of args.json (runs.write_args)."""
    used = TRAIN_TYPE_FLAGS[args.train_type]
    unread = [f for f in DISTILL_FLAGS if f not in used and getattr(args, f, None) is not None]
    if unread:
        raise PeakdError(f"--{unread[0]} is not read by --train_type {args.train_type} "
                         f"({used_by(unread[0])}); drop it")
    task = getattr(args, "task", None)
    try:
        task = get_task(task).name if task else None
    except PeakdError:
        pass  # refused with its own message where the task is read
    presets = {**PRESETS[args.train_type], **loss_presets(args.train_type, task)}
    for key, value in presets.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    check_finite(args, ("alpha", "T", "beta", "alpha_ce", "alpha_task", "alpha_cos"))
    if getattr(args, "alpha", None) is not None and not 0.0 <= args.alpha <= 1.0:
        raise PeakdError(f"--alpha {args.alpha} must be in [0, 1]")
    if getattr(args, "T", None) is not None and args.T <= 0:
        raise PeakdError(f"--T {args.T} must be > 0")
    for name in ("beta", "alpha_ce", "alpha_task", "alpha_cos"):
        if getattr(args, name, None) is not None and getattr(args, name) < 0:
            raise PeakdError(f"--{name} {getattr(args, name)} must be >= 0")
    warn_absurd(args, ("T", "beta", "alpha_ce", "alpha_task", "alpha_cos"))
    return args


# (low, high, what is usual): a value outside runs as given, with one warning line
SANE = {"learning_rate": (1e-7, 1e-2, "fine-tuning uses 1e-5 to 1e-4"),
        "T": (0.1, 100.0, "distillation uses 1 to 20"),
        "beta": (0.0, 1e4, "PKD uses 10 to 1000"),
        "alpha_ce": (0.0, 1e3, "DistilBERT uses 5"),
        "alpha_task": (0.0, 1e3, "DistilBERT uses 2"),
        "alpha_cos": (0.0, 1e3, "DistilBERT uses 1")}


def warn_absurd(args, names):
    """One warning line per value of `names` whose magnitude no fine-tuning uses (a slip such as
    1e6 for 1e-6); the run goes on as asked, and a loss that diverges stops it."""
    for name in names:
        low, high, usual = SANE[name]
        value = getattr(args, name, None)
        if value is not None and not low <= value <= high:
            warn(f"--{name} {value:g} is far outside the usual range ({usual}); check it")


def check_finite(args, names):
    """nan and inf pass every range comparison unnoticed (`nan <= 0` is false): refuse them."""
    for name in names:
        value = getattr(args, name, None)
        if isinstance(value, float) and not math.isfinite(value):
            raise PeakdError(f"--{name} {value} is not a finite number; pass a number")


def check_positive(args, names):
    """Each flag in `names` is >= 1 unless left out (None)."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise PeakdError(f"--{name} {value} must be >= 1")


def check_common(args):
    """Range checks shared by the scripts that train."""
    check_finite(args, ("learning_rate", "num_train_epochs", "warmup_proportion", "weight_decay",
                        "swap_prob", "schedule_epochs", "select_fraction"))
    if getattr(args, "schedule_epochs", None) is not None and args.schedule_epochs <= 0:
        raise PeakdError(f"--schedule_epochs {args.schedule_epochs} must be > 0")
    if getattr(args, "select", "dev") == "train_slice" and not 0 < args.select_fraction < 0.5:
        raise PeakdError(f"--select_fraction {args.select_fraction} must be in (0, 0.5)")
    for name in ("saving_criterion_acc", "saving_criterion_loss"):
        # -inf / inf are the "no bar" defaults; nan would silently never save
        if math.isnan(getattr(args, name, 0.0)):
            raise PeakdError(f"--{name} nan is not a number; pass a number or leave it out")
    check_positive(args, ("train_batch_size", "eval_batch_size", "gradient_accumulation_steps",
                          "max_seq_length", "student_hidden_layers", "logging_steps",
                          "max_steps", "eval_steps", "save_steps", "pad_to_multiple_of",
                          "eval_start_epoch"))
    if args.train_batch_size % args.gradient_accumulation_steps:
        raise PeakdError(f"--train_batch_size {args.train_batch_size} must be a multiple of "
                         f"--gradient_accumulation_steps {args.gradient_accumulation_steps}")
    if getattr(args, "learning_rate", 1.0) <= 0:
        raise PeakdError(f"--learning_rate {args.learning_rate} must be > 0")
    if not 0.0 <= getattr(args, "warmup_proportion", 0.0) < 1.0:
        raise PeakdError(f"--warmup_proportion {args.warmup_proportion} must be in [0, 1)")
    if getattr(args, "num_train_epochs", 1.0) <= 0:
        raise PeakdError(f"--num_train_epochs {args.num_train_epochs} must be > 0")
    if getattr(args, "weight_decay", 0.0) < 0:
        raise PeakdError(f"--weight_decay {args.weight_decay} must be >= 0")
    warn_absurd(args, ("learning_rate",))
    if args.fp16 and args.bf16:
        raise PeakdError("--fp16 and --bf16 exclude each other; pick one")
    if getattr(args, "compile", None) in CUDA_GRAPH_MODES and args.gradient_accumulation_steps > 1:
        # a replayed graph may write the next micro-batch's gradients into memory that .grad
        # still holds from the last one; the sum would be wrong
        raise PeakdError(f"--compile {args.compile} (CUDA graphs) cannot be combined with "
                         f"--gradient_accumulation_steps {args.gradient_accumulation_steps}; "
                         "use --compile default or no accumulation")
    return args


def task_output_dir(task_name, path):
    """A relative --output_dir / --load_model_dir lives under src/data/outputs/KD/<TASK>/."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else envs.OUTPUT_DIR / task_name / path
