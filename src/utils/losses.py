"""The task loss, distillation losses and the PKD layer pairing: pure functions, no state.

The losses and presets per --train_type are listed in README: Training types and presets.

Shapes: B is the batch size, C the number of classes, n the number of paired layers,
H the hidden size. Every loss returns a 0-d tensor on the inputs' device.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from utils.errors import PeakdError


def task_loss(logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    """The task's own loss on gold labels, computed in fp32 (also under autocast).

        classification: CE(s, y) = -(1 / B) * sum_b log softmax(s)[b, y_b]
        regression:     MSE(s, y) = (1 / B) * sum_b (s[b] - y[b])^2

    Args:
        logits: (B, C) class scores, or (B, 1) regression scores.
        labels: (B,) int64 class ids, or (B,) float gold scores.
        regression: True for a regression task (STS-B).

    Returns: 0-d fp32 tensor.
    """
    if regression:
        return F.mse_loss(logits.view(-1).float(), labels.float())
    return F.cross_entropy(logits.float(), labels)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None,
            labels: torch.Tensor, alpha: float, T: float) -> torch.Tensor:
    """Hinton KD for classification.

        loss = alpha * T^2 * KL(p_t || p_s) + (1 - alpha) * CE(s, y)
        p_t = softmax(t / T),  p_s = softmax(s / T)
        KL(p_t || p_s) = (1 / B) * sum_b sum_c p_t[b, c] * (log p_t[b, c] - log p_s[b, c])
        CE(s, y) = -(1 / B) * sum_b log softmax(s)[b, y_b]

    The KL term is averaged per example (`batchmean`); T^2 keeps its gradient on the scale of
    the CE term when T changes. CE uses temperature 1.

    Args:
        student_logits: (B, C) float.
        teacher_logits: (B, C) float, or None when alpha == 0.
        labels: (B,) int64 gold class ids.
        alpha: weight of the distillation term, in [0, 1]; 0 is plain fine-tuning.
        T: softmax temperature, > 0.

    Returns: 0-d tensor. With alpha == 0 it is exactly `F.cross_entropy(student_logits, labels)`
    and teacher_logits is not read.
    """
    ce = F.cross_entropy(student_logits, labels)
    if alpha == 0:
        # returned as is, not (1 - 0) * ce, so fine-tuning is bit-identical to plain CE
        return ce
    if teacher_logits is None:
        raise ValueError(f"kd_loss needs teacher_logits when alpha != 0 (alpha={alpha})")
    if T <= 0:
        raise PeakdError(f"--T {T} is not a valid temperature; use a number > 0 (e.g. 10)")
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ in shape")
    log_p_s = F.log_softmax(student_logits / T, dim=-1)
    # log_target: the teacher's log-probabilities avoid log(0) when its softmax underflows
    log_p_t = F.log_softmax(teacher_logits.to(log_p_s.dtype) / T, dim=-1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return alpha * T * T * kl + (1 - alpha) * ce


def _scores(x: torch.Tensor, name: str) -> torch.Tensor:
    """(B,) or (B, 1) as (B,); anything else is a caller's mistake."""
    if x.dim() == 2 and x.shape[1] == 1:
        return x[:, 0]
    if x.dim() != 1:
        raise ValueError(f"{name} must have shape (B,) or (B, 1), got {tuple(x.shape)}")
    return x


def regression_kd_loss(student_scores: torch.Tensor, teacher_scores: torch.Tensor | None,
                       labels: torch.Tensor, alpha: float) -> torch.Tensor:
    """KD for regression (STS-B): mean squared error to the teacher and to the gold score.

        loss = alpha * MSE(s, t) + (1 - alpha) * MSE(s, y)
        MSE(a, b) = (1 / B) * sum_b (a_b - b_b)^2

    Args:
        student_scores: (B,) or (B, 1) float.
        teacher_scores: (B,) or (B, 1) float, or None when alpha == 0.
        labels: (B,) or (B, 1) gold scores (cast to the student's dtype).
        alpha: weight of the teacher term, in [0, 1].

    Returns: 0-d tensor; with alpha == 0 exactly MSE(s, y), teacher_scores not read.
    """
    s = _scores(student_scores, "student_scores")
    y = _scores(labels, "labels").to(s.dtype)
    gold = F.mse_loss(s, y)
    if alpha == 0:
        return gold
    if teacher_scores is None:
        raise ValueError(f"regression_kd_loss needs teacher_scores when alpha != 0 (alpha={alpha})")
    t = _scores(teacher_scores, "teacher_scores").to(s.dtype)
    return alpha * F.mse_loss(s, t) + (1 - alpha) * gold


