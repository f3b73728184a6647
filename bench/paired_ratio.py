"""Is ours as fast as transformers on this machine? The samples/s ratio ours / transformers of one
training step or one inference batch (eval mode: no dropout), with a 95% paired interval.

    .venv/bin/python bench/paired_ratio.py --mode train --reps 12 --threads 2
    .venv/bin/python bench/paired_ratio.py --mode infer --reps 20 --threads 2
    .venv/bin/python bench/paired_ratio.py --mode train --workload mrpc --reps 12 --threads 2

`make bench` gives medians of a few interleaved repeats. On a shared or virtual machine two runs
of the same code scatter by 15-20% there (bench/README.md), too much to say whether ours is slower
or faster. Here each repeat is a pair, ours and transformers' BertForSequenceClassification with
the same weights on the same batches, run back to back in alternating order, so load that lasts a
pair cancels from its ratio. The batches are those of `make bench` (bench/speed/workloads.py): one
of fixed length 128, or MRPC dev batches each padded to its own longest row for both sides (two
shuffled ones for training, three length-grouped ones for inference). The log ratios' mean and a
Student-t interval give the verdict: faster (the interval lies above 1), slower (below 1) or not
decided.
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed  # noqa: E402,F401  (puts src/ on sys.path)
import BERT.pytorch_pretrained_bert.linear as fast_linear  # noqa: E402
from grid.stats import paired_ratio  # noqa: E402
from speed.machine import Clock  # noqa: E402
from speed.measure import CONFIGS, twin_models  # noqa: E402
from speed.runners import Ours, Theirs, run_one  # noqa: E402
from speed.workloads import (DEFAULT_GLUE, fixed_batch, load_mrpc_dev,  # noqa: E402
                             make_workloads, plan_for)
from utils.checkpoints import write_json  # noqa: E402


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=("train", "infer"), default="train",
                   help="one optimizer step, or one forward pass without gradients")
    p.add_argument("--reps", type=int, default=12, help="timed pairs (at least 3)")
    p.add_argument("--workload", choices=("fixed128", "mrpc"), default="fixed128",
                   help="fixed128: random ids, no padding; mrpc: MRPC dev's length mix")
    p.add_argument("--glue_dir", type=Path, default=DEFAULT_GLUE,
                   help="GLUE folder with MRPC/dev.tsv (for --workload mrpc)")
    p.add_argument("--config", choices=tuple(CONFIGS), default="student3",
                   help="make bench's configs: depth and model type (bench/speed/measure.py)")
    p.add_argument("--quick", action="store_true",
                   help="make bench --quick's tiny width and depth: checks the code path")
    p.add_argument("--batch", type=int, default=32, help="sequences per batch")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="cpu: this process's CPU time (with --threads 1 only)")
    p.add_argument("--linear", default="auto", choices=fast_linear.PATHS,
                   help="ours' CPU Linear path (as PEAKD_LINEAR; auto: measured, linear.py)")
    p.add_argument("--amp", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: both sides under torch.amp autocast, as the scripts' --bf16 "
                        "(fp32 CPU Linears then take F.linear)")
    p.add_argument("--out", type=Path, help="also write the result as JSON here")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.reps < 3:
        raise SystemExit(f"error: --reps {args.reps}: need at least 3 pairs for an interval")
    for flag in ("batch", "threads"):
        if getattr(args, flag) < 1:
            raise SystemExit(f"error: --{flag} {getattr(args, flag)}: use 1 or more")
    if args.clock == "cpu" and args.threads != 1:
        raise SystemExit("error: --clock cpu adds up every thread's time: use it with --threads 1")
    torch.set_num_threads(args.threads)
    fast_linear.LINEAR_PATH = args.linear
    cpu = torch.device("cpu")
    config, _, ours_model, theirs_model = twin_models(args.config, args.quick, cpu)
    # as make bench (speed/measure.py): inference runs in eval mode, without dropout
    training = args.mode == "train"
    ours = Ours(ours_model.train(training), cpu, args.amp)
    theirs = Theirs(theirs_model.train(training), cpu, args.amp)
    if args.workload == "mrpc":
        plan = plan_for(args.config, args, cpu)  # --batch sets both sizes, as in make bench
        batches = make_workloads(load_mrpc_dev(args.glue_dir), config, plan, cpu)[
            (args.mode, "mrpc")]["dynamic"]
    else:
        batches = [fixed_batch(args.batch, config.vocab_size, seed=0)]
    clock = Clock(args.clock, cpu)
    for impl in (ours, theirs, ours, theirs):  # warm-up: allocator, the Linear path's probe
        run_one(impl, args.mode, batches, clock)
    ours_s, theirs_s = [], []
    for i in range(args.reps):
        order = (ours, theirs) if i % 2 == 0 else (theirs, ours)
        seconds = {id(impl): run_one(impl, args.mode, batches, clock) for impl in order}
        ours_s.append(seconds[id(ours)])
        theirs_s.append(seconds[id(theirs)])
    result = paired_ratio(ours_s, theirs_s)
    result.update(mode=args.mode, dropout=training, workload=args.workload, amp=args.amp,
                  threads=args.threads, clock=args.clock, batch=args.batch, config=args.config,
                  quick=args.quick, layers=config.num_hidden_layers, hidden=config.hidden_size,
                  linear=fast_linear.used_paths(), torch=torch.__version__,
                  ours_seconds=ours_s, theirs_seconds=theirs_s)
    paths = result["linear"]
    print(f"{args.mode} {args.workload} {args.amp}, {args.config} "
          f"({config.num_hidden_layers} layers x {config.hidden_size}), batch {args.batch}, "
          f"{args.threads} thread(s), {args.clock} clock, our Linear {paths['train']} (train) / "
          f"{paths['infer']} (infer), {paths['requested']}: "
          f"ours/transformers samples/s {result['ratio']:.3f} "
          f"[{result['low']:.3f}, {result['high']:.3f}] over {args.reps} pairs "
          f"(single pairs {result['min']:.2f}-{result['max']:.2f}): {result['verdict']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
