"""What a grid stage spends outside training and evaluation, forked from the grid's stage server
(the default) or started in a new interpreter (`reproduce.py --no_forkserver`), with a 95%
paired interval of the wall-clock difference.

    .venv/bin/python bench/stage_start.py --bert_model DIR --glue_dir ../shared/glue_data \
        --pairs 3 --out bench/results/stage_start.json

Each pair runs the same short finetune.py stage (MRPC, `--max_steps`, a fresh output folder, the
grid's features cache) both ways, back to back in alternating order, through the grid's own
`launch` (utils/launch.py). Per launcher it gives the medians of wall, train and eval seconds
and of start-up (wall - train - eval: interpreter and imports, data, model, results); then new
interpreter - forked over the pairs. The stage server starts once, before the first pair, as in
a grid. Any further arguments after `--` go to finetune.py (e.g. `-- --no_cuda`).
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent / "src"), str(BENCH)]

from grid.plan import SRC  # noqa: E402
from utils.launch import launch  # noqa: E402
from grid.stats import paired  # noqa: E402
from utils.checkpoints import write_json  # noqa: E402
from utils.features import FEATURE_CACHE_ENV  # noqa: E402

LAUNCHERS = {"forked": True, "new interpreter": False}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bert_model", required=True, help="pretrained BERT directory")
    p.add_argument("--glue_dir", required=True, help="folder holding MRPC/train.tsv")
    p.add_argument("--student_hidden_layers", type=int, default=3)
    p.add_argument("--max_steps", type=int, default=20)
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--out", default=None, help="json file for the per-run figures and summary")
    p.add_argument("finetune_args", nargs="*", help="after --: more finetune.py flags")
    return p


def run_stage(work, name, forkserver, args):
    """One finetune.py stage; its eval_results.json timings and the wall seconds of it."""
    out = work / name
    argv = ["--task", "MRPC", "--data_dir", args.glue_dir, "--bert_model", args.bert_model,
            "--student_hidden_layers", str(args.student_hidden_layers), "--output_dir",
            str(out), "--max_steps", str(args.max_steps), *args.finetune_args]
    env = {**os.environ, FEATURE_CACHE_ENV: str(work / "cache")}
    log = work / f"{name}.log"
    began = time.perf_counter()
    code = launch(SRC / "finetune.py", argv, env, log, forkserver).wait()
    wall = time.perf_counter() - began
    if code:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:]
        raise SystemExit(f"error: finetune.py exited {code}; see {log}: {' '.join(tail)}")
    results = json.loads((out / "eval_results.json").read_text())
    shutil.rmtree(out)  # keep only the figures: the checkpoints are not needed
    train, evaluation = results["train_seconds"], results["eval_seconds"]
    return {"wall": wall, "train": train, "eval": evaluation,
            "start_up": wall - train - evaluation}


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.pairs < 2:
        raise SystemExit(f"error: --pairs {args.pairs}: at least 2 give an interval")
    runs = {name: [] for name in LAUNCHERS}
    with tempfile.TemporaryDirectory(prefix="stage_start_") as tmp:
        work = Path(tmp)
        # a warm-up stage of each kind: the features cache, the stage server, the page cache
        for name, fork in LAUNCHERS.items():
            run_stage(work, f"warmup-{name[:3]}", fork, args)
        for i in range(args.pairs):
            order = list(LAUNCHERS.items())
            for name, fork in order if i % 2 == 0 else order[::-1]:
                runs[name].append(run_stage(work, f"{name[:3]}-{i}", fork, args))
                print(f"pair {i + 1} {name}: " + ", ".join(f"{k} {v:.2f} s" for k, v in
                                                          runs[name][-1].items()), flush=True)
    summary = {name: {k: statistics.median(r[k] for r in rows) for k in rows[0]}
               for name, rows in runs.items()}
    for name, medians in summary.items():
        print(f"{name}: median " + ", ".join(f"{k} {v:.2f} s" for k, v in medians.items()))
    # wall: what forking saves; train: that a forked stage trains as fast (an interval holding 0)
    diffs = {}
    for key in ("wall", "train", "start_up"):
        d = diffs[key] = paired({i: r[key] for i, r in enumerate(runs["new interpreter"])},
                                {i: r[key] for i, r in enumerate(runs["forked"])})
        print(f"{key}, new interpreter - forked: {d.mean:+.2f} s [{d.low:+.2f}, {d.high:+.2f}] "
              f"over {d.n} pairs ({d.verdict})")
    if args.out:
        write_json(args.out, {"runs": runs, "median": summary, "args": vars(args),
                              "new_minus_forked": {k: {"mean": d.mean, "low": d.low,
                                                       "high": d.high, "pairs": d.n}
                                                   for k, d in diffs.items()}})
    return summary, diffs


if __name__ == "__main__":
    main()
