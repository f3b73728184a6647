"""GLUE metrics in plain numpy; which ones a task reports lives in utils.glue.TASKS."""
from __future__ import annotations

import numpy as np

from utils.glue import get_task


def _pair(preds, labels) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and labels as equally long 1-d arrays."""
    p = np.asarray(preds).ravel()
    y = np.asarray(labels).ravel()
    if p.size != y.size or p.size == 0:
        raise ValueError(f"need one prediction per label and at least one of each; "
                         f"got {p.size} predictions and {y.size} labels")
    return p, y


def accuracy(preds, labels) -> float:
    """Share of predictions equal to their label."""
    p, y = _pair(preds, labels)
    return float(np.mean(p == y))


def f1(preds, labels) -> float:
    """F1 of the positive class 1; 0.0 when there is no positive prediction or label."""
    p, y = _pair(preds, labels)
    tp = np.sum((p == 1) & (y == 1))
    wrong = np.sum((p == 1) != (y == 1))  # false positives plus false negatives
    denom = 2 * tp + wrong
    return float(2 * tp / denom) if denom else 0.0


def matthews_corrcoef(preds, labels) -> float:
    """Matthews correlation (multi-class form); 0.0 when undefined, e.g. one predicted class."""
    p, y = _pair(preds, labels)
    _, ids = np.unique(np.concatenate([y, p]), return_inverse=True)
    k = int(ids.max()) + 1
    y_ids, p_ids = ids[:y.size], ids[y.size:]
    confusion = np.bincount(y_ids * k + p_ids, minlength=k * k).reshape(k, k).astype(np.float64)
    true_counts, pred_counts = confusion.sum(axis=1), confusion.sum(axis=0)
    n = float(y.size)
    cov_yp = np.trace(confusion) * n - true_counts @ pred_counts
    cov_pp = n * n - pred_counts @ pred_counts
    cov_yy = n * n - true_counts @ true_counts
    denom = np.sqrt(cov_pp * cov_yy)
    return float(cov_yp / denom) if denom else 0.0


def pearson(preds, labels) -> float:
    """Pearson correlation; 0.0 when either side is constant (undefined there)."""
    p, y = _pair(preds, labels)
    p, y = p.astype(np.float64), y.astype(np.float64)
    # test constancy directly: subtracting the mean of equal floats need not give exact zeros
    if np.ptp(p) == 0 or np.ptp(y) == 0:
        return 0.0
    dp, dy = p - p.mean(), y - y.mean()
    r = (dp @ dy) / np.sqrt((dp @ dp) * (dy @ dy))
    return float(np.clip(r, -1.0, 1.0))


def _ranks(a: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the average of their ranks."""
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)
    return (last - (counts - 1) / 2.0)[inverse]


def spearman(preds, labels) -> float:
    """Spearman rank correlation (Pearson of average ranks); 0.0 when undefined."""
    p, y = _pair(preds, labels)
    return pearson(_ranks(p), _ranks(y))


_METRICS = {"acc": accuracy, "f1": f1, "mcc": matthews_corrcoef,
            "pearson": pearson, "spearman": spearman}
_MEANS = {"acc_and_f1": ("acc", "f1"), "corr": ("pearson", "spearman")}


def metrics_for(metric_names, preds, labels) -> dict[str, float]:
    """The named metrics (parts of a mean listed before the mean itself) of preds vs labels."""
    p, y = _pair(preds, labels)
    results: dict[str, float] = {}
    for name in metric_names:
        parts = _MEANS.get(name)
        results[name] = (float(np.mean([results[part] for part in parts])) if parts
                         else _METRICS[name](p, y))
    return results


def compute_metrics(task_name: str, preds, labels) -> dict[str, float]:
    """The task's metrics (TaskSpec.metric_names): class ids, or float scores for regression."""
    return metrics_for(get_task(task_name).metric_names, preds, labels)
