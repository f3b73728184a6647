"""Where and how a run computes: the device, mixed precision, batch padding multiples and
compiled forwards, shared by the training loop, evaluation and the scripts.

On the CPU, --bf16 is checked once per process against this CPU's measured bf16 matmul speed
(warn_slow_bf16); on CUDA, batch lengths are rounded up so that few shapes occur (PAD_MULTIPLE).
"""
import contextlib
import functools
import os
from pathlib import Path

import torch

from BERT.pytorch_pretrained_bert.linear import (bf16_slowdown,
                                                 requested_path as requested_linear_path)

from . import parallel
from .allocator import keep_freed_memory
from .args import CUDA_GRAPH_MODES
from .errors import PeakdError, warn


def set_seed(seed):
    """Seeds torch's global generator (weight init of new heads, dropout)."""
    torch.manual_seed(seed)


def pick_device(args):
    """This process's GPU (under torchrun the one of its LOCAL_RANK), or the CPU.

    Also checks $PEAKD_LINEAR (the CPU Linear path) here, before any work, so that a bad value
    is a one-line error rather than a traceback from the first forward; on the CPU, makes malloc
    reuse the steps' large blocks (utils/allocator.py).
    """
    try:
        requested_linear_path()
    except ValueError as e:
        raise PeakdError(str(e)) from None
    if torch.cuda.is_available() and not args.no_cuda:
        return torch.device("cuda", parallel.local_rank())
    keep_freed_memory()
    return torch.device("cpu")


def amp_dtype(args):
    """The low precision of --fp16 / --bf16, or None in fp32."""
    if getattr(args, "fp16", False):
        return torch.float16
    return torch.bfloat16 if getattr(args, "bf16", False) else None


def autocast(args, device):
    """torch.amp autocast for --fp16 (CUDA) / --bf16; a no-op context in fp32."""
    if args.fp16:
        if device.type != "cuda":
            raise PeakdError("--fp16 needs a CUDA GPU; drop it (or use --bf16) on the CPU")
        return torch.autocast("cuda", dtype=amp_dtype(args))
    if args.bf16:
        if device.type == "cpu":
            warn_slow_bf16()
        return torch.autocast(device.type, dtype=amp_dtype(args))
    return contextlib.nullcontext()


# --bf16 on a CPU warns where bf16 Linears take at least this multiple of fp32's time: there the
# run is slower, not faster (figures at linear.BF16_PROBE_SHAPE and in bench/README.md).
BF16_WARN_SLOWDOWN = 2.0


@functools.cache
def warn_slow_bf16():
    """Once per process: one warning line where this CPU's bf16 matmuls are slow (bf16_slowdown);
    returns the measured slowdown. --bf16 stays on: the flag is the user's choice."""
    slowdown = bf16_slowdown()
    if slowdown >= BF16_WARN_SLOWDOWN:
        warn(f"--bf16: bf16 matrix multiplies take {slowdown:.0f}x fp32's time on this CPU "
             f"(torch CPU capability {torch.backends.cpu.get_cpu_capability()}, no fast bf16 "
             f"kernels), so this run will be slower than in fp32, not faster; drop --bf16 to "
             f"run in fp32")
    return slowdown


# Each batch's length is rounded up to a multiple of this (--pad_to_multiple_of overrides it).
# On CUDA every new shape costs once: kernel selection and, for fp16/bf16 attention, a new
# cuDNN graph per sequence length (issue 11: 54 MRPC batches of new lengths took 6.2 s in fp16
# the first time and 0.25 s the second on one H100; modeling.CUDA_SDPA_BACKENDS leaves cuDNN
# out). Multiples of 8 leave at most 16 lengths up to 128 at +3.5 padded tokens per row on
# average. On the CPU each padded token costs its share of the step and shapes cost nothing,
# so batches stay at their own length (and fp32 CPU results exactly as before).
PAD_MULTIPLE = {"cuda": 8, "cpu": 1}


def pad_multiple(requested, device):
    """--pad_to_multiple_of, or PAD_MULTIPLE's default for the device."""
    if requested is None:
        return PAD_MULTIPLE.get(device.type, 1)
    if requested < 1:
        raise PeakdError(f"--pad_to_multiple_of {requested} must be >= 1")
    return requested


# With --compile a training batch's length is rounded up to the next of these (never past
# --max_seq_length), so few shapes occur and each compiles once: at most 6 lengths up to 128,
# each also with the epoch's short last batch. A batch of 33 tokens pads to 48 (+45%); the
# average MRPC batch (longest row about 80 of 128) pads by about 10%. Without --compile a shape
# costs nothing to introduce, so batches keep their own length (PAD_MULTIPLE).
COMPILE_BUCKETS = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512)
# where compiled kernels and graphs are kept between processes (inductor's FX-graph and
# AOTAutograd caches): $PEAKD_COMPILE_CACHE, else this folder; the grid gives all its stages one
COMPILE_CACHE_ENV = "PEAKD_COMPILE_CACHE"
DEFAULT_COMPILE_CACHE = Path.home() / ".cache" / "peakd" / "inductor"


def use_compile_cache():
    """Points inductor's on-disk caches at $PEAKD_COMPILE_CACHE (or DEFAULT_COMPILE_CACHE)
    and turns them on, so a shape compiled by one run (or grid stage) is read back by the next;
    returns the folder."""
    folder = Path(os.environ.get(COMPILE_CACHE_ENV, "").strip() or DEFAULT_COMPILE_CACHE)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(folder))
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")
    return folder


def compile_forward(module, mode, device):
    """(forward, graphs): torch.compile(module, mode) or module itself for mode None; graphs
    says CUDA graphs replay it, so each step must be marked as a new one
    (torch.compiler.cudagraph_mark_step_begin): the last step's outputs are no longer read.

    Compiling also turns on the on-disk compile cache and lets dynamo keep a graph for every
    bucketed shape (2 per bucket: full and short batches) instead of falling back to eager."""
    if not mode:
        return module, False
    use_compile_cache()
    limit = 2 * len(COMPILE_BUCKETS) + 2
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), limit))
    # static shapes: each bucket gets its own graph (and CUDA graph), none a dynamic one
    return (torch.compile(module, mode=mode, dynamic=False),
            mode in CUDA_GRAPH_MODES and device.type == "cuda")


def to_device(batch, device):
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
