"""Where a training step's time goes: one fp32 CPU training step of our BERT classifier under
torch.profiler, next to the matrix-multiply rate the same thread count reaches in isolation.

    .venv/bin/python bench/profile_step.py --layers 3 --batch 32 --threads 1

Prints the Linear path (`--linear`, default auto as PEAKD_LINEAR), the operators by self time,
then: the step's model FLOP/s (matmul FLOPs as bench/speed/peak.py counts them) as a share of
the measured fp32 peak (the better of torch.mm and oneDNN: the MFU), the Linear layers' own rate
inside the step, and the rate of the same Linear GEMM shapes run alone on that path. The gap
between the last two and the MFU is what the non-matmul work (dropout, GELU, LayerNorm, softmax,
copies) costs. Run it on a quiet machine: other processes inflate every figure.
"""
import argparse
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
from speed.peak import forward_flops, matmul_peak  # noqa: E402
from speed.runners import Ours  # noqa: E402
from speed.workloads import FIXED_LEN, fixed_batch  # noqa: E402
from utils.args import add_compile_arg  # noqa: E402

# the profiler's names of a Linear layer's GEMMs on each path (attention runs aten::bmm)
LINEAR_OPS = {"onednn": ("mkldnn::_linear_pointwise",), "mkl": ("aten::addmm", "aten::mm")}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--batch", type=int, default=32, help="sequences of length 128")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=2, help="profiled steps")
    p.add_argument("--rows", type=int, default=15, help="operators shown")
    add_compile_arg(p)
    p.add_argument("--linear", default="auto", choices=fast_linear.PATHS,
                   help="the CPU Linear path (as PEAKD_LINEAR; auto: measured, linear.py)")
    p.add_argument("--peak_size", type=int, default=4096,
                   help="largest square matmul timed for the peak (and half of it)")
    return p


def gemm_rate(m, k, n, path, reps=5):
    """Best FLOP/s of the Linear kernel of `path` on (m, k) x (n, k)^T (bench/speed/peak.py's
    matmul_peak times square shapes only)."""
    a, w = torch.randn(m, k), torch.randn(n, k)
    best = 0.0
    for _ in range(reps + 1):
        start = time.perf_counter()
        if path == "onednn":
            torch.ops.mkldnn._linear_pointwise(a, w, None, "none", [], "")
        else:
            F.linear(a, w)
        best = max(best, 2 * m * k * n / (time.perf_counter() - start))
    return best


def linear_shapes_rate(tokens, h, i, path):
    """FLOP-weighted rate of one layer's Linear GEMMs (forward, input and weight gradients)."""
    shapes = [(tokens, h, h, 4), (tokens, h, i, 1), (tokens, i, h, 1),  # forward
              (tokens, h, h, 4), (tokens, i, h, 1), (tokens, h, i, 1),  # input gradients
              (h, tokens, h, 4), (i, tokens, h, 1), (h, tokens, i, 1)]  # weight gradients
    flops = seconds = 0.0
    for m, k, n, count in shapes:
        f = 2 * m * k * n * count
        flops += f
        seconds += f / gemm_rate(m, k, n, path)
    return flops / seconds


def main(argv=None):
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    fast_linear.LINEAR_PATH = args.linear
    path = fast_linear.chosen_paths()["train"]
    print(f"Linear path: {path} (--linear {args.linear}; layers under "
          f"{fast_linear.SMALL_WEIGHT} weights take mkl in auto)")
    config = BertConfig(30522, hidden_size=args.hidden, num_hidden_layers=args.layers,
                        num_attention_heads=args.hidden // 64, intermediate_size=4 * args.hidden)
    torch.manual_seed(0)
    ours = Ours(BertForSequenceClassification(config, num_labels=2).train(),
                  torch.device("cpu"), "fp32", args.compile)
    batch = fixed_batch(args.batch, config.vocab_size, seed=0)
    for _ in range(2 if args.compile else 1):  # compiling: the second step settles recompiles
        ours.train_step(batch)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            ours.train_step(batch)
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    start = time.perf_counter()
    ours.train_step(batch)
    step = time.perf_counter() - start
    model_flops = 3 * forward_flops(config, args.layers, FIXED_LEN) * args.batch
    h, i, tokens = config.hidden_size, config.intermediate_size, args.batch * FIXED_LEN
    linear_flops = 3 * args.layers * tokens * 2 * (4 * h * h + 2 * h * i)
    if args.linear == "auto" and args.hidden ** 2 < fast_linear.SMALL_WEIGHT:
        path = "mkl"
    linear_s = sum(e.self_cpu_time_total for e in events
                   if e.key in LINEAR_OPS[path]) / 1e6 / args.steps
    total_s = sum(e.self_cpu_time_total for e in events) / 1e6 / args.steps
    # the peak as make bench measures it (the better of torch.mm and oneDNN, square), at two
    # sizes
    cpu = torch.device("cpu")
    peak = max(matmul_peak(cpu, torch.float32, n, reps, Clock("wall", cpu),
                             onednn=onednn)["flops_best"]
               for n, reps in ((args.peak_size // 2, 5), (args.peak_size, 2))
               for onednn in (False, True))
    alone = linear_shapes_rate(tokens, h, i, path)
    print(f"peak (best of torch.mm and oneDNN, square, {args.threads} thread(s)): "
          f"{peak / 1e9:.1f} GFLOP/s")
    rate = model_flops / step
    print(f"step: {step:.2f} s, {rate / 1e9:.1f} GFLOP/s = MFU {rate / peak:.2f}")
    if linear_s:
        inside = linear_flops / linear_s
        print(f"Linear layers inside the step: {linear_s / total_s:.0%} of profiled time, "
              f"{inside / 1e9:.1f} GFLOP/s = {inside / peak:.2f} of peak")
    print(f"the same Linear GEMM shapes alone: {alone / 1e9:.1f} GFLOP/s = "
          f"{alone / peak:.2f} of peak")


if __name__ == "__main__":
    main()
