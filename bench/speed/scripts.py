"""The scripts' own path: finetune.py on GLUE MRPC in a fresh process, first epoch included.

The other workloads time a few fixed batches in a warm process, which hides any cost paid once
per new shape: on one H100 (issue 11) cuDNN attention's graph per sequence length made
`finetune.py --fp16` train 3.3x slower than fp32 and evaluate up to 38x slower, while the
in-process benchmark looked fine. This workload runs what a user runs,

    python src/finetune.py --task MRPC --bert_model <MiniLM> --train_type ft --model_type Original
        --student_hidden_layers <its depth> --num_train_epochs 1 [--fp16 | --bf16]

in a new process on the real train split (every batch a new length mix, dev evaluated after the
epoch), and reads the run's eval_results.json: train and dev-inference samples/s, dev accuracy,
and the seconds that were neither training nor evaluation (process start, tokenisation,
loading). On CUDA it runs fp32, bf16 and fp16, and mixed precision must reach MIN_SPEEDUP x
fp32's samples/s in training and in inference (issue 11's target). On a CPU it runs fp32 for a
few steps (`--script_max_steps`): a check that the path runs, with no target.
"""
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from BERT.pytorch_pretrained_bert import load_config

from . import ROOT
from .report import fmt, print_targets, ratio, target

MIN_SPEEDUP = 1.5  # mixed precision over fp32, training and inference samples/s (CUDA)
FLAGS = {"fp32": [], "bf16": ["--bf16"], "fp16": ["--fp16"]}
CPU_MAX_STEPS = {True: 2, False: 10}  # --quick, full: steps of the CPU check


def script_command(args, amp, out_dir, cuda):
    """The finetune.py command line of one precision."""
    layers = load_config(Path(args.bert_model)).num_hidden_layers
    max_steps = args.script_max_steps
    if max_steps is None and not cuda:
        max_steps = CPU_MAX_STEPS[args.quick]
    cmd = [sys.executable, str(ROOT / "src" / "finetune.py"), "--task", "MRPC",
           "--data_dir", str(args.glue_dir), "--bert_model", str(args.bert_model),
           "--train_type", "ft", "--model_type", "Original",
           "--student_hidden_layers", str(layers), "--num_train_epochs", str(args.script_epochs),
           "--output_dir", str(out_dir), *FLAGS[amp]]
    if max_steps is not None:
        cmd += ["--max_steps", str(max_steps)]
    if not cuda:
        cmd.append("--no_cuda")
    return cmd


def run_script(cmd, timeout_s, env=None):
    """Runs one command in a fresh process; its wall seconds, exit code and output's tail."""
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env,
                              cwd=ROOT)
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as e:
        code = "timeout"
        output = "".join(x.decode() if isinstance(x, bytes) else (x or "")
                         for x in (e.stdout, e.stderr))
    return {"wall_seconds": time.perf_counter() - start, "returncode": code,
            "output_tail": output[-2000:]}


def summarize(run, results):
    """The figures of one finished run (its eval_results.json) next to its wall time."""
    best = results.get("best_acc") or results.get("final") or {}
    busy = results["train_seconds"] + results["eval_seconds"]
    return {**run, "train_samples_per_s": results["train_samples_per_second"],
            "infer_samples_per_s": results["inference_samples_per_second"],
            "dev_acc": best.get("acc"), "optimizer_steps": results["optimizer_steps"],
            "train_seconds": results["train_seconds"], "eval_seconds": results["eval_seconds"],
            "other_seconds": run["wall_seconds"] - busy,
            "other_share": 1 - busy / run["wall_seconds"]}


def bench_scripts(args, cuda, amps, log, env=None):
    """{"runs": {amp: figures}, "targets": [...]}: finetune.py once per precision."""
    runs = {}
    for amp in amps:
        with tempfile.TemporaryDirectory(prefix="peakd-bench-") as tmp:
            cmd = script_command(args, amp, Path(tmp) / "run", cuda)
            log(f"scripts: finetune.py {amp} ({' '.join(cmd[2:])})")
            run = run_script(cmd, args.script_timeout, env)
            results_file = Path(tmp) / "run" / "eval_results.json"
            if run["returncode"] == 0 and results_file.is_file():
                run = summarize(run, json.loads(results_file.read_text()))
                log(f"  train {run['train_samples_per_s']:.1f} samples/s, dev inference "
                    f"{run['infer_samples_per_s']:.1f} samples/s, dev acc {run['dev_acc']:.3f}, "
                    f"{run['wall_seconds']:.1f} s in all ({run['other_share']:.0%} neither "
                    "training nor evaluating)")
            else:
                log(f"  ! finetune.py {amp} failed ({run['returncode']}):\n{run['output_tail']}")
        runs[amp] = {"command": cmd[1:], **run}
    targets = []
    if cuda and "fp32" in runs:
        for amp in (a for a in amps if a != "fp32"):
            for mode in ("train", "infer"):
                key = f"{mode}_samples_per_s"
                targets.append(target(
                    f"finetune.py MRPC {amp} / fp32 {mode} samples/s (fresh process)",
                    ratio(runs[amp].get(key), runs["fp32"].get(key)), MIN_SPEEDUP))
    return {"runs": runs, "targets": targets}


def print_scripts(scripts):
    print("\nthe scripts' own path: finetune.py on MRPC in a fresh process (first epoch "
          "included)")
    print(f"  {'amp':5s} {'train/s':>8s} {'infer/s':>8s} {'dev acc':>7s} {'wall s':>7s} "
          f"{'not train/eval':>14s}")
    for amp, r in scripts["runs"].items():
        print(f"  {amp:5s} {fmt(r.get('train_samples_per_s'))} "
              f"{fmt(r.get('infer_samples_per_s'))} {fmt(r.get('dev_acc'), '7.3f')} "
              f"{fmt(r.get('wall_seconds'), '7.1f')} {fmt(r.get('other_share'), '14.0%')}")
    if scripts["targets"]:
        print_targets(scripts["targets"])
