"""Runs the PeaKD pipeline and its ablation offline on CPU, on a generated toy task.

    python src/demo.py [--work_dir demo/] [--force] [--seed 0]

Builds the embedded default (utils/demo_data.py: a synthetic two-clause task whose label needs
a composition, and a small random-weight BERT), then runs the pipeline (README, "The pipeline")
as separate processes with the real scripts and flags (each forked from one process that
imported torch once, utils/launch.py): a 4-layer teacher, its outputs, PTP, and
2-layer students trained with ft, KD, PKD, SPS + PKD, and PTP + SPS + PKD (the full PeaKD
student). It prints one row per model with the measured dev accuracy and its difference to the
row above. A step whose outputs exist is skipped unless --force or something it depends on was
rebuilt. The model was never pretrained: the numbers say nothing about BERT, GLUE or the paper.
"""
import json
import os
import sys
import time
from pathlib import Path

# the embedded default, the teacher file's name and run file names come from the project's
# utils; the pipeline steps themselves only ever run as scripts
from utils.args import HelpFormatter, Parser
from utils.demo_data import (NOT_PRETRAINED, SPLIT_FILES, TASK_DIR_NAME, TASK_NAME, TASK_RULE,
                             make_demo_bert, make_demo_task, read_info)
from utils.errors import PeakdError
from utils.launch import launch
from utils.locks import LOCK_NAME, PID_NAME, folder_lock
from utils.paths import check_writable_dir
from utils.pipeline import run_cli
from utils.runs import RESULTS_FILE, run_file
from utils.teacher_outputs import default_path

SRC_DIR = Path(__file__).resolve().parent
DEFAULT_WORK_DIR = SRC_DIR.parent / "demo"
TEACHER_LAYERS = 4
STUDENT_LAYERS = 2
BERT_SHAPE = dict(hidden=64, heads=4, intermediate=128, max_positions=64)
# The model was never pretrained, so it learns from scratch: a large rate and several epochs.
# The teacher (trained once) gets more epochs than each student, as a real teacher gets more
# compute; every student gets the same budget, so the student rows compare like with like.
COMMON = ["--max_seq_length", "32", "--train_batch_size", "32", "--eval_batch_size", "256",
          "--learning_rate", "5e-4", "--no_cuda"]
TEACHER_EPOCHS = "12"
STUDENT_EPOCHS = "4"
TEACHER_TARGET = 0.9


# the file that marks a folder as the demo's own: the demo writes only into a folder that has
# it, or into a new or empty one (where it leaves it)
MARKER = ".peakd-demo"


def build_parser():
    parser = Parser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    parser.add_argument("--work_dir", default=str(DEFAULT_WORK_DIR),
                        help="folder for the demo data, model and runs: a new or empty folder, "
                             "or one an earlier demo made (default: %(default)s)")
    parser.add_argument("--force", action="store_true",
                        help="rebuild the data and model and rerun every step (default: reuse "
                             "what a previous run finished)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the generated task, the model weights and training "
                             "(default: %(default)s)")
    return parser


class Stage:
    """One pipeline step: its command, what it depends on, and the file that marks it done."""

    def __init__(self, name, script, args, done, deps):
        self.name, self.script, self.args, self.done, self.deps = name, script, args, done, deps

    def command(self):
        return [sys.executable, str(SRC_DIR / self.script), *self.args]


# (stage and run folder name, table label, finetune.py flags, uses the teacher, starts from PTP)
STUDENTS = (
    ("student_ft", "ft", ["--train_type", "ft", "--model_type", "Original"], False, False),
    ("student_kd", "KD", ["--train_type", "kd", "--model_type", "Original"], True, False),
    ("student_pkd", "PKD", ["--train_type", "pkd", "--model_type", "Original"], True, False),
    ("student_sps_pkd", "SPS + PKD", ["--train_type", "pkd", "--model_type", "SPS"], True, False),
    ("peakd", "PTP + SPS + PKD (PeaKD)", ["--train_type", "pkd", "--model_type", "SPS"], True,
     True),
)


