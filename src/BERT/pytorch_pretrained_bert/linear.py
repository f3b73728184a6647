"""`Linear`: nn.Linear whose fp32 CPU matrix multiplies take the faster of two GEMM libraries.

Which library is faster depends on the CPU, so the choice is made where the program runs:

* on a CPU with AVX-512 (where this was first measured) oneDNN's fp32 GEMM is about twice as
  fast as the MKL path F.linear takes, for the forward and both gradients;
* on an AVX2-only AMD EPYC (family 25, model 1) it is the other way round: single-thread CPU
  time of BERT-wide Linear GEMMs (M = 256..4096 tokens, 768 <-> 3072) gave MKL 60-82 GFLOP/s
  forward and 52-82 for the gradients, oneDNN 55-69 forward, 31-57 input and 28-56 weight
  gradient (bench/README.md);
* on an Intel Xeon with AVX-512 and AMX (family 6, model 167) the two are close for 768 x 768
  layers and MKL leads on the feed-forward gradients (1.1-1.4x per op), so MKL is kept there too.

`PEAKD_LINEAR` (environment) or `LINEAR_PATH` (this module, for benchmarks and tests) picks:

* `auto` (default): the first fp32 CPU Linear of a process takes the choice kept for this machine
  (CPU model, torch version and ISA caps: `machine_key`) in a small cache file
  (`PEAKD_LINEAR_CACHE`, default ~/.cache/peakd/cpu_linear.json). Where none is kept it times both
  libraries on one BERT-base layer's Linears (PROBE_SHAPES; forward, input and weight gradient;
  see `time_paths`), keeps the faster for training (all three) and for inference (forward only),
  and writes that choice for later processes. oneDNN must win by MARGIN, so where the two are
  close F.linear stays. A choice kept from another probe (other PROBE_SHAPES) is measured again.
  Why a machine-wide choice: where the two libraries are close (an AMD EPYC, family 25 model 17,
  with AVX-512: oneDNN 1.09x MKL per op, under MARGIN), a probe in every process chose oneDNN in 8
  of the 92 runs of two studies and MKL in the rest; each flip changed that run's float rounding,
  so the same command trained another teacher, whose kept runs could then not be restored.
  `PEAKD_LINEAR_CACHE=off` measures in every process again. An AVX-512 CPU cannot be simulated on
  an AVX2 one (caps only remove instructions), so the choice is measured rather than decided by a
  rule about instruction sets. Layers smaller than SMALL_WEIGHT (tiny test models) always take
  F.linear: there the Python autograd.Function costs more than the GEMM (32 x 32 weights: oneDNN
  5-54 GFLOP/s, MKL 21-65).
* `onednn`: every fp32 CPU Linear through oneDNN; `mkl`: every Linear through F.linear (torch's
  BLAS, MKL on x86 builds).

The two libraries agree within float rounding (1e-5 on BERT-sized activations), so the choice
changes no result beyond that; for bitwise equality across machines fix the path
(PEAKD_LINEAR=mkl or onednn). The oneDNN op is private to torch
(`torch.ops.mkldnn._linear_pointwise`), so it is probed once against F.linear and skipped where
it is missing or disagrees; autocast, torch.compile and other devices use F.linear. Parameters
and their names are nn.Linear's, so checkpoints do not change.
"""
import hashlib
import json
import os
import platform
import time
from pathlib import Path

try:
    import fcntl  # POSIX: processes that start together wait for the first one's probe
except ImportError:  # pragma: no cover - Windows: no lock, the last writer's choice is kept
    fcntl = None

import torch
import torch.nn.functional as F
from torch import nn

from .serialization import atomic_write

