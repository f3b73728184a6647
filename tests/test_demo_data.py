"""The demo's embedded default (generated SST-2 task, never-pretrained BERT) and its driver."""
import importlib
import random
import sys

import pytest
import torch

from BERT.pytorch_pretrained_bert import (BertForSequenceClassification, BertModel, BertTokenizer,
                                          count_parameters, load_config)
import demo
from utils import demo_data
from utils.demo_data import (INFO_NAME, MODEL_FILES, NEGATIONS, NEGATIVE, POSITIVE, SPLIT_FILES,
                             demo_sentence, make_demo_bert, make_demo_task, read_info)
from utils.glue import get_task

SIZES = dict(n_train=60, n_dev=20, n_test=10)
TINY_BERT = dict(hidden=16, layers=2, heads=2, intermediate=32, max_positions=32)


def corpus(task_dir):
    return [task_dir / name for name in SPLIT_FILES]


def file_bytes(folder, names):
    return {name: (folder / name).read_bytes() for name in names}


@pytest.fixture
def built(tmp_path):
    task_dir = make_demo_task(tmp_path / "data", seed=0, **SIZES)
    model_dir = make_demo_bert(tmp_path / "bert", corpus(task_dir), seed=0, **TINY_BERT)
    return task_dir, model_dir


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, built):
    task_dir, model_dir = built
    again = make_demo_task(tmp_path / "again", seed=0, **SIZES)
    again_model = make_demo_bert(tmp_path / "again_bert", corpus(again), seed=0, **TINY_BERT)
    other = make_demo_task(tmp_path / "other", seed=1, **SIZES)
    other_model = make_demo_bert(tmp_path / "other_bert", corpus(task_dir), seed=1, **TINY_BERT)
    names = SPLIT_FILES + (INFO_NAME,)
    assert file_bytes(again, names) == file_bytes(task_dir, names)
    assert file_bytes(again_model, MODEL_FILES) == file_bytes(model_dir, MODEL_FILES)
    assert all((other / n).read_bytes() != (task_dir / n).read_bytes() for n in SPLIT_FILES)
    assert ((other_model / "model.safetensors").read_bytes()
            != (model_dir / "model.safetensors").read_bytes())


def test_layout_reads_with_the_sst2_processor(built):
    task_dir, _ = built
    task = get_task("SST-2")
    # the scripts' --data_dir is the folder holding the task's folder
    assert task_dir == task_dir.parent / task.dir_name
    train = task.get_examples(task_dir.parent, "train")
    dev = task.get_examples(task_dir.parent, "dev")
    test = task.get_examples(task_dir.parent, "test")
    assert (len(train), len(dev), len(test)) == (60, 20, 10)
    assert {e.label for e in train} == {"0", "1"}
    assert all(e.label is None for e in test)
    assert (task_dir / "train.tsv").read_text().splitlines()[0] == "sentence\tlabel"
    assert (task_dir / "test.tsv").read_text().splitlines()[0] == "index\tsentence"
    for example in train + dev + test:
        assert 5 <= len(example.text_a.split()) <= 15


def clean_label(sentence):
    """The label the grammar gives: the adjective's polarity, flipped by a negation."""
    words = sentence.split()
    positive = any(w in POSITIVE for w in words)
    assert positive != any(w in NEGATIVE for w in words)
    return int(positive != any(w in NEGATIONS for w in words))


def test_labels_follow_polarity_and_negation_with_a_little_noise(tmp_path):
    rng = random.Random(3)
    for _ in range(500):
        sentence, label = demo_sentence(rng)
        assert label == clean_label(sentence)
    # the default sizes build in milliseconds, so the noise rate is checked on what is written
    task_dir = make_demo_task(tmp_path, seed=0)
    rows = [line.split("\t") for line in
            (task_dir / "train.tsv").read_text().splitlines()[1:]]
    assert len(rows) == 2000
    flipped = sum(int(label) != clean_label(sentence) for sentence, label in rows) / len(rows)
    assert 0.01 < flipped < 0.06
    assert 0.4 < sum(int(label) for _, label in rows) / len(rows) < 0.6


