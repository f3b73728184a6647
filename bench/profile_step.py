"""Where a training step's time goes: a CPU training step of our BERT classifier (fp32, or bf16
under autocast) under torch.profiler, next to the matrix-multiply rate the same thread count
reaches in isolation.

    .venv/bin/python bench/profile_step.py --layers 3 --batch 32 --threads 1 [--amp bf16]

Prints the Linear path (`--linear`, default auto as PEAKD_LINEAR), the operators by self time
(the profiled steps with the fewest page faults: profile_steps), then: the step's model FLOP/s
(matmul FLOPs as bench/speed/peak.py counts them; the median unprofiled step) as a share of the
measured peak of that precision (fp32: the better of torch.mm and oneDNN): the MFU; the Linear
layers' own rate inside the step, and the rate of the same Linear GEMM shapes run alone on that
path. The gap between the last two and the MFU is what the non-matmul work (dropout, GELU,
LayerNorm, softmax, copies) costs. Run it on a quiet machine: other processes inflate every
figure.
"""
import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed  # noqa: E402,F401  (puts src/ on sys.path)
import BERT.pytorch_pretrained_bert.linear as fast_linear  # noqa: E402
from BERT.pytorch_pretrained_bert import BertConfig  # noqa: E402
from BERT.pytorch_pretrained_bert.modeling import BertForSequenceClassification  # noqa: E402
# the benchmark's model step, batch, FLOP count and peak
from speed.machine import Clock  # noqa: E402
from speed.peak import (PEAK_REPS, PEAK_SIZE, cpu_fp32_peaks, forward_flops,  # noqa: E402
                        matmul_peak)
from speed.runners import AMP_DTYPES, Ours  # noqa: E402
from speed.workloads import FIXED_LEN, fixed_batch  # noqa: E402
from utils.args import add_compile_arg  # noqa: E402

# the profiler's names of a Linear layer's GEMMs on each path (attention runs aten::bmm);
# under autocast the Linear layers take F.linear (linear.py), so bf16 runs the mkl names
LINEAR_OPS = {"onednn": ("mkldnn::_linear_pointwise",), "mkl": ("aten::addmm", "aten::mm")}
PLAIN_STEPS = 3  # unprofiled steps: the step time (their median) and their page faults
NAME_WIDTH = 40  # operator names are cut to this in the table


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--batch", type=int, default=32, help="sequences of length 128")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=2, help="profiled steps kept")
    p.add_argument("--tries", type=int, default=3,
                   help="profiled steps run per step kept: those with the fewest page faults "
                        "are kept (profile_steps)")
    p.add_argument("--warmup", type=int, default=3,
                   help="steps run before profiling (the first fault in memory and, compiling, "
                        "recompile)")
    p.add_argument("--amp", default="fp32", choices=("fp32", "bf16"),
                   help="bf16: the step under torch.autocast, as the scripts' --bf16")
    p.add_argument("--rows", type=int, default=15, help="operators shown")
    add_compile_arg(p)
    p.add_argument("--linear", default="auto", choices=fast_linear.PATHS,
                   help="the CPU Linear path (as PEAKD_LINEAR; auto: measured, linear.py)")
    p.add_argument("--peak_size", type=int, default=PEAK_SIZE["cpu"],
                   help="square matmul size timed for the peak (default make bench's)")
    return p