PATHS = ("auto", "onednn", "mkl")
ENV_VAR = "PEAKD_LINEAR"
# None: read PEAKD_LINEAR (default auto); benchmarks and tests set one of PATHS here
LINEAR_PATH = None
# The auto probe times one BERT-base layer's Linears on two 128-token sequences: (tokens M, in K,
# out N, layers of that shape) for Query, Key, Value and the attention output, then the two
# feed-forward layers. A probe of the 768 x 768 shape alone missed what the feed-forward shapes
# do: on an Intel Xeon capped to AVX2 it found oneDNN 1.09x slower per op while a training step
# with oneDNN forced ran at 0.48x transformers' speed (bench/README.md).
PROBE_SHAPES = ((256, 768, 768, 4), (256, 768, 3072, 1), (256, 3072, 768, 1))
# the probe's identity as a kept choice records it (JSON has lists, not tuples)
PROBE_ID = [list(s) for s in PROBE_SHAPES]
OPS = ("forward", "grad_input", "grad_weight")  # the three matrix multiplies of a Linear
# oneDNN is taken only when F.linear's time is at least this multiple of its: repeated probes
# on the busy AVX2 machine scattered by up to 12% (forward 4.4-5.5 ms for MKL, 4.6-4.9 for
# oneDNN), and where the two are that close F.linear (transformers' path) should stay
MARGIN = 1.15
SMALL_WEIGHT = 128 * 128  # auto: weights with fewer elements always take F.linear
CACHE_ENV = "PEAKD_LINEAR_CACHE"
# rounds of the probe: a per-process one, and the one whose choice a machine then keeps (longer,
# since a wrong choice would last for every later run there): 0.56 and 1.34 s of wall time on a
# 2-core Intel Xeon, 0.83 and 2.06 s capped to AVX2
PROBE_ROUNDS, KEPT_PROBE_ROUNDS = 4, 12
# --bf16 on a CPU: bf16_slowdown times one Linear of this shape in bf16 and fp32 (0.1-0.16 s on
# the AVX2 EPYC, less where bf16 is fast). Where a CPU has no native bf16, torch 2.13 runs
# bf16 GEMMs through slow generic kernels: on an AVX2-only AMD EPYC (family 25, model 1) this
# shape's three products took 17x fp32's time (forward 4.5 / 0.47 ms, input gradient 16.8 / 0.45,
# weight gradient 1.9 / 0.46; one thread; 1.1 GFLOP/s for a bf16 product of two row-major
# operands against 108 in fp32 at 512 x 768 x 768, 2 threads). With AMX (an Intel Xeon, family 6,
# model 167) bf16's matmul peak is 5.6x fp32's.
BF16_PROBE_SHAPE, BF16_PROBE_ROUNDS = (128, 384, 384, 1), 2
# environment variables that cap the instruction sets either library uses
ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
            "MKL_DEBUG_CPU_TYPE")


def _onednn_matmul(x, weight, bias):
    """x @ weight.T + bias through oneDNN (x: (..., K), weight: (N, K); any strides)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


# Both gradients hand oneDNN a row-major second operand (the op's weight slot, w in x @ w.T).
# Given a transposed view there, torch 2.13's oneDNN falls to a slow kernel once that operand
# has 3072 rows: one thread on an Intel Xeon with AVX-512 (family 6, model 167), 4096 x 3072 x
# 768 input gradient 76 GFLOP/s strided against 165 contiguous (MKL 191), weight gradients 53-58
# against 146-151 (MKL 206-212); capped to AVX2, 18-20 against 94-108 (MKL 115-120). BERT's
# feed-forward layers hit this on every step, while the 768 x 768 weight gradient loses 4-10% to
# the copy (bench/README.md, "CPU Linear path").


def _onednn_grad_input(grad, weight):
    """(..., N) @ (N, K) -> (..., K); the (K, N) transposed weight is copied row-major."""
    return _onednn_matmul(grad, weight.t().contiguous(), None)


def _onednn_grad_weight(grad2d, x2d):
    """(M, N)^T @ (M, K) -> (N, K), a sum over the M tokens.

    The narrower of grad (M, N) and x (M, K) is the one copied row-major into the weight slot
    (the smaller copy); when that is grad, the (K, N) result is transposed back.
    """
    if grad2d.shape[1] < x2d.shape[1]:
        return _onednn_matmul(x2d.t(), grad2d.t().contiguous(), None).t().contiguous()
    return _onednn_matmul(grad2d.t(), x2d.t().contiguous(), None)


class _OneDNNLinear(torch.autograd.Function):
    """F.linear whose three matrix multiplies (forward, input and weight gradient) use oneDNN."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn_matmul(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn_grad_input(grad, weight)
        grad2d = grad.reshape(-1, grad.shape[-1])
        if ctx.needs_input_grad[1]:
            grad_w = _onednn_grad_weight(grad2d, x.reshape(-1, x.shape[-1]))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad2d.sum(0)
        return grad_x, grad_w, grad_b


def _onednn_usable():
    """True when this torch build has the oneDNN linear op and it gives F.linear's result."""
    # a private generator: the probe runs at the first forward of a process, and drawing from
    # the global one there would shift dropout's stream (a resumed run would then diverge)
    g = torch.Generator().manual_seed(0)
    try:
        x, w, b = (torch.randn(*shape, generator=g) for shape in ((3, 4), (5, 4), (5,)))
        return bool(torch.allclose(_onednn_matmul(x, w, b), F.linear(x, w, b), atol=1e-5))
    except (AttributeError, RuntimeError):
        return False


