"""Checks the paper's ordering on your task and model: one teacher, then every student variant
over several seeds, with the project's own scripts; a results table and a chart at the end.

    python bench/reproduce.py --task MRPC --bert_model DIR --data_dir ../shared/glue_data \
        --seeds 1,2,3 --work_dir bench/results/reproduce-MRPC

Variants: ft, kd, pkd (plain k-layer students), sps_no_shuffle_pkd, sps_pkd (SPS students),
ptp_pkd, ptp_sps_pkd (PTP start point, then PKD). A run whose eval_results.json exists is
skipped, so an interrupted grid resumes where it stopped. Writes results.csv (one row per run),
results.md (mean and std per variant) and results.png (matplotlib, optional).
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

from BERT.pytorch_pretrained_bert import load_config  # noqa: E402
from utils import teacher_outputs  # noqa: E402  (the teacher file's owner names it)
from utils.errors import PeakdError  # noqa: E402
from utils.glue import get_task  # noqa: E402
from utils.modeling import resolve_bert_model  # noqa: E402

# variant -> (train_type, model_type, PTP start point or None)
VARIANTS = {
    "ft": ("ft", "Original", None),
    "kd": ("kd", "Original", None),
    "pkd": ("pkd", "Original", None),
    "sps_no_shuffle_pkd": ("pkd", "SPS_no_shuffle", None),
    "sps_pkd": ("pkd", "SPS", None),
    "ptp_pkd": ("pkd", "Original", "Original"),
    "ptp_sps_pkd": ("pkd", "SPS", "SPS"),
}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", required=True)
    p.add_argument("--bert_model", required=True, help="pretrained BERT directory")
    p.add_argument("--data_dir", required=True, help="folder holding <TASK>/train.tsv")
    p.add_argument("--work_dir", required=True, help="where runs and results go")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--student_hidden_layers", type=int, default=3)
    p.add_argument("--teacher_epochs", type=float, default=3.0)
    # Two student epochs keep one task's 3-seed grid near an hour per core on a 2-core CPU.
    p.add_argument("--epochs", type=float, default=2.0, help="student and PTP epochs")
    # BertAdam has no bias correction, so its early steps are 3-5x AdamW's: 2e-5 suits the
    # teacher, 5e-5 the students, and 1e-4 collapsed the MiniLM teacher to the majority class.
    p.add_argument("--teacher_lr", type=float, default=2e-5)
    p.add_argument("--lr", type=float, default=5e-5, help="student learning rate")
    p.add_argument("--ptp_lr", type=float, default=None,
                   help="learning rate of the PTP stage (default: --lr)")
    p.add_argument("--teacher_seed", type=int, default=42)
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--train_batch_size", type=int, default=32)
    p.add_argument("--max_steps", type=int, default=None, help="per run (smoke tests)")
    p.add_argument("--no_plot", action="store_true")
    return p


def run_stage(stage, position, total, log_dir):
    """Runs one planned stage unless its results file exists; output goes to
    <log_dir>/<label>.log, progress ([position/total], seconds) to stdout."""
    label, script, argv, done = stage
    tag = f"{position}/{total}"
    if done.exists():
        print(f"[skip {tag}] {label}: {done} exists", flush=True)
        return
    print(f"[run  {tag}] {label} ... (progress: tail -f {log_dir / (label + '.log')})",
          flush=True)
    start = time.perf_counter()
    log = log_dir / f"{label}.log"
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, str(SRC / script), *argv], stdout=f,
                              stderr=subprocess.STDOUT)
    if proc.returncode:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:]
        raise SystemExit(f"error: {label} failed (exit {proc.returncode}); see {log}: "
                         f"{' '.join(tail)}")
    print(f"[done {tag}] {label} in {time.perf_counter() - start:.0f} s", flush=True)


def check_inputs(args):
    """One-line errors for inputs the first stage would otherwise trip over minutes later.
    Returns the pretrained model's depth; sets args.task to the task's canonical name."""
    try:
        task = get_task(args.task)
        depth = load_config(resolve_bert_model(args.bert_model)).num_hidden_layers
    except PeakdError as e:
        raise SystemExit(f"error: {e}") from None
    args.task = task.name
    train = Path(args.data_dir) / task.dir_name / task.processor.splits["train"]
    if not train.is_file():
        raise SystemExit(f"error: --data_dir {args.data_dir}: {train} not found; run "
                         "src/data/data_raw/download_glue_data.py or pass the GLUE folder")
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"error: unknown --variants {sorted(unknown)}; known: {list(VARIANTS)}")
    return depth


def plan_grid(args, work, depth):
    """Every stage of the grid in order, as (label, script, argv, results file): the teacher,
    its outputs, then per seed each variant (a PTP variant after its own PTP run)."""
    base = ["--task", args.task, "--data_dir", args.data_dir, "--max_seq_length",
            str(args.max_seq_length)]
    train = base + ["--bert_model", args.bert_model, "--train_batch_size",
                    str(args.train_batch_size)]
    if args.max_steps:
        train += ["--max_steps", str(args.max_steps)]
    teacher = work / "teacher"
    teacher_file = teacher_outputs.default_path(args.task, depth, folder=work)
    stages = [
        ("teacher", "finetune.py", train + [
            "--train_type", "ft", "--model_type", "Original", "--student_hidden_layers",
            str(depth), "--learning_rate", str(args.teacher_lr), "--num_train_epochs",
            str(args.teacher_epochs), "--train_seed", str(args.teacher_seed), "--output_dir",
            str(teacher)], teacher / "eval_results.json"),
        ("teacher_outputs", "save_teacher_outputs.py", base + [
            "--teacher_dir", str(teacher), "--output_dir", str(work)], teacher_file)]
    student = train + ["--student_hidden_layers", str(args.student_hidden_layers),
                       "--num_train_epochs", str(args.epochs),
                       "--teacher_prediction", str(teacher_file)]
    for seed in args.seeds.split(","):
        for name in args.variants.split(","):
            train_type, model_type, ptp = VARIANTS[name]
            seed_args = student + ["--train_seed", seed]
            start = []
            if ptp:
                ptp_dir = work / f"ptp_{ptp}_seed{seed}"
                ptp_lr = str(args.lr if args.ptp_lr is None else args.ptp_lr)
                stages.append((f"ptp_{ptp}_seed{seed}", "PTP.py", seed_args + [
                    "--learning_rate", ptp_lr, "--model_type", ptp, "--output_dir",
                    str(ptp_dir)],
                    ptp_dir / "PTP.eval_results.json"))
                start = ["--load_model_dir", str(ptp_dir / "PTP.encoder_loss.pkl")]
            out = work / f"{name}_seed{seed}"
            stages.append((f"{name}_seed{seed}", "finetune.py", seed_args + start + [
                "--learning_rate", str(args.lr), "--train_type", train_type, "--model_type",
                model_type, "--output_dir", str(out)], out / "eval_results.json"))
    return teacher, stages


def run_grid(args):
    depth = check_inputs(args)
    work = Path(args.work_dir).resolve()
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    teacher, stages = plan_grid(args, work, depth)
    for position, stage in enumerate(stages, 1):
        run_stage(stage, position, len(stages), logs)
    return work, teacher


def finished_runs(work):
    """(variant, seed, folder) of every finished student run in `work`, whichever command
    ran it: grids split over several processes share one table."""
    runs = []
    for name in VARIANTS:
        for results in sorted(work.glob(f"{name}_seed*/eval_results.json")):
            runs.append((name, results.parent.name[len(name) + len("_seed"):], results.parent))
    return runs


def collect(teacher, runs):
    """One row per run (the teacher first) from each eval_results.json."""
    rows = []
    for name, seed, out in [("teacher", "-", teacher)] + runs:
        res = json.loads((out / "eval_results.json").read_text())
        best = res["best_acc"] or {}
        rows.append({"variant": name, "seed": seed, "metric": res["main_metric"],
                     **{k: v for k, v in best.items() if k not in ("epoch", "step")},
                     "best_epoch": best.get("epoch"), "num_parameters": res["num_parameters"],
                     "effective_layers": res["effective_layers"],
                     "train_seconds": res["train_seconds"],
                     "train_samples_per_second": res["train_samples_per_second"],
                     "inference_samples_per_second": res.get("inference_samples_per_second")})
    return pd.DataFrame(rows)


def summarize(frame):
    """Mean and std per variant of every numeric column, as a Markdown table."""
    order = ["teacher"] + [v for v in VARIANTS if v in set(frame["variant"])]
    numeric = [c for c in frame.columns if c not in ("variant", "seed", "metric", "best_epoch")
               and pd.api.types.is_numeric_dtype(frame[c])]
    grouped = frame.groupby("variant")[numeric]
    mean, std, n = grouped.mean(), grouped.std().fillna(0.0), grouped.size()
    lines = ["| variant | runs | " + " | ".join(numeric) + " |",
             "|---|---|" + "---|" * len(numeric)]
    for v in order:
        cells = []
        for c in numeric:
            if c in ("num_parameters", "effective_layers"):
                cells.append(f"{mean.loc[v, c]:,.0f}")
            elif c.endswith(("seconds", "per_second")):
                cells.append(f"{mean.loc[v, c]:.1f}")
            else:
                cells.append(f"{mean.loc[v, c]:.4f} ± {std.loc[v, c]:.4f}")
        lines.append(f"| {v} | {n[v]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(frame, path, metric):
    """Two panels per variant: the dev metric (mean ± std over seeds) and inference
    samples/s, so SPS's accuracy shows next to its cost."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart (pip install -r requirements-bench.txt)")
        return
    order = ["teacher"] + [v for v in VARIANTS if v in set(frame["variant"])]
    colors = ["#777"] + ["#4a7ab5"] * (len(order) - 1)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, column, label in ((axes[0], metric, f"dev {metric}"),
                              (axes[1], "inference_samples_per_second", "inference samples/s")):
        stats = frame.groupby("variant")[column].agg(["mean", "std"]).reindex(order).fillna(0.0)
        ax.bar(range(len(order)), stats["mean"], yerr=stats["std"], capsize=4, color=colors)
        ax.set_xticks(range(len(order)), order, rotation=30, ha="right")
        ax.set_ylabel(label)
        if column == metric:
            low, high = (stats["mean"] - stats["std"]).min(), (stats["mean"] + stats["std"]).max()
            ax.set_ylim(max(0.0, low - 0.05), min(1.0, high + 0.03))
    task = frame.attrs.get("task", "")
    fig.suptitle(f"{task} PeaKD variants (mean ± std over seeds)".strip())
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    args = build_parser().parse_args(argv)
    work, teacher = run_grid(args)
    frame = collect(teacher, finished_runs(work))
    frame.attrs["task"] = args.task
    frame.to_csv(work / "results.csv", index=False)
    table = summarize(frame)
    (work / "results.md").write_text(table)
    print(table)
    if not args.no_plot:
        plot(frame, work / "results.png", frame["metric"].iloc[0])
    return frame


if __name__ == "__main__":
    main()