def gemm_rate(m, k, n, path, dtype=torch.float32, reps=5):
    """Best FLOP/s of the Linear kernel of `path` on (m, k) x (n, k)^T (bench/speed/peak.py's
    matmul_peak times square shapes only)."""
    a, w = torch.randn(m, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
    best = 0.0
    for _ in range(reps + 1):
        start = time.perf_counter()
        if path == "onednn":
            torch.ops.mkldnn._linear_pointwise(a, w, None, "none", [], "")
        else:
            F.linear(a, w)
        best = max(best, 2 * m * k * n / (time.perf_counter() - start))
    return best


def linear_shapes_rate(tokens, h, i, path, dtype):
    """FLOP-weighted rate of one layer's Linear GEMMs (forward, input and weight gradients)."""
    shapes = [(tokens, h, h, 4), (tokens, h, i, 1), (tokens, i, h, 1),  # forward
              (tokens, h, h, 4), (tokens, i, h, 1), (tokens, h, i, 1),  # input gradients
              (h, tokens, h, 4), (i, tokens, h, 1), (h, tokens, i, 1)]  # weight gradients
    flops = seconds = 0.0
    for m, k, n, count in shapes:
        f = 2 * m * k * n * count
        flops += f
        seconds += f / gemm_rate(m, k, n, path, dtype)
    return flops / seconds


def page_faults():
    """Minor page faults of this process so far (pages the kernel mapped and zeroed)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def timed_step(ours, batch):
    """(seconds, page faults) of one training step."""
    faults, start = page_faults(), time.perf_counter()
    ours.train_step(batch)
    return time.perf_counter() - start, page_faults() - faults


def profile_steps(ours, batch, steps, tries):
    """{operator: [self CPU microseconds, calls]} summed over the `steps` of `tries` profiled
    steps (each in its own profiler session) that took the fewest page faults, and each try's
    faults. A step the profiler disturbs maps fresh pages for blocks that plain steps reuse (the
    profiler's own records take the freed space), which inflates fill_ and copy_: measured on the
    Intel Xeon, plain steady steps took 0 faults, profiled ones 0 or 40-70k at random."""
    runs = []
    for _ in range(tries):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            _, faults = timed_step(ours, batch)
        runs.append((faults, prof.key_averages()))
    totals = {}
    for _, events in sorted(runs, key=lambda run: run[0])[:steps]:
        for e in events:
            total = totals.setdefault(e.key, [0.0, 0])
            total[0] += e.self_cpu_time_total
            total[1] += e.count
    return totals, [faults for faults, _ in runs]


def print_table(totals, steps, rows):
    width = min(NAME_WIDTH, max(len(name) for name in totals))
    whole = sum(us for us, _ in totals.values())
    print(f"{'operator':<{width}}  self ms/step  share  calls/step")
    for name, (us, calls) in sorted(totals.items(), key=lambda kv: -kv[1][0])[:rows]:
        print(f"{name[:width]:<{width}}  {us / 1e3 / steps:12.1f}  {us / whole:5.1%}  "
              f"{calls / steps:10.0f}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    fast_linear.LINEAR_PATH = args.linear
    path = fast_linear.chosen_paths()["train"] if args.amp == "fp32" else "mkl"
    print(f"{args.amp} step; Linear path: {path} (--linear {args.linear}; layers under "
          f"{fast_linear.SMALL_WEIGHT} weights and autocast take mkl)")
    config = BertConfig(30522, hidden_size=args.hidden, num_hidden_layers=args.layers,
                        num_attention_heads=args.hidden // 64, intermediate_size=4 * args.hidden)
    torch.manual_seed(0)
    ours = Ours(BertForSequenceClassification(config, num_labels=2).train(),
                  torch.device("cpu"), args.amp, args.compile)
    batch = fixed_batch(args.batch, config.vocab_size, seed=0)
    for _ in range(args.warmup):
        ours.train_step(batch)
    plain = [timed_step(ours, batch) for _ in range(PLAIN_STEPS)]
    totals, tried = profile_steps(ours, batch, args.steps, args.tries * args.steps)
    print_table(totals, args.steps, args.rows)
    print(f"page faults per step: plain {[f for _, f in plain]}; profiled {tried} (the "
          f"{args.steps} fewest kept)")
    step = statistics.median(t for t, _ in plain)
    model_flops = 3 * forward_flops(config, args.layers, FIXED_LEN) * args.batch
    h, i, tokens = config.hidden_size, config.intermediate_size, args.batch * FIXED_LEN
    linear_flops = 3 * args.layers * tokens * 2 * (4 * h * h + 2 * h * i)
    if args.amp == "fp32" and args.linear == "auto" and args.hidden ** 2 < fast_linear.SMALL_WEIGHT:
        path = "mkl"
    linear_s = sum(totals[k][0] for k in LINEAR_OPS[path] if k in totals) / 1e6 / args.steps
    total_s = sum(us for us, _ in totals.values()) / 1e6 / args.steps
    # the peak as make bench measures it (speed/peak.py): fp32 the better of torch.mm and oneDNN,
    # bf16 torch.mm
    cpu, dtype = torch.device("cpu"), AMP_DTYPES[args.amp]
    clock = Clock("wall", cpu)
    if args.amp == "fp32":
        peak = cpu_fp32_peaks(cpu, args.peak_size, PEAK_REPS, clock)["fp32_best"]["flops_best"]
    else:
        peak = matmul_peak(cpu, dtype, args.peak_size, PEAK_REPS, clock)["flops_best"]
    alone = linear_shapes_rate(tokens, h, i, path, dtype)
    print(f"{args.amp} peak ({'best of torch.mm and oneDNN' if args.amp == 'fp32' else 'torch.mm'}"
          f", {args.peak_size} square, {args.threads} thread(s)): {peak / 1e9:.1f} GFLOP/s")
    rate = model_flops / step
    print(f"step (median of {PLAIN_STEPS} unprofiled): {step:.2f} s, {rate / 1e9:.1f} GFLOP/s = "
          f"MFU {rate / peak:.2f}")
    if linear_s:
        inside = linear_flops / linear_s
        print(f"Linear layers inside the step: {linear_s / total_s:.0%} of profiled time, "
              f"{inside / 1e9:.1f} GFLOP/s = {inside / peak:.2f} of peak")
    print(f"the same Linear GEMM shapes alone: {alone / 1e9:.1f} GFLOP/s = "
          f"{alone / peak:.2f} of peak")


if __name__ == "__main__":
    main()
