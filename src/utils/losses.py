"""The task loss, distillation losses and the PKD layer pairing: pure functions, no state.

The losses and presets per --train_type are listed in README: Training types and presets.

Shapes: B is the batch size, C the number of classes, n the number of paired layers,
H the hidden size. Every loss returns a 0-d tensor on the inputs' device.
"""
from __future__ import annotations

import math
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


# --- the methods Pea-KD is compared with (docs/baselines.md: sources, defaults, choices) --------
#
# Shapes: B batch, S its (padded) length, h heads, d head size, H hidden size, L matched layers;
# mask (B, S) is 1 for a real token and 0 for padding. Padding positions of hidden states and
# q/k/v hold no defined value (computed, or zeros on the CPU's packed path), so every loss below
# masks them out on both sides.

def attention_scores(q: torch.Tensor, k: torch.Tensor,
                     position_bias: torch.Tensor | None = None) -> torch.Tensor:
    """The attention scores before the mask and the softmax, in fp32 whatever the autocast
    (bf16 would round the scores the losses compare; fp32 also skips autocast's copies, see
    _cosine_matrix):

        A = (q / sqrt(d)) k^T  (+ MPNet's relative position bias)

    The scale goes on q, (B, h, S, d), rather than on the (B, h, S, S) product.
    Args: q, k: (B, h, S, d); position_bias: (1, h, S, S) or None. Returns (B, h, S, S).
    """
    with torch.autocast(q.device.type, enabled=False):
        scores = (q.float() / math.sqrt(q.shape[-1])) @ k.float().transpose(-1, -2)
        return scores if position_bias is None else scores + position_bias.float()


def _pair_mask(mask: torch.Tensor) -> torch.Tensor:
    """(B, S) token mask -> (B, 1, S, S) float mask of pairs whose query and key are real."""
    m = mask.float()
    return (m[:, :, None] * m[:, None, :])[:, None]


def tinybert_attention_loss(student_scores: torch.Tensor, teacher_scores: torch.Tensor,
                            mask: torch.Tensor) -> torch.Tensor:
    """TinyBERT's attention transfer for one pair of layers (Jiao et al. 2020; task_distill.py):

        loss = (1 / (B h S S)) sum_{b, a, i, j} (m_ij A^s_baij - m_ij A^t_baij)^2

    A: the scores before softmax (`attention_scores`); m_ij = 1 where query i and key j are real
    tokens. TinyBERT zeroes the masked entries (scores <= -100, i.e. padded keys) on both sides;
    here padded queries are zeroed too, since their scores are undefined on the packed path.
    Args: student_scores, teacher_scores: (B, h, S, S), same heads; mask: (B, S).
    """
    if student_scores.shape != teacher_scores.shape:
        raise PeakdError(f"TinyBERT's attention loss needs the same heads and lengths: student "
                         f"{tuple(student_scores.shape)}, teacher {tuple(teacher_scores.shape)}")
    pairs = _pair_mask(mask)
    return ((student_scores.float() - teacher_scores.float()) * pairs).square().mean()


def tinybert_hidden_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                         mask: torch.Tensor, fit: torch.nn.Module) -> torch.Tensor:
    """TinyBERT's hidden-state (and embedding) transfer for one pair of layers:

        loss = (1 / (N H_T)) sum_{real tokens t} ||W s_t + b - t_t||^2

    W, b: `fit` (TinyBERT's learned `fit_dense`, H_s -> H_T, trained with the student); N: the
    real tokens of the batch (TinyBERT averages over every position of its 128-padded batch).
    Args: student_hidden (B, S, H_s); teacher_hidden (B, S, H_T); mask (B, S).
    Padding is masked, not indexed out: `x[mask]` has a data-dependent shape, which makes a GPU
    wait for the host on every step.
    """
    pad = ~mask.bool()[..., None]  # (B, S, 1)
    diff = fit(student_hidden.float().masked_fill(pad, 0.0)) - teacher_hidden.float()
    diff = diff.masked_fill(pad, 0.0)  # (B, S, H_T), zero at padding
    return diff.pow(2).sum() / (mask.sum() * diff.shape[-1])


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       T: float = 1.0) -> torch.Tensor:
    """Cross-entropy against the teacher's softened distribution (TinyBERT's prediction layer,
    CKD's KD term; no T^2 factor):

        loss = -(1 / B) sum_b sum_c softmax(t_b / T)_c log softmax(s_b / T)_c

    Args: student_logits, teacher_logits: (B, C); T > 0.
    """
    p_t = F.softmax(teacher_logits.float() / T, dim=-1)
    return -(p_t * F.log_softmax(student_logits.float() / T, dim=-1)).sum(-1).mean()