def time_paths(shapes=PROBE_SHAPES, rounds=PROBE_ROUNDS, dtype=torch.float32,
               paths=("mkl", "onednn")):
    """{path: {op: seconds}} for ops forward, grad_input, grad_weight of a set of Linears.

    shapes: (M tokens, K in, N out, count) each; an op's seconds are the sum over shapes of its
    best time times count (one BERT layer's time in that op, by default). Timed on one thread in
    this thread's CPU time: the per-core speed of each library's kernels, which is what differs
    between CPUs, and a figure other processes on the machine barely move (wall time on 2 busy
    cores flipped the choice in 2 of 3 tries on the AVX2 machine; with CPU time on one thread and 4
    rounds, 15 probes of the 768 x 768 shape all gave MKL/oneDNN time ratios of 0.84-1.02 forward
    and 0.81-0.89 for all three ops). Rounds alternate which library goes first; an extra first
    round only warms up (oneDNN builds its primitives). A private generator: the global random
    stream (dropout) is not touched. `dtype` and `paths` (libraries timed, of "mkl" and "onednn")
    serve bf16_slowdown.
    """
    g = torch.Generator().manual_seed(0)
    total = {path: dict.fromkeys(OPS, 0.0) for path in paths}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            for m, k, n, count in shapes:
                for path, times in _time_shape(m, k, n, rounds, g, dtype, paths).items():
                    for op, seconds in times.items():
                        total[path][op] += count * seconds
    finally:
        torch.set_num_threads(threads)
    return total


def _time_shape(m, k, n, rounds, generator, dtype=torch.float32, paths=("mkl", "onednn")):
    """{path: {op: best thread seconds}} of one (M, K) x (N, K)^T Linear, on this thread."""
    x, w, grad = (torch.randn(*s, generator=generator).to(dtype) for s in ((m, k), (n, k), (m, n)))
    b = torch.randn(n, generator=generator).to(dtype)
    ops = {
        "mkl": (lambda: F.linear(x, w, b), lambda: grad.mm(w), lambda: grad.t().mm(x)),
        "onednn": (lambda: _onednn_matmul(x, w, b), lambda: _onednn_grad_input(grad, w),
                   lambda: _onednn_grad_weight(grad, x)),
    }
    best = {path: dict.fromkeys(OPS, float("inf")) for path in paths}
    for r in range(rounds + 1):
        for path in (paths if r % 2 else paths[::-1]):
            for op, fn in zip(OPS, ops[path]):
                start = time.thread_time()
                fn()
                if r:
                    best[path][op] = min(best[path][op], time.thread_time() - start)
    return best


def bf16_slowdown(shape=BF16_PROBE_SHAPE, rounds=BF16_PROBE_ROUNDS):
    """bf16 time / fp32 time of one Linear's three products (time_paths, F.linear's kernels,
    which --bf16's CPU autocast runs) at `shape` (M, K, N, count): above 1, bf16 is slower."""
    seconds = {dtype: sum(time_paths((shape,), rounds, dtype, ("mkl",))["mkl"].values())
               for dtype in (torch.float32, torch.bfloat16)}
    return seconds[torch.bfloat16] / seconds[torch.float32]


def decide(best):
    """{"train": path, "infer": path} from time_paths' result (oneDNN must win by MARGIN)."""
    train = {path: sum(t.values()) for path, t in best.items()}
    infer = {path: t["forward"] for path, t in best.items()}
    return {mode: "onednn" if t["mkl"] >= MARGIN * t["onednn"] else "mkl"
            for mode, t in (("train", train), ("infer", infer))}


_ONEDNN_OK = None
# the auto choice of this process, read or measured once: {"train", "infer", "shapes",
# "seconds", "source"}
_AUTO = {}


def requested_path():
    """LINEAR_PATH, else $PEAKD_LINEAR, else auto; an unknown value is an error."""
    value = LINEAR_PATH if LINEAR_PATH is not None else os.environ.get(ENV_VAR, "auto")
    value = value.strip().lower()
    if value not in PATHS:
        raise ValueError(f"{ENV_VAR}={value}: use one of {', '.join(PATHS)}")
    return value


def measure(rounds=PROBE_ROUNDS):
    """{"train", "infer", "shapes", "seconds"}: one probe and its decision."""
    best = time_paths(rounds=rounds)
    return {**decide(best), "shapes": PROBE_ID, "seconds": best}


