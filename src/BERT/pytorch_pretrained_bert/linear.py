"""`Linear`: nn.Linear whose fp32 CPU matrix multiplies run through oneDNN.

On the CPUs measured here oneDNN's fp32 GEMM is about twice as fast as the MKL path F.linear
takes (bench/README.md), for the forward and both gradients. The op is private to torch
(`torch.ops.mkldnn._linear_pointwise`), so it is probed once against F.linear and skipped where
it is missing or disagrees; autocast, torch.compile and other devices use F.linear. Parameters
and their names are nn.Linear's, so checkpoints do not change.
"""
import torch
import torch.nn.functional as F
from torch import nn

ONEDNN_LINEAR = True  # speed switch: False sends every Linear through F.linear


def _onednn_matmul(x, weight, bias):
    """x @ weight.T + bias through oneDNN (x: (..., K), weight: (N, K); any strides)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


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
            grad_x = _onednn_matmul(grad, weight.t(), None)
        grad2d = grad.reshape(-1, grad.shape[-1])
        if ctx.needs_input_grad[1]:
            # (N, M) @ (M, K), a sum over the M tokens. oneDNN copies its first operand into
            # row-major order (the second it repacks anyway), so the narrower of grad (M, N) and
            # x (M, K) goes first; transposing the small (K, N) result back is cheaper.
            x2d = x.reshape(-1, x.shape[-1])
            if grad2d.shape[1] > x2d.shape[1]:
                grad_w = _onednn_matmul(x2d.t(), grad2d.t(), None).t().contiguous()
            else:
                grad_w = _onednn_matmul(grad2d.t(), x2d.t(), None)
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


_ONEDNN_OK = None


def linear(x, weight, bias=None):
    """F.linear; fp32 on the CPU (outside autocast and torch.compile) goes through oneDNN."""
    global _ONEDNN_OK
    if (ONEDNN_LINEAR and x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and x.numel() > 0
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()):
        if _ONEDNN_OK is None:
            _ONEDNN_OK = _onednn_usable()
        if _ONEDNN_OK:
            return _OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """nn.Linear (same parameters and names) whose forward is `linear` above."""

    def forward(self, x):
        return linear(x, self.weight, self.bias)
