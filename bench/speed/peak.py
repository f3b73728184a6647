"""Matmul FLOPs of a BERT pass and the matmul peak measured on this machine, for MFU.

On a CPU the fp32 peak is the better of torch.mm (MKL) and oneDNN's matmul, the two libraries
the Linear layers choose from (src/BERT/pytorch_pretrained_bert/linear.py): which one is faster
depends on the CPU. On CUDA it also measures bf16 and fp16.
"""
import contextlib
import statistics

import torch


def forward_flops(config, effective_layers, seq_len, num_labels=2):
    """Matmul FLOPs (2 per multiply-add) of one sequence's forward pass; training counts 3x."""
    h, i, s = config.hidden_size, config.intermediate_size, seq_len
    per_layer = 2 * s * (4 * h * h + 2 * h * i) + 4 * s * s * h  # QKVO, FFN; QK^T and PV
    return effective_layers * per_layer + 2 * h * h + 2 * h * num_labels  # pooler, classifier


def matmul_peak(device, dtype, n, reps, clock, onednn=False):
    """Best FLOP/s of `reps` n x n matrix multiplies (torch.mm, or oneDNN's matmul)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)

    def mm():
        if onednn:
            return torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
        return torch.mm(a, b)

    mm()
    rates = []
    for _ in range(reps):
        start = clock()
        mm()
        rates.append(2 * n ** 3 / (clock() - start))
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "flops_best": max(rates),
            "flops_median": statistics.median(rates),
            "backend": "oneDNN" if onednn else "torch.mm"}


# the square size and repeats of a peak (make bench and bench/profile_step.py alike, so their
# MFU figures share one denominator)
PEAK_SIZE = {"cpu": 4096, "cuda": 8192}
PEAK_REPS = 5


def cpu_fp32_peaks(device, n, reps, clock):
    """{"fp32": torch.mm, "fp32_onednn": oneDNN (absent without it), "fp32_best": the faster}.

    The Linear layers take the faster library (linear.py): MFU against the slower one could pass
    100%, so MFU targets use fp32_best."""
    peaks = {"fp32": matmul_peak(device, torch.float32, n, reps, clock)}
    with contextlib.suppress(Exception):  # a torch build without oneDNN
        peaks["fp32_onednn"] = matmul_peak(device, torch.float32, n, reps, clock, onednn=True)
    peaks["fp32_best"] = max(peaks.values(), key=lambda p: p["flops_best"])
    return peaks


def measure_peaks(device, args, clock, amps):
    n = 1024 if args.quick else PEAK_SIZE[device.type]
    reps = 3 if args.quick else PEAK_REPS
    if device.type == "cpu":
        peaks = cpu_fp32_peaks(device, n, reps, clock)
        if "bf16" in amps:
            peaks["bf16"] = matmul_peak(device, torch.bfloat16, n, reps, clock)
    else:
        peaks = {"fp32": matmul_peak(device, torch.float32, n, reps, clock),
                 "bf16": matmul_peak(device, torch.bfloat16, n, reps, clock),
                 "fp16": matmul_peak(device, torch.float16, n, reps, clock)}
    return peaks
