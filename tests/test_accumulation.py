"""Gradient accumulation weighs every example the same: k micro-batches give the gradient of one
batch of the same examples, also when the epoch ends in a short accumulation window."""
import json
import shutil

import pytest
import torch

from BERT.pytorch_pretrained_bert.optimization import BertAdam
from helpers import load_script, train_args

FINETUNE = load_script("finetune")


@pytest.fixture(scope="module")
def no_dropout_bert(tiny, tmp_path_factory):
    """The tiny BERT without dropout, so that both runs compute the same function."""
    bert = shutil.copytree(tiny.bert, tmp_path_factory.mktemp("nodrop") / "bert")
    config = json.loads((bert / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (bert / "config.json").write_text(json.dumps(config))
    return bert


def first_step_gradients(tiny, bert, data, out, accumulation, monkeypatch):
    """The gradients BertAdam sees at the first optimizer step of a batch-6 run."""
    seen = []
    step = BertAdam.step

    def recording_step(self, *args, **kwargs):
        if not seen:
            seen.extend(p.grad.clone() for g in self.param_groups for p in g["params"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(BertAdam, "step", recording_step)
    FINETUNE.main(train_args("SST-2", data, bert, out, "--student_hidden_layers", 2,
                             "--train_batch_size", 6, "--gradient_accumulation_steps",
                             accumulation, "--max_steps", 1))
    return seen


# examples: 6 = three micro-batches of 2 (a full window); 5 = micro-batches of 2, 2 and 1
# (unequal sizes); 4 = two micro-batches of 2 (fewer micro-batches than the window holds)
@pytest.mark.parametrize("examples", [6, 5, 4])
def test_accumulated_gradient_equals_one_batch(examples, tiny, no_dropout_bert, tmp_path,
                                               monkeypatch):
    data = tmp_path / "glue"
    (data / "SST-2").mkdir(parents=True)
    rows = (tiny.data / "SST-2" / "train.tsv").read_text(encoding="utf-8").splitlines()
    (data / "SST-2" / "train.tsv").write_text("\n".join(rows[:examples + 1]) + "\n")
    shutil.copy(tiny.data / "SST-2" / "dev.tsv", data / "SST-2" / "dev.tsv")
    one = first_step_gradients(tiny, no_dropout_bert, data, tmp_path / "one", 1, monkeypatch)
    accumulated = first_step_gradients(tiny, no_dropout_bert, data, tmp_path / "three", 3,
                                       monkeypatch)
    assert len(one) == len(accumulated) > 0
    assert any(g.abs().max() > 1e-4 for g in one)  # the comparison is not between zeros
    for a, b in zip(one, accumulated):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)