def cache_path():
    """The file that keeps each machine's choice, or None where $PEAKD_LINEAR_CACHE is off."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        value = value.strip()
        return None if value.lower() in ("", "off") else Path(value).expanduser()
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "peakd" / "cpu_linear.json"


def machine_key():
    """What the choice depends on: the CPU (model name, vendor, family, model, a digest of its
    instruction-set flags), torch's version and any ISA caps in the environment."""
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                name, _, value = line.partition(":")
                if not name.strip():  # the first processor's block ends here
                    break
                info.setdefault(name.strip(), value.strip())
    except OSError:
        pass
    flags = hashlib.sha256(info.get("flags", "").encode()).hexdigest()[:12]
    cpu = (f"{info.get('model name') or platform.processor() or platform.machine()} "
           f"({info.get('vendor_id', '?')} family {info.get('cpu family', '?')} "
           f"model {info.get('model', '?')}, flags {flags})")
    caps = " ".join(f"{v}={os.environ[v]}" for v in ISA_CAPS if v in os.environ)
    return " | ".join(filter(None, (cpu, f"torch {torch.__version__}", caps)))


def _read_kept(path):
    """{machine key: choice} from `path`; a missing or damaged file holds nothing."""
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return kept if isinstance(kept, dict) else {}


def _kept_choice(path):
    """This machine's choice from `path`, measured and added there first where missing. The
    lock makes processes that start together (a grid's parallel stages) take one probe's
    choice. Raises OSError where the file or its folder cannot be written."""
    key = machine_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        kept = _read_kept(path)
        choice = kept.get(key)
        # a choice of another probe (an earlier PROBE_SHAPES or none recorded) is measured again
        if (isinstance(choice, dict)
                and all(choice.get(mode) in ("onednn", "mkl") for mode in ("train", "infer"))
                and choice.get("shapes") == PROBE_ID):
            return {**choice, "source": f"kept in {path}"}
        choice = measure(KEPT_PROBE_ROUNDS)
        kept[key] = {**choice, "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
        text = json.dumps(kept, indent=1, sort_keys=True)
        atomic_write(path, lambda f: f.write(text.encode("utf-8")))  # readers: old or new file
        return {**choice, "source": f"measured, kept in {path}"}


def auto_choice():
    """This process's choice: the machine's kept one (measured first where none is kept), or,
    where the cache is off or cannot be written, a probe of this process's own."""
    if not _AUTO:
        path, choice = cache_path(), None
        if path is not None:
            try:
                choice = _kept_choice(path)
            except OSError:
                choice = None
        _AUTO.update(choice or {**measure(), "source": "measured in this process"})
    return _AUTO


def _onednn_ok():
    """Whether torch's private oneDNN op works here (probed once per process)."""
    global _ONEDNN_OK
    if _ONEDNN_OK is None:
        _ONEDNN_OK = _onednn_usable()
    return _ONEDNN_OK


def chosen_paths():
    """What fp32 CPU Linears use now: {"requested", "train", "infer"[, "seconds", "shapes"]}."""
    requested = requested_path()
    if requested == "mkl" or not _onednn_ok():
        return {"requested": requested, "train": "mkl", "infer": "mkl",
                "onednn_usable": _onednn_ok()}
    if requested == "onednn":
        return {"requested": requested, "train": "onednn", "infer": "onednn",
                "onednn_usable": True}
    return {"requested": requested, "onednn_usable": True, **auto_choice()}


def used_paths():
    """{"requested", "train", "infer"}: what this process's fp32 CPU Linears used so far. Unlike
    `chosen_paths` it never starts the timing probe: with `auto` and no layer large enough to
    need the choice, every Linear took F.linear ("mkl")."""
    requested = requested_path()
    if requested == "auto" and not _AUTO:
        return {"requested": requested, "train": "mkl", "infer": "mkl"}
    paths = chosen_paths()
    return {k: paths[k] for k in ("requested", "train", "infer")}


def _use_onednn(x, weight):
    # called for every Linear forward: one read of the setting, no dict built
    requested = requested_path()
    if requested == "mkl" or (requested == "auto" and weight.numel() < SMALL_WEIGHT):
        return False
    if not _onednn_ok():
        return False
    if requested == "onednn":
        return True
    mode = "train" if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad) \
        else "infer"
    return auto_choice()[mode] == "onednn"


def linear(x, weight, bias=None):
    """F.linear; fp32 on the CPU (outside autocast and torch.compile) may go through oneDNN."""
    if (x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and x.numel() > 0
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()
            and _use_onednn(x, weight)):
        return _OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """nn.Linear (same parameters and names) whose forward is `linear` above."""

    def forward(self, x):
        return linear(x, self.weight, self.bias)
