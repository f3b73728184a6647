"""PTP labels and thresholds."""
import math
import statistics

import pytest
import torch

from helpers import expect_error, load_script, train_args
from utils.errors import PeakdError
from utils.features import Features
from utils.ptp import (EMPTY_GROUP_THRESHOLD, PTP_LABEL_NAMES, PTP_NUM_LABELS,
                       labels_from_confidence, median_thresholds, ptp_labels, relabel_splits,
                       resolve_thresholds, teacher_confidence)


def binary_logits(gaps):
    """2-class logits [x, 0]: the confidence is sigmoid(|x|), class 0 is predicted for x > 0."""
    return torch.tensor([[float(x), 0.0] for x in gaps], dtype=torch.float64)


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def test_label_constants():
    assert PTP_NUM_LABELS == 4 == len(PTP_LABEL_NAMES)
    assert PTP_LABEL_NAMES[0] == "confidently correct"
    assert PTP_LABEL_NAMES[3] == "unconfidently wrong"


def test_all_four_labels():
    # confidences: sigmoid(5) = 0.993, sigmoid(1) = 0.731, sigmoid(0.5) = 0.622
    logits = binary_logits([5.0, 1.0, 5.0, 0.5])
    gold = torch.tensor([0, 0, 1, 1])
    labels = ptp_labels(logits, gold, t1=0.9, t2=0.7)
    assert labels.dtype == torch.long and labels.shape == (4,)
    assert labels.tolist() == [0, 1, 2, 3]


def test_relabel_splits_replaces_labels_and_counts_them():
    ids5, ids1 = torch.zeros(5, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long)
    features = {"train": Features(ids5, ids5,
                                  torch.full((5,), 3), torch.tensor([0, 0, 1, 1, 0])),
                "dev": Features(ids1, ids1,
                                torch.full((1,), 3), torch.tensor([1]))}
    logits = {"train": binary_logits([5.0, 1.0, 5.0, 0.5, 5.0]), "dev": binary_logits([-5.0])}
    relabelled, counts = relabel_splits(logits, features, 0.9, 0.7)
    assert relabelled["train"].labels.tolist() == [0, 1, 2, 3, 0]
    assert counts == {"train": [2, 1, 1, 1], "dev": [1, 0, 0, 0]}
    assert relabelled["train"].input_ids is features["train"].input_ids
    assert features["train"].labels.tolist() == [0, 0, 1, 1, 0]  # the task's labels stay


def test_three_classes_and_float32_logits():
    logits = torch.tensor([[0.0, 4.0, 0.0],  # predicts 1, conf ~0.965
                           [1.0, 0.0, 0.5],  # predicts 0, conf ~0.506
                           [0.0, 0.0, 9.0],  # predicts 2, conf ~0.9998
                           [0.2, 0.0, 0.0]])  # predicts 0, conf ~0.38
    gold = torch.tensor([1, 0, 0, 2])
    assert ptp_labels(logits, gold, 0.9, 0.9).tolist() == [0, 1, 2, 3]


def test_strict_greater_at_the_threshold_exact_confidences():
    # 0.75 and 0.5 are exact binary fractions: equality is really equality here
    confidence = torch.tensor([0.75, 0.75, 0.5, 0.5], dtype=torch.float64)
    correct = torch.tensor([True, False, True, False])
    assert labels_from_confidence(confidence, correct, 0.75, 0.75).tolist() == [1, 3, 1, 3]
    assert labels_from_confidence(confidence, correct, 0.5, 0.5).tolist() == [0, 2, 1, 3]
    below = math.nextafter(0.75, 0.0)
    assert labels_from_confidence(confidence, correct, below, below).tolist() == [0, 2, 1, 3]


def test_strict_greater_at_the_threshold_from_logits():
    # equal logits give a softmax of exactly 1/2 (and 1/4 for four classes), ties predict class 0
    logits = torch.zeros(2, 2)
    gold = torch.tensor([0, 1])  # right, then wrong
    confidence, correct = teacher_confidence(logits, gold)
    assert confidence.tolist() == [0.5, 0.5] and correct.tolist() == [True, False]
    assert ptp_labels(logits, gold, 0.5, 0.5).tolist() == [1, 3]
    below = math.nextafter(0.5, 0.0)
    assert ptp_labels(logits, gold, below, below).tolist() == [0, 2]
    four = torch.zeros(1, 4)
    assert teacher_confidence(four, torch.tensor([0]))[0].item() == 0.25
    assert ptp_labels(four, torch.tensor([3]), 0.9, 0.25).tolist() == [3]


def test_thresholds_are_separate_for_right_and_wrong():
    logits = binary_logits([1.0, -1.0])  # both conf 0.731; gold 0: first right, second wrong
    gold = torch.tensor([0, 0])
    assert ptp_labels(logits, gold, 0.9, 0.6).tolist() == [1, 2]
    assert ptp_labels(logits, gold, 0.6, 0.9).tolist() == [0, 3]


def test_confidence_is_float64_so_confident_teachers_do_not_tie():
    # in float32 both would be exactly 1.0
    confidence, _ = teacher_confidence(torch.tensor([[20.0, 0.0], [25.0, 0.0]]), torch.tensor([0, 0]))
    assert confidence.dtype == torch.float64
    assert confidence[0] < confidence[1] < 1.0


def test_mismatched_inputs_are_refused():
    with pytest.raises(PeakdError, match="--teacher_prediction"):
        ptp_labels(torch.zeros(3, 2), torch.tensor([0, 1]), 0.9, 0.7)
    with pytest.raises(PeakdError, match="--teacher_prediction"):
        ptp_labels(torch.zeros(3), torch.tensor([0, 1, 0]), 0.9, 0.7)