def patience_loss(student_cls: torch.Tensor, teacher_cls: torch.Tensor,
                  normalize: bool = True) -> torch.Tensor:
    """PKD patient loss between paired [CLS] vectors.

        loss = (1 / (B * n * H)) * sum_{b, i, h} (s'[b, i, h] - t'[b, i, h])^2
        s' = s / ||s||_2, t' = t / ||t||_2 over H when normalize, else s' = s, t' = t

    Args:
        student_cls: (B, n, H) the student's [CLS] vectors of its n paired effective layers.
        teacher_cls: (B, n, H) the [CLS] vectors of the teacher layers paired with them.
        normalize: L2-normalise each vector first (`--normalize_patience`).

    Returns: 0-d tensor. n == 0 gives a zero that is still connected to student_cls, so
    backward() through a total that contains it works.
    """
    if student_cls.shape != teacher_cls.shape or student_cls.dim() != 3:
        raise ValueError(f"student_cls {tuple(student_cls.shape)} and teacher_cls "
                         f"{tuple(teacher_cls.shape)} must both be (B, n, H)")
    if student_cls.numel() == 0:
        # mse_loss of empty tensors is nan; the sum of an empty tensor is an exact 0 with a grad_fn
        return student_cls.sum() * 0.0
    teacher_cls = teacher_cls.to(student_cls.dtype)
    if normalize:
        # eps in F.normalize keeps an all-zero vector at zero instead of nan
        student_cls = F.normalize(student_cls, p=2, dim=-1)
        teacher_cls = F.normalize(teacher_cls, p=2, dim=-1)
    return F.mse_loss(student_cls, teacher_cls)


def pkd_teacher_layers(student_effective_layers: int, teacher_layers: int) -> list[int]:
    """PKD-skip pairing: 1-based teacher layers for the student's effective layers 1..n-1.

        teacher(j) = round(j * L_T / n),  j = 1 .. n-1,  halves rounded up
                   = floor((2 * j * L_T + n) / (2 * n))   (integer arithmetic, no float ties)

    The student's last layer is left out: the KD term on the logits covers it. Examples:
    n=3, L_T=12 -> [4, 8]; n=6, L_T=12 -> [2, 4, 6, 8, 10]; n=6, L_T=6 -> [1, 2, 3, 4, 5].

    Every result lies in 1..L_T-1 while n < 2 * L_T; a deeper student gets a PeakdError
    asking for an explicit `--fc_layer_idx`.
    """
    n, depth = student_effective_layers, teacher_layers
    if n < 1 or depth < 1:
        raise ValueError(f"layer counts must be >= 1, got student {n}, teacher {depth}")
    if n >= 2 * depth:
        raise PeakdError(f"a student with {n} effective layers is too deep for the default "
                         f"PKD-skip pairing with a {depth}-layer teacher (it needs fewer than "
                         f"{2 * depth}); pass --fc_layer_idx with {n - 1} teacher layer indices "
                         f"in 0..{depth - 2}")
    return [(2 * j * depth + n) // (2 * n) for j in range(1, n)]


def resolve_fc_layer_idx(fc_layer_idx: str | Sequence[int] | None,
                         student_effective_layers: int, teacher_layers: int) -> list[int]:
    """The 0-based teacher layer indices the patient loss uses, from `--fc_layer_idx`.

    `fc_layer_idx` is a comma list of 0-based teacher layer indices as in the original
    ("3,7" == teacher layers 4 and 8), or a sequence of ints; None gives the PKD-skip default
    `pkd_teacher_layers(n, L_T)` minus 1. It must hold exactly n - 1 indices (one per student
    effective layer 1..n-1), each in 0..L_T-2 (the teacher's last layer is the logits' job);
    repeats are allowed. Anything else is a PeakdError naming the flag and the valid values.
    """
    n, depth = student_effective_layers, teacher_layers
    if fc_layer_idx is None:
        return [layer - 1 for layer in pkd_teacher_layers(n, depth)]
    shown = fc_layer_idx if isinstance(fc_layer_idx, str) else ",".join(map(str, fc_layer_idx))
    expect = (f"give {n - 1} comma-separated 0-based teacher layer indices in 0..{depth - 2} "
              f"(one per student effective layer 1..{n - 1}), or leave it out for the default")
    if isinstance(fc_layer_idx, str):
        parts = [p.strip() for p in fc_layer_idx.split(",")] if fc_layer_idx.strip() else []
    else:
        parts = list(fc_layer_idx)
    try:
        # int("3.5") fails, and so does a float in a sequence that is not a whole number
        indices = [int(p) if isinstance(p, str) else _whole(p) for p in parts]
    except (TypeError, ValueError):
        raise PeakdError(f"--fc_layer_idx {shown!r} is not a list of integers; {expect}") from None
    if len(indices) != n - 1:
        raise PeakdError(f"--fc_layer_idx {shown!r} has {len(indices)} indices but a student "
                         f"with {n} effective layers needs {n - 1}; {expect}")
    bad = [i for i in indices if not 0 <= i < depth - 1]
    if bad:
        raise PeakdError(f"--fc_layer_idx {shown!r}: {', '.join(map(str, bad))} out of range for "
                         f"a {depth}-layer teacher; {expect}")
    return indices


def _whole(x) -> int:
    """x as an int when it is a whole number (3 or 3.0), else ValueError."""
    i = int(x)
    if i != x:
        raise ValueError(x)
    return i
