"""The tokenised-features cache (utils.features.cached_features): the same features as
tokenising, read back without tokenising, and rebuilt when the data file or vocabulary
changes or the file is broken."""
import pytest
import torch

from helpers import make_glue, make_tiny_bert
from utils import features as features_module
from utils.features import FEATURE_CACHE_ENV, cached_features, convert_examples_to_features
from utils.glue import get_task
from utils.modeling import load_tokenizer
from utils.pipeline import load_splits


def same(a, b):
    return all(torch.equal(getattr(a, f), getattr(b, f))
               for f in ("input_ids", "token_type_ids", "lengths", "labels"))


@pytest.fixture
def mrpc(tmp_path):
    glue = make_glue(tmp_path / "glue", tasks=("MRPC",))
    bert = make_tiny_bert(tmp_path / "bert", glue)
    task = get_task("MRPC")
    return glue, task, load_tokenizer(bert)


def no_tokenising(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("tokenised although the cache holds the split")
    monkeypatch.setattr(features_module, "convert_examples_to_features", refuse)


def test_cache_returns_the_tokenised_features_without_tokenising_again(mrpc, tmp_path,
                                                                        monkeypatch):
    glue, task, tokenizer = mrpc
    cache = tmp_path / "cache"
    examples = task.get_examples(glue, "train")
    plain = convert_examples_to_features(examples, tokenizer, 24, task)
    first = cached_features(examples, tokenizer, 24, task, cache)
    assert same(first, plain) and len(list(cache.glob("MRPC-*.pt"))) == 1
    no_tokenising(monkeypatch)
    assert same(cached_features(examples, tokenizer, 24, task, cache), plain)
    # the scripts' loader reads the same file when the environment variable names the folder
    monkeypatch.setenv(FEATURE_CACHE_ENV, str(cache))
    assert same(load_splits(task, glue, ("train",), tokenizer, 24)["train"][1], plain)


def test_a_changed_data_file_length_or_vocab_is_tokenised_again(mrpc, tmp_path):
    glue, task, tokenizer = mrpc
    cache = tmp_path / "cache"
    train = glue / "MRPC" / "train.tsv"
    examples = task.get_examples(glue, "train")
    cached_features(examples, tokenizer, 24, task, cache)
    cached_features(examples, tokenizer, 16, task, cache)
    assert len(list(cache.glob("*.pt"))) == 2
    # one sentence changed, same size: the content decides
    lines = train.read_text().splitlines(keepends=True)
    fields = lines[1].split("\t")
    fields[3] = fields[3].split(" ", 1)[1] + " " + fields[3].split(" ", 1)[0]
    lines[1] = "\t".join(fields)
    train.write_text("".join(lines))
    changed = task.get_examples(glue, "train")
    got = cached_features(changed, tokenizer, 24, task, cache)
    assert same(got, convert_examples_to_features(changed, tokenizer, 24, task))
    assert not torch.equal(got.input_ids[0], cached_features(examples, tokenizer, 24, task,
                                                             cache).input_ids[0])
    assert len(list(cache.glob("*.pt"))) == 3
    tokenizer.vocab["zzzz"] = len(tokenizer.vocab)
    cached_features(changed, tokenizer, 24, task, cache)
    assert len(list(cache.glob("*.pt"))) == 4


def test_a_broken_cache_file_is_rebuilt_and_no_cache_without_a_folder(mrpc, tmp_path,
                                                                       monkeypatch):
    glue, task, tokenizer = mrpc
    cache = tmp_path / "cache"
    examples = task.get_examples(glue, "dev")
    plain = cached_features(examples, tokenizer, 24, task, cache)
    (path,) = cache.glob("*.pt")
    path.write_bytes(path.read_bytes()[:50])
    assert same(cached_features(examples, tokenizer, 24, task, cache), plain)
    assert same(features_module.Features(**torch.load(path, weights_only=True)), plain)
    monkeypatch.delenv(FEATURE_CACHE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert same(cached_features(examples, tokenizer, 24, task), plain)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bert", "cache", "glue"]