# --- median rule -------------------------------------------------------------------------------

def test_median_thresholds_odd_and_even_groups():
    right = [4.0, 0.5, 2.0, 1.0, 3.0]  # 5 right predictions (gold 0, x > 0)
    wrong = [0.3, 2.5, 1.2, 0.8]  # 4 wrong ones (gold 1, x > 0)
    logits = binary_logits(right + wrong)
    gold = torch.tensor([0] * 5 + [1] * 4)
    t1, t2 = median_thresholds(logits, gold)
    assert t1 == pytest.approx(statistics.median(sigmoid(x) for x in right), rel=1e-12)
    assert t2 == pytest.approx(statistics.median(sigmoid(x) for x in wrong), rel=1e-12)
    assert t1 == pytest.approx(sigmoid(2.0), rel=1e-12)  # the middle one
    assert t2 == pytest.approx((sigmoid(0.8) + sigmoid(1.2)) / 2, rel=1e-12)  # mean of the middle two
    # the middle right prediction sits exactly at t1: not above it, so label 1
    labels = ptp_labels(logits, gold, t1, t2)
    assert labels.tolist() == [0, 1, 1, 1, 0, 3, 2, 2, 3]


def test_median_thresholds_empty_group():
    logits = binary_logits([1.0, 2.0, 3.0])
    t1, t2 = median_thresholds(logits, torch.tensor([0, 0, 0]))  # all right
    assert t1 == pytest.approx(sigmoid(2.0)) and t2 == EMPTY_GROUP_THRESHOLD
    t1, t2 = median_thresholds(logits, torch.tensor([1, 1, 1]))  # all wrong
    assert t1 == EMPTY_GROUP_THRESHOLD and t2 == pytest.approx(sigmoid(2.0))
    assert 0 < EMPTY_GROUP_THRESHOLD < 1


# --- resolve_thresholds ------------------------------------------------------------------------

# logits whose median thresholds differ from every task default
LOGITS = binary_logits([4.0, 0.5, 2.0, 1.0, 3.0, 0.3, 2.5, 1.2, 0.8])
GOLD = torch.tensor([0] * 5 + [1] * 4)
MEDIAN = median_thresholds(LOGITS, GOLD)


@pytest.mark.parametrize("task,expected", [
    ("RTE", (0.80, 0.60)), ("rte", (0.80, 0.60)),
    ("MRPC", (0.95, 0.75)), ("mrpc", (0.95, 0.75)), ("Mrpc", (0.95, 0.75)),
    ("SST-2", (0.98, 0.80)), ("sst-2", (0.98, 0.80)),
    ("QNLI", (0.98, 0.70)), ("qnli", (0.98, 0.70)),
    ("CoLA", (0.95, 0.70)), ("COLA", (0.95, 0.70)),
])
def test_task_defaults(task, expected):
    assert resolve_thresholds(task, None, LOGITS, GOLD) == pytest.approx(expected)
    # defaults do not need the teacher's predictions
    assert resolve_thresholds(task, None, None, None) == pytest.approx(expected)


@pytest.mark.parametrize("task", ["QQP", "qqp", "MNLI", "WNLI", "SNLI"])
def test_tasks_without_defaults_use_the_median(task):
    assert resolve_thresholds(task, None, LOGITS, GOLD) == MEDIAN


@pytest.mark.parametrize("value", ["median", "MEDIAN", " Median "])
def test_median_value_overrides_the_default(value):
    assert resolve_thresholds("MRPC", value, LOGITS, GOLD) == MEDIAN
    assert MEDIAN != pytest.approx((0.95, 0.75))


@pytest.mark.parametrize("value,expected", [
    ("0.9,0.7", (0.9, 0.7)), (" 0.9 , 0.7 ", (0.9, 0.7)), ("0.5,0.99", (0.5, 0.99)),
    ((0.6, 0.4), (0.6, 0.4)),
])
def test_explicit_thresholds(value, expected):
    assert resolve_thresholds("mrpc", value, None, None) == expected
    assert resolve_thresholds("QQP", value, LOGITS, GOLD) == expected


@pytest.mark.parametrize("value", [
    "0,0.5", "1,0.5", "0.5,1.0", "-0.1,0.5", "1.5,0.2", "nan,0.5", "inf,0.5",
    "0.9", "0.9,0.7,0.5", "a,b", "0.9,", "", "mean",
])
def test_bad_threshold_values(value):
    with pytest.raises(PeakdError) as err:
        resolve_thresholds("MRPC", value, LOGITS, GOLD)
    message = str(err.value)
    assert "--ptp_thresholds" in message and "(0, 1)" in message and "\n" not in message


@pytest.mark.parametrize("task", ["STS-B", "sts-b", "Sts-B"])
@pytest.mark.parametrize("value", [None, "median", "0.9,0.7"])
def test_regression_task_is_refused(task, value):
    with pytest.raises(PeakdError, match="PTP needs a classification task.*STS-B"):
        resolve_thresholds(task, value, LOGITS, GOLD)


def test_unknown_task_is_refused():
    with pytest.raises(PeakdError, match="unknown task"):
        resolve_thresholds("MRCP", None, LOGITS, GOLD)


def test_a_bad_threshold_flag_fails_before_model_or_teacher_file_is_read(tmp_path, capsys):
    # neither the model nor the teacher file exists: the flag must be what the error names
    argv = train_args("MRPC", tmp_path / "glue", tmp_path / "no-bert", tmp_path / "out",
                      "--teacher_prediction", tmp_path / "no-teacher.pkl",
                      "--ptp_thresholds", "1.5,0.2")
    expect_error(load_script("PTP").main, argv, capsys, ["--ptp_thresholds", "(0, 1)"],
                 watched=[tmp_path])
