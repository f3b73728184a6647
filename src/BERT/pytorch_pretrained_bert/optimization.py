"""BertAdam: the optimizer BERT was trained and fine-tuned with, and its learning-rate schedules.

Differences from torch's AdamW, kept on purpose because the method's numbers were made with them:
no bias correction of the moments, each parameter tensor's
gradient clipped to norm `max_grad_norm` on its own (not one global norm), and weight decay added
to the update (decoupled) and scaled by the scheduled learning rate. The schedule lives inside
the optimizer and is applied once per step: callers must not also use an LR scheduler.

Without bias correction a step is (1 - b1^t) / sqrt(1 - b2^t) times Adam's for a steady
gradient: 3.2x at t = 1, 6.5x at t = 10, 3.2x at t = 100, still 1.4x at t = 1000. BertAdam at a
given lr therefore trains like AdamW at a several times larger lr on short fine-tuning runs.
`bias_correction=True` turns the correction on (AdamW's update, with BERT's clipping).

Speed: a step runs torch's fused AdamW kernel (one pass over each tensor instead of about ten
foreach passes; 10x faster on the CPU), with its bias correction switched off by a step count so
large that beta ** step is 0, and each tensor's clipping folded into the kernel's `grad_scale`.
The foreach path gives the same numbers and is used where the fused kernel is missing
(`fused=False` forces it).
"""
import math

import torch
from torch.optim import Optimizer


def warmup_cosine(x, warmup=0.002):
    """Linear warmup to 1 over the first `warmup` fraction, then half a cosine to 0."""
    if x < warmup:
        return x / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (x - warmup) / max(1.0 - warmup, 1e-12)))


def warmup_constant(x, warmup=0.002):
    """Linear warmup, then 1."""
    return x / warmup if x < warmup else 1.0


def warmup_linear(x, warmup=0.002):
    """Linear warmup to 1 over the first `warmup` fraction, then linear decay to 0 at x = 1."""
    if x < warmup:
        return x / warmup
    return max((1.0 - x) / max(1.0 - warmup, 1e-12), 0.0)


def no_schedule(x, warmup=0.0):
    return 1.0


SCHEDULES = {"warmup_cosine": warmup_cosine, "warmup_constant": warmup_constant,
             "warmup_linear": warmup_linear, "none": no_schedule}