def _row_kl(log_p_t: torch.Tensor, log_p_s: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """sum over the last axis of p_t (log p_t - log p_s), kept where `rows` is true; entries
    masked to -inf on both sides (p_t = 0) count 0."""
    p_t = log_p_t.exp()
    terms = torch.where(p_t > 0, p_t * (log_p_t - log_p_s), torch.zeros_like(p_t))
    return terms.sum(-1) * rows


def minilm_relation_loss(student_qkv: tuple, teacher_qkv: tuple, mask: torch.Tensor,
                         student_bias: torch.Tensor | None = None,
                         teacher_bias: torch.Tensor | None = None) -> torch.Tensor:
    """MiniLM's deep self-attention distillation of the last layer (Wang et al. 2020):

        L = L_AT + L_VR
        L_AT = (1 / (h N)) sum_{b, a, real i} KL(A^t_bai || A^s_bai),  A = softmax(q k^T / sqrt(d))
        L_VR = (1 / (h N)) sum_{b, a, real i} KL(V^t_bai || V^s_bai),  V = softmax(v v^T / sqrt(d))

    each row a distribution over the real keys j; N: the real query positions of the batch (per
    head, then the mean over heads and positions). MPNet's position bias is part of its
    attention distribution A (not of V).
    Args: student_qkv, teacher_qkv: (q, k, v) each (B, h, S, d), the same h; mask (B, S);
    *_bias: (1, h, S, S) or None.
    """
    (sq, sk, sv), (tq, tk, tv) = student_qkv, teacher_qkv
    if sq.shape[1] != tq.shape[1]:
        raise PeakdError(f"MiniLM's loss needs the same number of heads: student {sq.shape[1]}, "
                         f"teacher {tq.shape[1]}")
    keys = mask.bool()[:, None, None, :]  # (B, 1, 1, S)
    rows = mask.float()[:, None, :]  # (B, 1, S): real queries
    total = 0.0
    for s_scores, t_scores in ((attention_scores(sq, sk, student_bias),
                                attention_scores(tq, tk, teacher_bias)),
                               (attention_scores(sv, sv), attention_scores(tv, tv))):
        log_s = F.log_softmax(s_scores.masked_fill(~keys, float("-inf")), dim=-1)
        log_t = F.log_softmax(t_scores.masked_fill(~keys, float("-inf")), dim=-1)
        total = total + _row_kl(log_t, log_s, rows).sum() / (sq.shape[1] * rows.sum())
    return total


def _cosine_matrix(x: torch.Tensor) -> torch.Tensor:
    """(..., n, D) -> (..., n, n) cosine similarities between the n vectors, in fp32 whatever
    the autocast: the Gram matrix x x^T over the outer product of the norms (floored at 1e-12,
    as F.normalize). The same values as normalising x first, with one reduction over the
    (..., n, D) tensor instead of a division and its backward; and fp32 skips autocast's bf16
    copies, which cost more than the small matmuls save (CPU live step, docs/speed.md)."""
    x = x.float()
    with torch.autocast(x.device.type, enabled=False):
        norms = torch.linalg.vector_norm(x, dim=-1).clamp_min(1e-12)
        return (x @ x.transpose(-1, -2)) / (norms[..., :, None] * norms[..., None, :])


def _relation_kl(student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """sum over rows of KL(row-softmax(teacher) || row-softmax(student)), entries outside `valid`
    (a boolean mask of the same shape) left out of both softmaxes."""
    log_s = F.log_softmax(student.masked_fill(~valid, float("-inf")), dim=-1)
    log_t = F.log_softmax(teacher.masked_fill(~valid, float("-inf")), dim=-1)
    rows = valid.any(-1).float()
    return _row_kl(log_t, log_s.masked_fill(~valid, 0.0), rows).sum()


def ckd_word_relation_loss(student_layers: Sequence[torch.Tensor],
                           teacher_layers: Sequence[torch.Tensor],
                           mask: torch.Tensor) -> torch.Tensor:
    """CKD's word relation (Park et al. 2021; GeondoPark/CKD loss.py, WR_Dist, cosine, kldiv):

        L_WR = sum_l sum_b sum_{real i} sum_{real j != i} P^t_lbij log(P^t_lbij / P^s_lbij)
               / (L sum_b n_b^2)
        P_lbi = softmax over real j != i of cos(h_lbi, h_lbj)

    h: each matched layer's token vectors; n_b: the real tokens of example b (the denominator
    is the count of real pairs, the diagonal included, as CKD's mask.sum()).
    Args: student_layers, teacher_layers: L tensors (B, S, H_s) / (B, S, H_T); mask (B, S).
    """
    pairs = _pair_mask(mask)[:, 0].bool()  # (B, S, S)
    valid = pairs & ~torch.eye(mask.shape[1], dtype=torch.bool, device=mask.device)
    total = sum(_relation_kl(_cosine_matrix(s), _cosine_matrix(t), valid)
                for s, t in zip(student_layers, teacher_layers))
    return total / (len(student_layers) * pairs.sum())


def ckd_layer_relation_loss(student_layers: Sequence[torch.Tensor],
                            teacher_layers: Sequence[torch.Tensor],
                            mask: torch.Tensor) -> torch.Tensor:
    """CKD's layer-transforming relation (loss.py, LTR_Dist, cosine, kldiv): the word relation
    taken along the layer axis, for each real token t,

        L_LTR = sum_{real t} sum_l sum_{m != l} P^t_tlm log(P^t_tlm / P^s_tlm) / (N L^2)
        P_tl = softmax over m != l of cos(h_tl, h_tm)

    N: the real tokens of the batch.
    Args: as ckd_word_relation_loss (L >= 2). Every position is computed and padding's rows left
    out by the mask (no `x[mask]`, whose data-dependent shape makes a GPU wait each step).
    """
    s = torch.stack(list(student_layers), dim=2)  # (B, S, L, H_s)
    t = torch.stack(list(teacher_layers), dim=2)  # (B, S, L, H_T)
    n_layers = s.shape[2]
    off_diagonal = ~torch.eye(n_layers, dtype=torch.bool, device=s.device)
    valid = mask.bool()[:, :, None, None] & off_diagonal  # (B, S, L, L)
    return _relation_kl(_cosine_matrix(s), _cosine_matrix(t), valid) / (mask.sum() * n_layers ** 2)


def cosine_hidden_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                       mask: torch.Tensor) -> torch.Tensor:
    """DistilBERT's cosine loss (Sanh et al. 2019; distiller.py, CosineEmbeddingLoss with
    target 1) between the last hidden states of the real tokens:

        loss = (1 / N) sum_{real t} (1 - cos(s_t, t_t))

    Args: student_hidden, teacher_hidden: (B, S, H), the same H; mask (B, S). Padding is
    masked, not indexed out (see tinybert_hidden_loss).
    """
    real = mask.bool()
    pad = ~real[..., None]
    cos = F.cosine_similarity(student_hidden.float().masked_fill(pad, 0.0),
                              teacher_hidden.float().masked_fill(pad, 0.0), dim=-1)  # (B, S)
    return (1 - cos).masked_fill(~real, 0.0).sum() / real.sum()


def skip_layer_map(student_layers: int, teacher_layers: int) -> tuple[list[int], list[int]]:
    """TinyBERT's (and CKD's emb+skip) pairing, with k = L_T // L_S (the integer division of
    TinyBERT's code: when L_T / L_S is not whole, the teacher's top layers go unused):

        attention: student layer i -> teacher layer i k + k - 1   (0-based, i = 0 .. L_S - 1)
        hidden:    student output i -> teacher output i k          (0 = the embeddings, i = 0 .. L_S)

    Returns (attention pairs' teacher indices, hidden pairs' teacher indices). An SPS student
    counts its 2k effective layers.
    """
    k = teacher_layers // student_layers
    if k < 1:
        raise PeakdError(f"a student with {student_layers} effective layers is deeper than its "
                         f"{teacher_layers}-layer teacher; layer-to-layer distillation needs "
                         "a teacher at least as deep")
    return ([i * k + k - 1 for i in range(student_layers)],
            [i * k for i in range(student_layers + 1)])