def test_vocab_covers_every_word_as_one_token(built):
    task_dir, model_dir = built
    vocab = (model_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert vocab[5:] == sorted(set(vocab[5:]))
    assert load_config(model_dir).vocab_size == len(vocab)
    tokenizer = BertTokenizer.from_pretrained(model_dir)
    task = get_task("SST-2")
    for split in ("train", "dev", "test"):
        for example in task.processor.get_examples(task_dir, split):
            tokens = tokenizer.tokenize(example.text_a)
            assert tokens == example.text_a.lower().split()
            assert "[UNK]" not in tokens
    # words the corpus does not hold are not in the vocabulary: it is built from the corpus alone
    assert "index" not in vocab and "sentence" not in vocab


def test_model_dir_loads_and_says_it_was_never_pretrained(built):
    _, model_dir = built
    model = BertModel.from_pretrained(model_dir)
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 16
    classifier = BertForSequenceClassification.from_pretrained(model_dir)
    assert count_parameters(classifier.bert) == count_parameters(model)
    assert "NEVER PRETRAINED" in (model_dir / "README.txt").read_text()
    assert "NEVER PRETRAINED" in read_info(model_dir)["note"]


def test_global_torch_rng_is_left_alone(tmp_path, built):
    task_dir, _ = built
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_demo_bert(tmp_path / "rng_bert", corpus(task_dir), seed=5, **TINY_BERT)
    assert torch.equal(torch.rand(3), expected)


def test_idempotent_unless_forced_or_changed(tmp_path, built):
    task_dir, model_dir = built
    (task_dir / "marker").write_text("kept")
    (model_dir / "marker").write_text("kept")
    assert make_demo_task(tmp_path / "data", seed=0, **SIZES) == task_dir
    assert make_demo_bert(model_dir, corpus(task_dir), seed=0, **TINY_BERT) == model_dir
    assert (task_dir / "marker").exists() and (model_dir / "marker").exists()

    make_demo_task(tmp_path / "data", seed=0, force=True, **SIZES)
    make_demo_bert(model_dir, corpus(task_dir), seed=0, force=True, **TINY_BERT)
    assert not (task_dir / "marker").exists() and not (model_dir / "marker").exists()

    # other parameters are another output: the stale one is replaced without force
    (task_dir / "marker").write_text("stale")
    make_demo_task(tmp_path / "data", seed=0, **dict(SIZES, n_dev=30))
    assert not (task_dir / "marker").exists()
    assert read_info(task_dir)["n_dev"] == 30
    # and a changed corpus gives a new vocabulary, hence a new model
    (model_dir / "marker").write_text("stale")
    make_demo_bert(model_dir, corpus(task_dir), seed=0, **TINY_BERT)
    assert not (model_dir / "marker").exists()
    # nothing temporary is left beside the outputs
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [task_dir.name]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_failed_build_leaves_the_finished_output_untouched(tmp_path, built, monkeypatch):
    task_dir, _ = built
    before = file_bytes(task_dir, SPLIT_FILES)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(demo_data.Path, "write_text", broken)
    with pytest.raises(OSError):
        make_demo_task(tmp_path / "data", seed=0, force=True, **SIZES)
    monkeypatch.undo()
    assert file_bytes(task_dir, SPLIT_FILES) == before
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [task_dir.name]


def test_demo_commands_parse_with_the_scripts_own_parsers(tmp_path):
    """Every flag the demo passes exists in the script it runs (the demo never imports them)."""
    teacher_file = tmp_path / "teacher.pkl"
    stages = demo.plan(tmp_path, tmp_path / "data", tmp_path / "bert", teacher_file, seed=3)
    assert [s.script for s in stages] == ["finetune.py", "save_teacher_outputs.py",
                                          "finetune.py", "PTP.py", "finetune.py"]
    for stage in stages:
        script = importlib.import_module(stage.script.removesuffix(".py"))
        args = script.build_parser().parse_args(stage.args)
        assert args.task == "SST-2" and args.no_cuda
        assert stage.command()[:2] == [sys.executable, str(demo.SRC_DIR / stage.script)]
    teacher, outputs, plain, ptp, peakd = (s.args for s in stages)
    assert "--teacher_prediction" not in plain
    ptp_encoder = tmp_path / "ptp" / "PTP.encoder_loss.pkl"
    assert peakd[peakd.index("--load_model_dir") + 1] == str(ptp_encoder)
    assert peakd[peakd.index("--teacher_prediction") + 1] == str(teacher_file)


def test_demo_flags_and_default_work_dir():
    args = demo.build_parser().parse_args([])
    assert args.work_dir == str(demo.DEFAULT_WORK_DIR) and not args.force and args.seed == 0
    assert demo.DEFAULT_WORK_DIR == demo.SRC_DIR.parent / "demo"
