"""PTP labels: a 4-way label per training example from the teacher's prediction."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch

from utils.errors import PeakdError
from utils.glue import get_task

PTP_NUM_LABELS = 4
PTP_LABEL_NAMES = ("confidently correct", "unconfidently correct",
                   "confidently wrong", "unconfidently wrong")

# used for a median group that has no member: no example's label depends on it
EMPTY_GROUP_THRESHOLD = 0.5


def teacher_confidence(teacher_logits: torch.Tensor,
                       gold_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's confidence and correctness per example.

        confidence[i] = max_c softmax(teacher_logits[i])[c]          (temperature 1)
        correct[i]    = argmax_c teacher_logits[i] == gold_labels[i]  (ties: the first class)

    Args:
        teacher_logits: (N, C) float.
        gold_labels: (N,) int class ids.

    Returns: confidence (N,) float64, correct (N,) bool. float64 so that confident teachers
    (logit gaps above ~17) do not all tie at exactly 1.0, as they would in float32.
    """
    if teacher_logits.dim() != 2 or gold_labels.dim() != 1 \
            or teacher_logits.shape[0] != gold_labels.shape[0]:
        raise PeakdError(f"teacher logits {tuple(teacher_logits.shape)} do not match "
                         f"{tuple(gold_labels.shape)} gold labels (need (N, C) and (N,)); "
                         "re-create --teacher_prediction with save_teacher_outputs.py "
                         "on the same task and data")
    probs = torch.softmax(teacher_logits.detach().to(torch.float64), dim=-1)
    confidence = probs.max(dim=-1).values
    # argmax, not max's index: only argmax documents that ties go to the first maximal class
    predicted = probs.argmax(dim=-1)
    return confidence, predicted == gold_labels.to(predicted.device).long()


def labels_from_confidence(confidence: torch.Tensor, correct: torch.Tensor,
                           t1: float, t2: float) -> torch.Tensor:
    """The PTP label of each example from its confidence and correctness.

        0  correct and confidence >  t1   (confidently correct)
        1  correct and confidence <= t1   (unconfidently correct)
        2  wrong   and confidence >  t2   (confidently wrong)
        3  wrong   and confidence <= t2   (unconfidently wrong)

    Args: confidence (N,) float, correct (N,) bool, thresholds t1, t2.
    Returns: (N,) int64 on confidence's device.
    """
    correct = correct.to(confidence.device, torch.bool)
    confident = torch.where(correct, confidence > t1, confidence > t2)
    # 2 * wrong picks the pair (0, 1) or (2, 3); + unconfident picks inside the pair
    return 2 * (~correct).long() + (~confident).long()


def ptp_labels(teacher_logits: torch.Tensor, gold_labels: torch.Tensor,
               t1: float, t2: float) -> torch.Tensor:
    """PTP labels (N,) int64 from teacher logits (N, C) and gold labels (N,).

    confidence = max softmax probability, correct = argmax == gold (see `teacher_confidence`);
    then label 0 / 1 / 2 / 3 as in `labels_from_confidence`, with strict `>` at t1 and t2.
    """
    confidence, correct = teacher_confidence(teacher_logits, gold_labels)
    return labels_from_confidence(confidence, correct, t1, t2)


def relabel_splits(teacher_logits: dict, features: dict, t1: float,
                   t2: float) -> tuple[dict, dict]:
    """Each split's Features with PTP labels instead of the task's, and the label counts.

    teacher_logits: {split: (N, C) logits}; features: {split: Features with (N,) gold labels}.
    Returns ({split: Features}, {split: [n0, n1, n2, n3]}), counts in PTP_LABEL_NAMES order:
    run folders record the counts, so a near-empty class shows without rerunning the teacher.
    """
    relabelled, counts = {}, {}
    for split, feats in features.items():
        labels = ptp_labels(teacher_logits[split], feats.labels, t1, t2)
        relabelled[split] = dataclasses.replace(feats, labels=labels)
        counts[split] = labels.bincount(minlength=PTP_NUM_LABELS).tolist()
    return relabelled, counts