def plan(work, data_dir, bert_dir, teacher_file, seed):
    """The pipeline's steps on the demo data, in the order they run."""
    task = ["--task", TASK_NAME, "--data_dir", str(data_dir)]
    train = task + ["--bert_model", str(bert_dir), *COMMON, "--train_seed", str(seed),
                    "--overwrite_output_dir"]
    student = train + ["--student_hidden_layers", str(STUDENT_LAYERS),
                       "--num_train_epochs", STUDENT_EPOCHS]
    teacher_pred = ["--teacher_prediction", str(teacher_file)]
    stages = [
        Stage("teacher", "finetune.py",
              train + ["--train_type", "ft", "--model_type", "Original",
                       "--student_hidden_layers", str(TEACHER_LAYERS),
                       "--num_train_epochs", TEACHER_EPOCHS,
                       "--output_dir", str(work / "teacher")],
              run_file(work / "teacher", RESULTS_FILE), ("data", "bert")),
        Stage("teacher outputs", "save_teacher_outputs.py",
              task + ["--teacher_dir", str(work / "teacher"), "--output_dir", str(work),
                      "--no_cuda"],
              teacher_file, ("teacher",)),
        Stage("PTP", "PTP.py",
              student + ["--model_type", "SPS", *teacher_pred, "--output_dir", str(work / "ptp")],
              run_file(work / "ptp", RESULTS_FILE, "PTP"), ("teacher outputs",)),
    ]
    for name, _, flags, uses_teacher, from_ptp in STUDENTS:
        args, deps = student + flags, ["data", "bert"]
        if uses_teacher:
            args, deps = args + teacher_pred, deps + ["teacher outputs"]
        if from_ptp:
            args = args + ["--load_model_dir", str(work / "ptp" / "PTP.encoder_loss.pkl")]
            deps.append("PTP")
        stages.append(Stage(name, "finetune.py", args + ["--output_dir", str(work / name)],
                            run_file(work / name, RESULTS_FILE), tuple(deps)))
    return stages


def read_results(run_dir, prefix="BERT"):
    """The run's eval_results.json (PTP runs: PTP.eval_results.json)."""
    return json.loads(run_file(run_dir, RESULTS_FILE, prefix).read_text(encoding="utf-8"))


def dev_score(results):
    """Dev metric of the checkpoint the run selected (best dev metric), else of its last step."""
    best = results["best_acc"] or results["final"]
    return best[results["main_metric"]]


def table_rows(work):
    """(label, setup, dev acc, parameters, effective layers, train seconds) per model, in the
    order the table shows them; the PeaKD row's time includes its PTP run."""
    teacher = read_results(work / "teacher")
    rows = [("teacher", f"{TEACHER_LAYERS} layers, {TEACHER_EPOCHS} epochs", teacher)]
    for name, label, flags, _, from_ptp in STUDENTS:
        model_type = flags[flags.index("--model_type") + 1]
        shape = (f"{STUDENT_LAYERS} layers run twice" if model_type == "SPS"
                 else f"{STUDENT_LAYERS} layers")
        rows.append((label, f"{shape}, {STUDENT_EPOCHS} epochs", read_results(work / name)))
    ptp_seconds = read_results(work / "ptp", "PTP")["train_seconds"]
    out = []
    for label, setup, results in rows:
        seconds = results["train_seconds"]
        if label.startswith("PTP"):
            seconds += ptp_seconds
        out.append((label, setup, dev_score(results), results["num_parameters"],
                    results["effective_layers"], seconds))
    return out


def format_table(rows):
    """The printed table: one line per model, each dev acc with its difference to the line above
    (signed as measured, so a row that does not beat the one before shows a negative or zero)."""
    lines = [f"{'model':<25} {'setup':<30} {'dev acc':>7} {'vs above':>8} {'params':>8} "
             f"{'depth':>5} {'train s':>7}"]
    previous = None
    for label, setup, acc, params, depth, seconds in rows:
        diff = "" if previous is None else f"{acc - previous:+.4f}"
        lines.append(f"{label:<25} {setup:<30} {acc:>7.4f} {diff:>8} {params:>8,} {depth:>5} "
                     f"{seconds:>7.1f}")
        previous = acc
    return lines


