"""Metrics against hand-computed values (and scipy/sklearn only where they happen to be installed)."""
import math

import numpy as np
import pytest

from utils.errors import PeakdError
from utils.glue import TASKS
from utils.metrics import (accuracy, compute_metrics, f1, matthews_corrcoef, pearson,
                           spearman)

# tp 2, fp 1, fn 1, tn 1
PREDS = [1, 1, 0, 0, 1]
LABELS = [1, 0, 0, 1, 1]


def test_accuracy():
    assert accuracy(PREDS, LABELS) == pytest.approx(3 / 5)
    assert accuracy(np.array([2, 0, 1]), np.array([2, 0, 1])) == 1.0


def test_f1():
    assert f1(PREDS, LABELS) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert f1([0, 0], [0, 0]) == 0.0  # no positives anywhere: undefined, reported as 0
    assert f1([0, 1], [1, 0]) == 0.0


def test_matthews_binary():
    # (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (2 - 1) / sqrt(3*3*2*2)
    assert matthews_corrcoef(PREDS, LABELS) == pytest.approx(1 / 6)
    assert matthews_corrcoef([0, 1, 1], [0, 1, 1]) == pytest.approx(1.0)
    assert matthews_corrcoef([1, 0, 0], [0, 1, 1]) == pytest.approx(-1.0)


def test_matthews_undefined_is_zero():
    assert matthews_corrcoef([1, 1, 1, 1], [0, 1, 0, 1]) == 0.0
    assert matthews_corrcoef([0, 1, 0, 1], [1, 1, 1, 1]) == 0.0
    assert matthews_corrcoef([1], [1]) == 0.0


def test_matthews_multiclass():
    # confusion rows=true [[1,1,0],[0,1,0],[0,0,1]]: c=3, s=4, t=(2,1,1), p=(1,2,1)
    # (3*4 - (2+2+1)) / sqrt((16 - (1+4+1)) * (16 - (4+1+1))) = 7 / 10
    assert matthews_corrcoef([0, 1, 1, 2], [0, 0, 1, 2]) == pytest.approx(0.7)


def test_pearson():
    # x - mean = (-1, 0, 1), y - mean = (-4/3, -1/3, 5/3): 3 / sqrt(2 * 14/3)
    assert pearson([1, 2, 3], [1, 2, 4]) == pytest.approx(3 / math.sqrt(28 / 3))
    assert pearson([1.0, 2.0], [-3.0, -5.0]) == pytest.approx(-1.0)
    assert pearson([0.1, 0.1, 0.1], [1, 2, 3]) == 0.0  # constant: undefined, reported as 0


def test_spearman_averages_tied_ranks():
    # ranks (1, 2.5, 2.5, 4) and (1, 3, 2, 4): 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert spearman([1.0, 10.0, 100.0, 1000.0], [0.1, 0.2, 0.3, 0.4]) == pytest.approx(1.0)


def test_lengths_must_match():
    with pytest.raises(ValueError, match="3 predictions and 2 labels"):
        accuracy([1, 0, 1], [1, 0])
    with pytest.raises(ValueError):
        pearson([], [])


def test_compute_metrics_per_task():
    assert compute_metrics("CoLA", PREDS, LABELS) == pytest.approx({"mcc": 1 / 6})
    for task in ("mrpc", "QQP"):
        assert compute_metrics(task, PREDS, LABELS) == pytest.approx(
            {"acc": 0.6, "f1": 2 / 3, "acc_and_f1": (0.6 + 2 / 3) / 2})
    for task in ("SST-2", "mnli", "qnli", "rte", "wnli", "snli"):
        assert compute_metrics(task, PREDS, LABELS) == pytest.approx({"acc": 0.6})
    r, rho = 3 / math.sqrt(28 / 3), 1.0
    assert compute_metrics("sts-b", np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0])) \
        == pytest.approx({"pearson": r, "spearman": rho, "corr": (r + rho) / 2})


def test_compute_metrics_gives_plain_floats_with_the_main_metric():
    for spec in TASKS.values():
        results = compute_metrics(spec.name, PREDS, LABELS)
        assert list(results) == list(spec.metric_names)
        assert spec.main_metric in results
        assert all(type(v) is float for v in results.values())


def test_compute_metrics_unknown_task():
    with pytest.raises(PeakdError, match="known tasks"):
        compute_metrics("glue", PREDS, LABELS)


def random_data(seed=0, n=200):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 3, n), rng.integers(0, 3, n), rng.normal(size=n).round(1)


def test_against_sklearn():
    skm = pytest.importorskip("sklearn.metrics")
    p3, y3, _ = random_data()
    p2, y2 = p3 % 2, y3 % 2
    assert f1(p2, y2) == pytest.approx(skm.f1_score(y2, p2))
    assert matthews_corrcoef(p2, y2) == pytest.approx(skm.matthews_corrcoef(y2, p2))
    assert matthews_corrcoef(p3, y3) == pytest.approx(skm.matthews_corrcoef(y3, p3))


def test_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    _, _, x = random_data(1)
    _, _, y = random_data(2)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0])
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0])