def _median(values: torch.Tensor) -> float:
    """The usual median: the middle value, or the mean of the two middle ones for an even count."""
    if values.numel() == 0:
        return EMPTY_GROUP_THRESHOLD
    ordered = values.flatten().sort().values
    half = ordered.numel() // 2
    if ordered.numel() % 2:
        return float(ordered[half])
    # torch.median would return the lower middle value; the mean is the textbook median
    return float((ordered[half - 1] + ordered[half]) / 2)


def median_thresholds(teacher_logits: torch.Tensor, gold_labels: torch.Tensor) -> tuple[float, float]:
    """The median rule: t1 = median confidence of the correct predictions, t2 = of the wrong ones.

    With an even count the median is the mean of the two middle confidences. A group without
    members (e.g. a teacher that gets every training example right has no wrong ones) gets
    EMPTY_GROUP_THRESHOLD = 0.5: no example is compared with that threshold, so the labels do
    not depend on it, and it is a valid value in (0, 1) for logs and args.json.

    Args: teacher_logits (N, C), gold_labels (N,).
    Returns: (t1, t2) as floats.
    """
    confidence, correct = teacher_confidence(teacher_logits, gold_labels)
    return _median(confidence[correct]), _median(confidence[~correct])


def parse_thresholds_flag(value: str | Sequence[float] | None) -> tuple[float, float] | None:
    """`--ptp_thresholds` "t1,t2" (or a pair of numbers) as two floats strictly inside (0, 1);
    None for None and "median" (resolved from the teacher's logits later). Raises PeakdError
    for anything else, so a script can check the flag before loading models and data."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "median"):
        return None
    shown = value if isinstance(value, str) else ",".join(map(str, value))
    expect = "give t1,t2 with both in the open interval (0, 1), e.g. 0.9,0.7, or `median`"
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        numbers = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise PeakdError(f"--ptp_thresholds {shown!r} is not two numbers; {expect}") from None
    if len(numbers) != 2:
        raise PeakdError(f"--ptp_thresholds {shown!r} has {len(numbers)} values, not 2; {expect}")
    # `not 0 < x < 1` is also true for nan
    if not all(0 < x < 1 for x in numbers) or not all(math.isfinite(x) for x in numbers):
        raise PeakdError(f"--ptp_thresholds {shown!r} is outside (0, 1); {expect}")
    return numbers[0], numbers[1]


def resolve_thresholds(task_name: str, value: str | Sequence[float] | None,
                       teacher_logits: torch.Tensor | None,
                       gold_labels: torch.Tensor | None) -> tuple[float, float]:
    """The PTP thresholds (t1, t2) for a task and the `--ptp_thresholds` flag.

    value None: the task's default (RTE 0.80,0.60; MRPC 0.95,0.75; SST-2 0.98,0.80;
    QNLI 0.98,0.70; CoLA 0.95,0.70), or the median rule for a task without one.
    value "median": the median rule (`median_thresholds`) on teacher_logits (N, C) and
    gold_labels (N,), which are only read for the median rule.
    value "t1,t2": those, each strictly inside (0, 1).

    Raises PeakdError for an unknown task, a regression task (PTP needs classes to be right
    or wrong about) and a malformed or out-of-range flag value.
    """
    task = get_task(task_name)
    if task.output_mode != "classification":
        raise PeakdError(f"PTP needs a classification task, but {task.name} (--task {task_name}) "
                         "is a regression task; use PTP with a classification task such as "
                         "MRPC, RTE or SST-2, and train the STS-B student without PTP")
    given = parse_thresholds_flag(value)
    if given is not None:
        return given
    if value is None and task.ptp_thresholds is not None:
        return task.ptp_thresholds
    if teacher_logits is None or gold_labels is None:
        raise ValueError("the median rule needs teacher_logits and gold_labels")
    return median_thresholds(teacher_logits, gold_labels)
