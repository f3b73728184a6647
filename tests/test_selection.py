"""Checkpoints chosen apart from the reported dev set (--select train_slice), and the released
code's schedule and data order as settings (--no_shuffle, --schedule_epochs,
--schedule_applied_twice, --eval_start_epoch, --select_metric)."""
import csv
import json

import pytest
import torch

from BERT.pytorch_pretrained_bert import BertAdam
from BERT.pytorch_pretrained_bert.optimization import warmup_linear
from helpers import expect_error, load_script, train_args
from utils.features import Features
from utils.selection import SLICE, slice_indices

FINETUNE = load_script("finetune")
PTP = load_script("PTP")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_slice_is_stratified_fixed_and_disjoint():
    labels = torch.tensor([0] * 60 + [1] * 40)
    rest, held = slice_indices(labels, 0.1, seed=0, regression=False)
    assert len(held) == 10 and int(labels[held].sum()) == 4  # 6 of class 0, 4 of class 1
    assert set(rest.tolist()).isdisjoint(held.tolist())
    assert sorted(rest.tolist() + held.tolist()) == list(range(100))
    again, _ = slice_indices(labels, 0.1, seed=0, regression=False)
    assert torch.equal(rest, again)
    other, _ = slice_indices(labels, 0.1, seed=1, regression=False)
    assert not torch.equal(rest, other)
    scores = torch.linspace(0, 5, 50)
    _, held = slice_indices(scores, 0.2, seed=0, regression=True)
    # one per bin of five consecutive scores: spread over the whole range
    assert len(held) == 10 and sorted((held // 5).tolist()) == list(range(10))


def test_train_slice_chooses_and_dev_is_scored_beside_it(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    results = FINETUNE.main(train_args("MRPC", tiny.data, tiny.bert, out, "--select",
                                       "train_slice", "--max_steps", 4, "--eval_steps", 2,
                                       "--select_fraction", 0.25))
    sel = results["selection"]
    assert sel["rule"] == "train_slice" and sel["split"] == SLICE and sel["metric"] == "acc"
    evals = read_csv(out / "eval_log.csv")
    assert {r["split"] for r in evals} == {SLICE, "dev"}
    slice_rows = [r for r in evals if r["split"] == SLICE]
    best = max(slice_rows, key=lambda r: float(r["acc"]))  # the first of the best
    assert results["best_acc"]["step"] == int(best["step"])
    chosen_dev = results["chosen_acc"]["dev"]
    assert chosen_dev["step"] == int(best["step"])  # dev scored at the chosen checkpoint
    dev_rows = [r for r in evals if r["split"] == "dev"]
    assert results["best_by_split"]["dev"]["acc"] == max(float(r["acc"]) for r in dev_rows)
    # the slice (4 of 16 examples) is not trained on: one epoch is 12 examples, 3 steps
    assert results["train_examples_seen"] == 12 and results["optimizer_steps"] == 3
    assert json.loads((out / "args.json").read_text())["select"] == "train_slice"
    # the summary names the split that chose, then dev's score at that checkpoint
    done = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("done:"))
    assert f"; {SLICE} acc {results['best_acc']['acc']:.4f}" in done
    assert f"; dev at it acc {chosen_dev['acc']:.4f}" in done


def test_ptp_labels_the_slice_from_the_teachers_held_out_predictions(tiny, mrpc_teacher,
                                                                      tmp_path):
    out = tmp_path / "ptp"
    results = PTP.main(train_args("MRPC", tiny.data, tiny.bert, out, "--teacher_prediction",
                                  mrpc_teacher.file, "--select", "train_slice",
                                  "--select_fraction", 0.25, "--ptp_thresholds", "median"))
    counts = json.loads((out / "PTP.args.json").read_text())["ptp_label_counts"]
    assert sum(counts["train"]) == 12 and sum(counts[SLICE]) == 4 and sum(counts["dev"]) == 8
    assert results["selection"]["split"] == SLICE


def test_no_shuffle_trains_in_file_order(tiny, tmp_path, monkeypatch):
    seen = []
    real = Features.batch

    def recording(self, index, *a, **k):
        if len(self) == 16:  # the train split (dev has 8)
            seen.append(index.tolist())
        return real(self, index, *a, **k)

    monkeypatch.setattr(Features, "batch", recording)
    FINETUNE.main(train_args("MRPC", tiny.data, tiny.bert, tmp_path / "run", "--no_shuffle",
                             "--max_steps", 4))
    assert seen == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]


def test_the_schedule_applied_twice_and_over_ten_epochs(tiny, tmp_path, monkeypatch):
    """--schedule_epochs 10: t_total = int(16 / 4) x 10 = 40 while 2 epochs (8 steps) train;
    --schedule_applied_twice: each step uses lr x w(s / 40)^2, s = 0, 1, ..."""
    used = []
    real = BertAdam.step

    def recording(self, *a, **k):
        used.append(self.scheduled_lr(self.param_groups[0]))
        return real(self, *a, **k)

    monkeypatch.setattr(BertAdam, "step", recording)
    results = FINETUNE.main(train_args("MRPC", tiny.data, tiny.bert, tmp_path / "run",
                                       "--num_train_epochs", 2, "--max_steps", 100,
                                       "--schedule_epochs", 10, "--schedule_applied_twice"))
    assert results["schedule_steps"] == 40 and results["optimizer_steps"] == 8
    want = [1e-3 * warmup_linear(s / 40, 0.1) ** 2 for s in range(8)]
    assert used == pytest.approx(want, rel=1e-12)


def test_no_evaluation_before_eval_start_epoch(tiny, tmp_path):
    out = tmp_path / "run"
    FINETUNE.main(train_args("MRPC", tiny.data, tiny.bert, out, "--num_train_epochs", 3,
                             "--max_steps", 100, "--eval_steps", 1, "--eval_start_epoch", 2))
    epochs = {int(r["epoch"]) for r in read_csv(out / "eval_log.csv")}
    assert epochs == {2, 3}


def test_a_run_too_short_for_its_eval_start_still_ends_with_one_evaluation(tiny, tmp_path):
    out = tmp_path / "run"
    results = FINETUNE.main(train_args("MRPC", tiny.data, tiny.bert, out,
                                       "--eval_start_epoch", 5))
    assert results["best_acc"] is not None and len(read_csv(out / "eval_log.csv")) == 1


def test_select_metric_f1_chooses_by_f1(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    results = FINETUNE.main(train_args("MRPC", tiny.data, tiny.bert, out, "--select_metric",
                                       "f1", "--max_steps", 4, "--eval_steps", 1))
    evals = [r for r in read_csv(out / "eval_log.csv") if r["split"] == "dev"]
    assert results["selection"]["metric"] == "f1"
    assert results["best_acc"]["f1"] == max(float(r["f1"]) for r in evals)
    expect_error(FINETUNE.main, train_args("MRPC", tiny.data, tiny.bert, tmp_path / "bad",
                                           "--select_metric", "mcc"), capsys,
                 ["--select_metric mcc is not a MRPC metric", "acc, f1"])
