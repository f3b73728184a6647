"""The demo's embedded default (generated SST-2 task, never-pretrained BERT) and its driver."""
import importlib
import json
import random
import subprocess
import sys

import pytest
import torch

from BERT.pytorch_pretrained_bert import (BertForSequenceClassification, BertModel, BertTokenizer,
                                          count_parameters, load_config)
import demo
from utils import demo_data
from utils.demo_data import (AMBIGUOUS, CONNECTORS, INFO_NAME, MAX_WORDS, MIN_WORDS, MODEL_FILES,
                             NEGATIVE, POSITIVE, SPLIT_FILES, demo_sentence, make_demo_bert,
                             make_demo_task, positive_probability, read_info)
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
        assert MIN_WORDS <= len(example.text_a.split()) <= MAX_WORDS


@pytest.mark.parametrize("sentence, probability", [
    ("the plot was good but the cast was dull .", 0.0),
    ("the plot was good although the cast was dull .", 1.0),
    ("the plot was not good but the cast was never dull .", 1.0),
    ("in the end , the plot was not very good although the cast was funny .", 0.0),
    ("my film is bad and the music was not great with my friends .", 0.0),
    ("the plot was good but the cast was okay at the festival .", AMBIGUOUS["okay"]),
    ("the plot was good but the cast was not okay .", 1 - AMBIGUOUS["okay"]),
    ("the plot was uneven although the cast was great .", AMBIGUOUS["uneven"]),
])
def test_the_label_rule(sentence, probability):
    """The connector picks the clause, a negation flips it, an ambiguous adjective is a coin."""
    assert positive_probability(sentence) == pytest.approx(probability)


def clause_polarities(sentence):
    """Each clause's polarity read off its words: its clear adjective's, flipped by a negation
    (None for an ambiguous one)."""
    words = sentence.split()
    cut = next(i for i, w in enumerate(words) if w in CONNECTORS)
    out = []
    for clause in (words[:cut], words[cut + 1:]):
        adjective = [w for w in clause if w in POSITIVE or w in NEGATIVE or w in AMBIGUOUS][0]
        negated = "not" in clause or "never" in clause
        out.append(None if adjective in AMBIGUOUS else int((adjective in POSITIVE) != negated))
    return words[cut], out


def test_generated_labels_follow_the_rule_without_noise():
    rng = random.Random(3)
    seen = {c: 0 for c in CONNECTORS}
    drawn = []
    for _ in range(3000):
        sentence, label = demo_sentence(rng)
        connector, (first, second) = clause_polarities(sentence)
        seen[connector] += 1
        deciding = second if connector == "but" else first
        if deciding is None:
            drawn.append((positive_probability(sentence), label))
        else:
            # a clear deciding clause fixes the label: there is no label noise
            assert label == deciding, sentence
        if connector == "and":
            assert first == second is not None, sentence
    assert all(n > 800 for n in seen.values())
    # the ambiguous clauses are a few percent, and their labels are drawn with their probability
    assert 0.02 < len(drawn) / 3000 < 0.1
    assert abs(sum(label for _, label in drawn) - sum(p for p, _ in drawn)) < 0.2 * len(drawn)


def test_written_labels_are_balanced_and_follow_the_rule(tmp_path):
    task_dir = make_demo_task(tmp_path, seed=0)
    for split, size in (("train", 2000), ("dev", 500)):
        rows = [line.split("\t") for line in
                (task_dir / f"{split}.tsv").read_text().splitlines()[1:]]
        assert len(rows) == size
        assert 0.4 < sum(int(label) for _, label in rows) / len(rows) < 0.6
        assert all(int(label) == positive_probability(s) for s, label in rows
                   if positive_probability(s) in (0.0, 1.0))


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
    assert [s.script for s in stages] == ["finetune.py", "save_teacher_outputs.py", "PTP.py"] + [
        "finetune.py"] * 5
    parsed = {}
    for stage in stages:
        script = importlib.import_module(stage.script.removesuffix(".py"))
        parsed[stage.name] = args = script.build_parser().parse_args(stage.args)
        assert args.task == "SST-2" and args.no_cuda
        assert stage.command()[:2] == [sys.executable, str(demo.SRC_DIR / stage.script)]
    assert parsed["teacher"].student_hidden_layers == demo.TEACHER_LAYERS
    students = ["student_ft", "student_kd", "student_pkd", "student_sps_pkd", "peakd"]
    assert [(parsed[n].train_type, parsed[n].model_type) for n in students] == [
        ("ft", "Original"), ("kd", "Original"), ("pkd", "Original"), ("pkd", "SPS"),
        ("pkd", "SPS")]
    for name in students:
        args = parsed[name]
        # the students differ only in what the table says: same depth, budget and seed
        assert args.student_hidden_layers == demo.STUDENT_LAYERS
        assert (args.num_train_epochs, args.learning_rate, args.train_seed) == (
            float(demo.STUDENT_EPOCHS), parsed["student_ft"].learning_rate, 3)
        assert args.teacher_prediction == (None if name == "student_ft" else str(teacher_file))
        assert args.load_model_dir == (str(tmp_path / "ptp" / "PTP.encoder_loss.pkl")
                                       if name == "peakd" else None)
        assert args.output_dir == str(tmp_path / name)