class BertAdam(Optimizer):
    """Adam without bias correction (unless asked), per-tensor clipping, decoupled weight decay.

    lr: peak learning rate; warmup: fraction of `t_total` spent warming up (-1: none);
    t_total: total number of optimizer steps (-1: no schedule); schedule: a key of SCHEDULES.
    Per step, for each tensor p with gradient g (after clipping g to norm max_grad_norm):
        m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
        p -= lr * schedule(step / t_total) * (m / (sqrt(v) + e) + weight_decay * p)
    bias_correction=True uses m / (1 - b1^t) and v / (1 - b2^t) (t = 1 at the first step) in
    place of m and v, as AdamW does.
    """

    def __init__(self, params, lr, warmup=-1, t_total=-1, schedule="warmup_linear", b1=0.9,
                 b2=0.999, e=1e-6, weight_decay=0.01, max_grad_norm=1.0, fused=None,
                 bias_correction=False):
        if lr <= 0.0:
            raise ValueError(f"learning rate must be > 0, got {lr}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule {schedule!r} is not one of {sorted(SCHEDULES)}")
        if not (0.0 <= warmup < 1.0 or warmup == -1):
            raise ValueError(f"warmup must be in [0, 1) or -1, got {warmup}")
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0) or e < 0.0:
            raise ValueError(f"invalid b1 {b1}, b2 {b2} or e {e}")
        defaults = dict(lr=lr, schedule=schedule, warmup=warmup, t_total=t_total, b1=b1, b2=b2,
                        e=e, weight_decay=weight_decay, max_grad_norm=max_grad_norm, step=0,
                        bias_correction=bool(bias_correction))
        super().__init__(params, defaults)
        # None: the fused kernel where this torch has it; False: the foreach path
        self.fused = hasattr(torch, "_fused_adamw_") if fused is None else bool(fused)
        self._no_bias_correction_steps = {}

    def scheduled_lr(self, group):
        """The learning rate the next step of `group` uses (a Python float: no device sync)."""
        if group["t_total"] == -1:
            return group["lr"]
        fn = SCHEDULES[group["schedule"]]
        return group["lr"] * fn(group["step"] / group["t_total"], max(group["warmup"], 0.0))

    def get_lr(self):
        return [self.scheduled_lr(g) for g in self.param_groups]

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError("BertAdam does not support sparse gradients")
            for p in params:
                if not self.state[p]:
                    self.state[p]["next_m"] = torch.zeros_like(p)
                    self.state[p]["next_v"] = torch.zeros_like(p)
            if self.fused and _fusable(params):
                self._step_fused(group, params)
            else:
                self._step_foreach(group, params)
            group["step"] += 1
        return loss

    def _clip_coefficients(self, group, grads):
        """Per tensor: min(1, max_grad_norm / (||g|| + 1e-6)), as one device tensor (no sync)."""
        norms = torch.stack(torch._foreach_norm(grads))
        return (group["max_grad_norm"] / (norms + 1e-6)).clamp_(max=1.0)

    def _step_fused(self, group, params):
        grads = [p.grad for p in params]
        m = [self.state[p]["next_m"] for p in params]
        v = [self.state[p]["next_v"] for p in params]
        device = params[0].device
        if group["bias_correction"]:
            # the kernel reads the step count of the step it takes (1 at the first)
            step = torch.tensor(float(group["step"] + 1), device=device)
        else:
            if device not in self._no_bias_correction_steps:
                # beta ** 1e9 == 0: the kernel's bias corrections become exactly 1
                self._no_bias_correction_steps[device] = torch.tensor(1e9, device=device)
            step = self._no_bias_correction_steps[device]
        steps = [step] * len(params)
        kwargs = dict(lr=self.scheduled_lr(group), beta1=group["b1"], beta2=group["b2"],
                      weight_decay=group["weight_decay"], eps=group["e"], amsgrad=False,
                      maximize=False)
        # AdamW decays p by lr * wd before the Adam update, the same p as BertAdam's
        # p -= lr * (update + wd * p): the update does not depend on p
        if group["max_grad_norm"] > 0:
            # the kernel divides each gradient by grad_scale: 1 / clip coefficient, per tensor
            # (float32, as the kernel reads it whatever the parameters' dtype)
            scales = self._clip_coefficients(group, grads).float().reciprocal_().unbind(0)
            for i, scale in enumerate(scales):
                torch._fused_adamw_([params[i]], [grads[i]], [m[i]], [v[i]], [], [steps[i]],
                                    grad_scale=scale, found_inf=None, **kwargs)
        else:
            torch._fused_adamw_(params, grads, m, v, [], steps, **kwargs)

    def _step_foreach(self, group, params):
        grads = [p.grad for p in params]
        if group["max_grad_norm"] > 0:
            # per-tensor clipping: each gradient scaled to norm <= max_grad_norm on its own
            torch._foreach_mul_(grads, self._clip_coefficients(group, grads).unbind(0))
        m = [self.state[p]["next_m"] for p in params]
        v = [self.state[p]["next_v"] for p in params]
        torch._foreach_lerp_(m, grads, 1.0 - group["b1"])
        torch._foreach_mul_(v, group["b2"])
        torch._foreach_addcmul_(v, grads, grads, value=1.0 - group["b2"])
        denom = torch._foreach_sqrt(v)
        if group["bias_correction"]:
            t = group["step"] + 1
            torch._foreach_div_(denom, math.sqrt(1.0 - group["b2"] ** t))
        torch._foreach_add_(denom, group["e"])
        update = torch._foreach_div(m, denom)
        if group["bias_correction"]:
            torch._foreach_mul_(update, 1.0 / (1.0 - group["b1"] ** t))
        if group["weight_decay"] > 0.0:
            torch._foreach_add_(update, params, alpha=group["weight_decay"])
        torch._foreach_add_(params, update, alpha=-self.scheduled_lr(group))


def _fusable(params):
    """The fused kernel takes dense floating tensors on one CPU or CUDA device."""
    device = params[0].device
    return (device.type in ("cpu", "cuda")
            and all(p.device == device and p.is_floating_point() and not p.is_sparse
                    and p.dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64)
                    for p in params))
