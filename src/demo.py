"""Runs the whole PeaKD pipeline offline on CPU, on a generated task and a never-pretrained BERT.

    python src/demo.py [--work_dir demo/] [--force] [--seed 0]

Builds the embedded default (utils/demo_data.py: an SST-2-style synthetic sentiment task and a
small random-weight BERT), then runs the four steps of the pipeline as separate
processes with the real scripts and flags: teacher fine-tuning, teacher outputs, a plain
fine-tuned student for comparison, PTP, and the PeaKD student (PTP + SPS + PKD). A step whose
outputs exist is skipped unless --force or something it depends on was rebuilt. The numbers it
prints show that the pipeline works end to end; they are not results about BERT or PeaKD.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# the embedded default, the teacher file's name and run file names come from the project's
# utils; the pipeline steps themselves only ever run as scripts
from utils.args import HelpFormatter
from utils.demo_data import (NOT_PRETRAINED, SPLIT_FILES, TASK_DIR_NAME, TASK_NAME,
                             make_demo_bert, make_demo_task, read_info)
from utils.runs import RESULTS_FILE, run_file
from utils.teacher_outputs import default_path

SRC_DIR = Path(__file__).resolve().parent
DEFAULT_WORK_DIR = SRC_DIR.parent / "demo"
TEACHER_LAYERS = 4
STUDENT_LAYERS = 2
# Chosen so the 4-layer teacher reaches ~0.96 dev accuracy from random weights on 2 CPU cores in
# well under a minute: the model was never pretrained, so it needs a large rate and some epochs.
COMMON = ["--max_seq_length", "32", "--train_batch_size", "32", "--eval_batch_size", "128",
          "--learning_rate", "5e-4", "--no_cuda"]
TEACHER_EPOCHS = "10"
TEACHER_TARGET = 0.9
STUDENT_EPOCHS = "6"


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--work_dir", default=str(DEFAULT_WORK_DIR),
                        help="folder for the demo data, model and runs (default: %(default)s)")
    parser.add_argument("--force", action="store_true",
                        help="rebuild the data and model and rerun every step")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the generated task, the model weights and training")
    return parser


class Stage:
    """One pipeline step: its command, what it depends on, and the file that marks it done."""

    def __init__(self, name, script, args, done, deps):
        self.name, self.script, self.args, self.done, self.deps = name, script, args, done, deps

    def command(self):
        return [sys.executable, str(SRC_DIR / self.script), *self.args]


def plan(work, data_dir, bert_dir, teacher_file, seed):
    """The pipeline's steps on the demo data, in the order they run."""
    task = ["--task", TASK_NAME, "--data_dir", str(data_dir)]
    train = task + ["--bert_model", str(bert_dir), *COMMON, "--train_seed", str(seed),
                    "--overwrite_output_dir"]
    student = train + ["--student_hidden_layers", str(STUDENT_LAYERS),
                       "--num_train_epochs", STUDENT_EPOCHS]
    teacher_pred = ["--teacher_prediction", str(teacher_file)]
    return [
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
        Stage("student ft", "finetune.py",
              student + ["--train_type", "ft", "--model_type", "Original",
                         "--output_dir", str(work / "student_ft")],
              run_file(work / "student_ft", RESULTS_FILE), ("data", "bert")),
        Stage("PTP", "PTP.py",
              student + ["--model_type", "SPS", *teacher_pred, "--output_dir", str(work / "ptp")],
              run_file(work / "ptp", RESULTS_FILE, "PTP"), ("teacher outputs",)),
        Stage("PeaKD student", "finetune.py",
              student + ["--train_type", "pkd", "--model_type", "SPS",
                         "--load_model_dir", str(work / "ptp" / "PTP.encoder_loss.pkl"),
                         *teacher_pred, "--output_dir", str(work / "peakd")],
              run_file(work / "peakd", RESULTS_FILE), ("PTP", "teacher outputs")),
    ]


def read_results(run_dir):
    """(best dev accuracy, parameter count, effective layers) of a finished run."""
    results = json.loads(run_file(run_dir, RESULTS_FILE).read_text(encoding="utf-8"))
    best = results["best_acc"] or results["final"]
    return best[results["main_metric"]], results["num_parameters"], results["effective_layers"]


def main(argv=None):
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    work = Path(args.work_dir).expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)
    data_root, bert_dir = work / "data", work / "bert"
    print(f"PeaKD demo in {work}\n{NOT_PRETRAINED.format(seed=args.seed)}\n", flush=True)

    changed = set()
    before = read_info(data_root / TASK_DIR_NAME)
    task_dir = make_demo_task(data_root, seed=args.seed, force=args.force)
    if args.force or read_info(task_dir) != before:
        changed.add("data")
    before = read_info(bert_dir)
    make_demo_bert(bert_dir, [task_dir / f for f in SPLIT_FILES],
                   seed=args.seed, hidden=64, layers=TEACHER_LAYERS, heads=4, intermediate=128,
                   max_positions=64, force=args.force)
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
        try:
            subprocess.run(stage.command(), check=True, env=env)
        except subprocess.CalledProcessError as e:
            # the step has printed its own error; finished steps are kept for the next run
            print(f"\ndemo: step '{stage.name}' failed (exit {e.returncode}); fix it and rerun, "
                  "the finished steps are skipped", file=sys.stderr)
            raise SystemExit(e.returncode or 1) from None
        print(f"== {stage.name}: {time.perf_counter() - stage_start:.1f} s", flush=True)
        changed.add(stage.name)

    rows = [("teacher", f"Original, {TEACHER_LAYERS} layers, ft", work / "teacher"),
            ("plain student", f"Original, {STUDENT_LAYERS} layers, ft", work / "student_ft"),
            ("PeaKD student", f"PTP + SPS ({STUDENT_LAYERS} layers run twice) + PKD",
             work / "peakd")]
    teacher_acc = read_results(work / "teacher")[0]
    if teacher_acc < TEACHER_TARGET:
        print(f"\nwarning: the teacher reached only {teacher_acc:.4f} dev accuracy (the demo's "
              f"settings aim at >= {TEACHER_TARGET}); its students learn from a weak teacher")
    print(f"\n{'model':<15} {'setup':<38} {'dev acc':>8} {'params':>9} {'depth':>6}")
    for name, setup, run_dir in rows:
        acc, params, depth = read_results(run_dir)
        print(f"{name:<15} {setup:<38} {acc:>8.4f} {params:>9,} {depth:>6}")
    print("(synthetic task, never-pretrained model: these numbers only show the pipeline runs)")
    print(f"total wall time {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