def fake_results(folder, acc, layers, seconds, prefix="BERT"):
    folder.mkdir(parents=True, exist_ok=True)
    name = "eval_results.json" if prefix == "BERT" else f"{prefix}.eval_results.json"
    (folder / name).write_text(json.dumps({
        "best_acc": {"acc": acc}, "final": {"acc": 0.0}, "main_metric": "acc",
        "num_parameters": 1000 * layers, "effective_layers": layers,
        "train_seconds": seconds}))


def test_the_table_has_a_row_per_model_and_the_measured_differences(tmp_path):
    fake_results(tmp_path / "teacher", 0.9, 4, 40.0)
    fake_results(tmp_path / "ptp", 0.5, 4, 7.0, prefix="PTP")
    accs = {"student_ft": 0.8, "student_kd": 0.85, "student_pkd": 0.85, "student_sps_pkd": 0.7,
            "peakd": 0.75}
    for name, acc in accs.items():
        fake_results(tmp_path / name, acc, 4 if "sps" in name or name == "peakd" else 2, 10.0)
    rows = demo.table_rows(tmp_path)
    assert [r[0] for r in rows] == ["teacher", "ft", "KD", "PKD", "SPS + PKD",
                                    "PTP + SPS + PKD (PeaKD)"]
    assert [r[2] for r in rows] == [0.9, 0.8, 0.85, 0.85, 0.7, 0.75]
    assert [r[4] for r in rows] == [4, 2, 2, 2, 4, 4]
    # the PeaKD student's time includes its PTP run
    assert [r[5] for r in rows] == [40.0, 10.0, 10.0, 10.0, 10.0, 17.0]
    lines = demo.format_table(rows)
    assert len(lines) == 7
    # each difference is printed as measured, a loss as a loss
    assert [line.split()[-4] if i > 1 else None for i, line in enumerate(lines)][2:] == [
        "-0.1000", "+0.0500", "+0.0000", "-0.1500", "+0.0500"]


def test_demo_flags_and_default_work_dir():
    args = demo.build_parser().parse_args([])
    assert args.work_dir == str(demo.DEFAULT_WORK_DIR) and not args.force and args.seed == 0
    assert demo.DEFAULT_WORK_DIR == demo.SRC_DIR.parent / "demo"


def test_a_plain_make_runs_the_demo():
    """The demo is the Makefile's default goal (`make -n` prints, runs nothing)."""
    out = subprocess.run(["make", "-n", "--no-print-directory", "-C", str(demo.SRC_DIR.parent)],
                         capture_output=True, text=True, check=True).stdout
    assert "src/demo.py" in out.strip().splitlines()[-1]


def test_a_failed_step_stops_the_demo_with_its_exit_status(tmp_path, monkeypatch, capsys):
    """Each step runs as its own (forked) process: a step that fails ends the demo with that
    step's exit status and a line naming it, and the next step does not run."""
    plan = demo.plan

    def failing_first(work, *args):
        stages = plan(work, *args)
        bad = demo.Stage("teacher", "finetune.py", ["--task", "NOPE", "--output_dir",
                                                     str(work / "bad")], work / "never", ())
        return [bad] + stages[1:]

    monkeypatch.setattr(demo, "plan", failing_first)
    monkeypatch.setattr(demo, "make_demo_bert", lambda *a, **k: None)
    with pytest.raises(SystemExit) as e:
        demo.main(["--work_dir", str(tmp_path)])
    assert e.value.code == 1  # finetune.py refuses the task name
    err = capsys.readouterr().err
    assert "error: demo step 'teacher' failed (exit 1)" in err
    assert not (tmp_path / "teacher_outputs").exists() and not (tmp_path / "bad").exists()
