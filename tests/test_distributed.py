"""Several processes: `torchrun --nproc_per_node 2` on the CPU (gloo) trains what one process
trains with the same global batch and seed, and only rank 0 writes."""
import json

import pytest
import torch

from helpers import make_glue, make_tiny_bert
from test_resume import (assert_same_weights, finetune_args, train_and_keep_weights,
                         train_in_new_processes)
from utils import parallel


@pytest.fixture(scope="module")
def no_dropout(tmp_path_factory):
    """Tiny SST-2 and a 2-layer random BERT without dropout: with dropout on, each rank draws its
    own masks for its share of the batch, so N processes cannot match 1 process bit for bit."""
    root = tmp_path_factory.mktemp("ddp")
    glue = make_glue(root / "glue", tasks=("SST-2",))
    bert = make_tiny_bert(root / "bert", glue, layers=2)
    config = json.loads((bert / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (bert / "config.json").write_text(json.dumps(config))
    return {"glue": glue, "bert": bert}


def test_two_processes_match_one_with_the_same_global_batch(no_dropout, tmp_path):
    """Micro-batches of 3 over 16 examples end with a 1-example micro-batch, of which rank 1 gets
    no row: the gradient must still be the global batch's mean (weighted by examples)."""
    one = finetune_args(no_dropout, tmp_path / "one")
    expected = train_and_keep_weights(one, tmp_path / "one.pt")

    got = train_in_new_processes(finetune_args(no_dropout, tmp_path / "two"),
                                 tmp_path / "two.pt", processes=2)
    assert got["processes"] == 2 and expected["processes"] == 1
    for key in ("optimizer_steps", "train_examples_seen"):
        assert got[key] == expected[key]
    for record in ("final", "best_acc", "best_loss"):
        for name, value in expected[record].items():
            assert got[record][name] == pytest.approx(value, abs=1e-4), (record, name)
    assert_same_weights(tmp_path / "one.pt", tmp_path / "two.pt", atol=1e-4)
    # rank 0 alone wrote the logs: one header and the same rows as the 1-process run
    for name in ("train_log.csv", "eval_log.csv"):
        rows = (tmp_path / "two" / name).read_text().splitlines()
        want = (tmp_path / "one" / name).read_text().splitlines()
        assert len(rows) == len(want) and rows[0] == want[0]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_rank_shares_cover_the_batch_and_weight_by_examples(n, monkeypatch):
    index = torch.arange(100, 100 + n)
    parts, weights = [], []
    for rank in range(3):
        monkeypatch.setenv("WORLD_SIZE", "3")
        monkeypatch.setenv("RANK", str(rank))
        part, weight = parallel.share(index)
        parts.append(part)
        weights.append(weight)
    real = [p for p, w in zip(parts, weights) if w > 0]
    assert torch.equal(torch.cat(real), index)
    # DDP divides the summed gradients by 3: the weights make that the mean over the n examples
    per_example = torch.randn(n)
    ranks_mean = sum(w * per_example[p - 100].mean() for p, w in zip(parts, weights)) / 3
    assert ranks_mean == pytest.approx(per_example.mean().item(), abs=1e-6)