def check_claimable(work):
    """Refuses, before anything is written, a --work_dir that is a file, that cannot be
    written, or that holds anything but an earlier demo's files (its steps overwrite their
    runs): the demo writes only into a folder it made (MARKER) or a new or empty one."""
    check_writable_dir(work, "--work_dir")
    if work.is_dir() and not (work / MARKER).is_file() and \
            any(p.name not in (LOCK_NAME, PID_NAME) for p in work.iterdir()):
        raise PeakdError(f"--work_dir {work} holds files and is not a folder an earlier demo "
                         f"made (no {MARKER}); the demo overwrites its runs, so give it a new or "
                         "empty folder")


def main(argv=None):
    parser = build_parser()
    return run_cli(parser, run, argv)


def run(args):
    start = time.perf_counter()
    if not args.work_dir.strip():
        raise PeakdError("--work_dir is empty; pass a folder or leave the flag out")
    work = Path(args.work_dir).expanduser().resolve()
    check_claimable(work)
    with folder_lock(work, "--work_dir"):
        (work / MARKER).write_text("made by src/demo.py: the next demo rewrites its runs\n")
        return run_demo(args, work, start)


def run_demo(args, work, start):
    data_root, bert_dir = work / "data", work / "bert"
    print(f"PeaKD demo in {work}\n{NOT_PRETRAINED.format(seed=args.seed)}\n"
          f"task: {TASK_RULE}\n", flush=True)

    changed = set()
    before = read_info(data_root / TASK_DIR_NAME)
    task_dir = make_demo_task(data_root, seed=args.seed, force=args.force)
    if args.force or read_info(task_dir) != before:
        changed.add("data")
    before = read_info(bert_dir)
    make_demo_bert(bert_dir, [task_dir / f for f in SPLIT_FILES], seed=args.seed,
                   layers=TEACHER_LAYERS, force=args.force, **BERT_SHAPE)
    if args.force or read_info(bert_dir) != before:
        changed.add("bert")
    print(f"data: {task_dir} ({'built' if 'data' in changed else 'reused'})\n"
          f"model: {bert_dir} ({'built' if 'bert' in changed else 'reused'})", flush=True)

    teacher_file = default_path(TASK_NAME, TEACHER_LAYERS, patient=True, folder=work)
    env = dict(os.environ)
    # one intra-op thread unless the user says otherwise: on models this small a second thread
    # gains ~15%, but when the cores are shared OpenMP's spinning makes steps up to 10x slower
    env.setdefault("OMP_NUM_THREADS", "1")
    for stage in plan(work, data_root, bert_dir, teacher_file, args.seed):
        if stage.done.exists() and not changed.intersection(stage.deps):
            print(f"\n== {stage.name}: done before ({stage.done}), skipped", flush=True)
            continue
        print(f"\n== {stage.name}: {' '.join(stage.command()[1:])}", flush=True)
        stage_start = time.perf_counter()
        process = launch(SRC_DIR / stage.script, stage.args, env)
        try:
            code = process.wait()
        except BaseException:  # Ctrl-C reaches the step too; a crash here must not orphan it
            process.terminate()
            process.wait()
            raise
        if code:
            # the step has printed its own error; finished steps are kept for the next run
            raise PeakdError(f"demo step '{stage.name}' failed (exit {code}); fix it and rerun, "
                             "the finished steps are skipped")
        print(f"== {stage.name}: {time.perf_counter() - stage_start:.1f} s", flush=True)
        changed.add(stage.name)

    rows = table_rows(work)
    if rows[0][2] < TEACHER_TARGET:
        print(f"\nwarning: the teacher reached only {rows[0][2]:.4f} dev accuracy (the demo's "
              f"settings aim at >= {TEACHER_TARGET}); its students learn from a weak teacher")
    print(f"\nSST-2-layout synthetic task, dev set of {read_info(task_dir)['n_dev']}; dev acc of "
          "the checkpoint each run selected; 'vs above' = this row minus the row above; "
          "train s = training wall time (PeaKD: PTP included)")
    print("\n".join(format_table(rows)))
    print("never-pretrained model on a toy task, one seed: these numbers say nothing about GLUE "
          "or BERT")
    print(f"total wall time {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
