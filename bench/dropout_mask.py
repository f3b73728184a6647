"""What a dropout mask costs on this CPU: torch's own dropout against cheaper ways to draw the
same Bernoulli(1 - p) mask, for one activation of the benchmark's step (32 x 128 x 768).

    .venv/bin/python bench/dropout_mask.py --threads 2

Prints milliseconds per call (median of --reps, wall clock) for fp32 and bf16 activations. The
alternatives draw other random numbers than `bernoulli_`, so adopting one changes every dropout
mask and every result (bench/README.md, "Where a training step's time goes").
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--shape", type=int, nargs="+", default=[32, 128, 768])
    p.add_argument("--p", type=float, default=0.1, help="dropout probability")
    p.add_argument("--reps", type=int, default=10)
    return p


def median_ms(fn, reps):
    fn()  # the first call allocates
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main(argv=None):
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    threshold = round(256 * args.p)  # uint8 draws below this are dropped: p to 1/256
    print(f"{args.threads} thread(s), shape {args.shape}, p {args.p}: ms per call")
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        x = torch.randn(args.shape).to(dtype)
        mask = torch.empty_like(x)
        ways = {
            "F.dropout (mask, multiply, scale)": lambda: F.dropout(x, args.p, True),
            "bernoulli_ (dropout's mask)": lambda: mask.bernoulli_(1 - args.p),
            "rand_like(x) < p": lambda: torch.rand_like(x) < args.p,
            "fp32 rand < p": lambda: torch.rand(args.shape) < args.p,
            "uint8 randint < 256 p": lambda: torch.randint(0, 256, args.shape,
                                                           dtype=torch.uint8) < threshold,
        }
        for way, fn in ways.items():
            print(f"{name}  {way:<36} {median_ms(fn, args.reps):7.1f}")


if __name__ == "__main__":
    main()
