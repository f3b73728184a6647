"""GLUE processors and the task table: tiny TSVs per task, then the genuine shared files."""
from collections import Counter

import pytest

from utils.errors import PeakdError
from utils.glue import TASKS, get_task, read_tsv


def tsv(*cols):
    return "\t".join(cols)


MNLI_HEAD = ("index", "promptID", "pairID", "genre", "sentence1_binary_parse",
             "sentence2_binary_parse", "sentence1_parse", "sentence2_parse", "sentence1", "sentence2")
SNLI_HEAD = ("index", "captionID", "pairID", "sentence1_binary_parse", "sentence2_binary_parse",
             "sentence1_parse", "sentence2_parse", "sentence1", "sentence2")
STSB_HEAD = ("index", "genre", "filename", "year", "old_index", "source1", "source2",
             "sentence1", "sentence2")

# task -> (labelled lines, expected (text_a, text_b, label), test lines, expected test texts),
# in the 2019 GLUE layouts; the labelled lines serve for train and every dev split.
CASES = {
    "CoLA": (
        [tsv("gj04", "1", "", "The sailors rode the breeze."), tsv("gj04", "0", "*", "Bill more smoke.")],
        [("The sailors rode the breeze.", None, "1"), ("Bill more smoke.", None, "0")],
        [tsv("index", "sentence"), tsv("0", "Bill whistled past the house.")],
        [("Bill whistled past the house.", None)],
    ),
    "SST-2": (
        [tsv("sentence", "label"), tsv("a charming journey . ", "1"), tsv("bleak ", "0")],
        [("a charming journey . ", None, "1"), ("bleak ", None, "0")],
        [tsv("index", "sentence"), tsv("0", "uneasy mishmash .")],
        [("uneasy mishmash .", None)],
    ),
    "MRPC": (
        # the BOM and the unbalanced quote are as in GLUE's MRPC files
        ["\ufeff" + tsv("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
         tsv("1", "1355540", "1355592", "He said it doesn't fit.", '"It does not fit.'),
         tsv("0", "2029631", "2029565", "Racicot hated it.", "His wife said so.")],
        [("He said it doesn't fit.", '"It does not fit.', "1"),
         ("Racicot hated it.", "His wife said so.", "0")],
        [tsv("index", "#1 ID", "#2 ID", "#1 String", "#2 String"),
         tsv("0", "1089874", "1089925", "PCCW's chief will report.", "Butcher will report.")],
        [("PCCW's chief will report.", "Butcher will report.")],
    ),
    "QQP": (
        [tsv("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
         tsv("133273", "213221", "213222", "How is math?", "Which math?", "0"),
         tsv("402555", "536040", "536041", "How do I sleep?", "How can I sleep?", "1")],
        [("How is math?", "Which math?", "0"), ("How do I sleep?", "How can I sleep?", "1")],
        [tsv("id", "question1", "question2"), tsv("0", "Why?", "Why not?")],
        [("Why?", "Why not?")],
    ),
    "STS-B": (
        [tsv(*STSB_HEAD, "score"),
         tsv("0", "main-captions", "MSRvid", "2012test", "0001", "none", "none",
             "A plane is taking off.", "An air plane is taking off.", "5.000"),
         tsv("1", "main-captions", "MSRvid", "2012test", "0004", "none", "none",
             "A man plays.", "A man sings.", "0.8")],
        [("A plane is taking off.", "An air plane is taking off.", 5.0),
         ("A man plays.", "A man sings.", 0.8)],
        [tsv(*STSB_HEAD),
         tsv("0", "main-news", "headlines", "2015", "0001", "none", "none", "Up.", "Down.")],
        [("Up.", "Down.")],
    ),
    "MNLI": (
        [tsv(*MNLI_HEAD, "label1", "gold_label"),
         tsv("0", "31193", "31193n", "government", "( ( x ) )", "( y )", "(ROOT x)", "(ROOT y)",
             "Conceptually cream skimming.", "Product and geography.", "neutral", "neutral"),
         tsv("1", "101457", "101457e", "telephone", "( x )", "( y )", "(ROOT x)", "(ROOT y)",
             "you know during the season", "You lose the things.", "entailment", "contradiction")],
        [("Conceptually cream skimming.", "Product and geography.", "neutral"),
         ("you know during the season", "You lose the things.", "contradiction")],
        [tsv(*MNLI_HEAD),
         tsv("0", "31193", "31193n", "fiction", "( x )", "( y )", "(ROOT x)", "(ROOT y)",
             "Hierbas, ans seco.", "Hierbas is a name.")],
        [("Hierbas, ans seco.", "Hierbas is a name.")],
    ),
    "QNLI": (
        [tsv("index", "question", "sentence", "label"),
         tsv("0", "When?", "In 1990.", "entailment"), tsv("1", "Who?", "Nobody.", "not_entailment")],
        [("When?", "In 1990.", "entailment"), ("Who?", "Nobody.", "not_entailment")],
        [tsv("index", "question", "sentence"), tsv("0", "What?", "That.")],
        [("What?", "That.")],
    ),
    "RTE": (
        [tsv("index", "sentence1", "sentence2", "label"),
         tsv("0", "No weapons found.", "Weapons found.", "not_entailment")],
        [("No weapons found.", "Weapons found.", "not_entailment")],
        [tsv("index", "sentence1", "sentence2"), tsv("0", "Mangla dam.", "A dam.")],
        [("Mangla dam.", "A dam.")],
    ),
    "WNLI": (
        [tsv("index", "sentence1", "sentence2", "label"),
         tsv("0", "I stuck a pin.", "The pin had a hole.", "1")],
        [("I stuck a pin.", "The pin had a hole.", "1")],
        [tsv("index", "sentence1", "sentence2"), tsv("0", "Maude spoke.", "Maude won.")],
        [("Maude spoke.", "Maude won.")],
    ),
    "SNLI": (
        [tsv(*SNLI_HEAD, "label1", "gold_label"),
         tsv("0", "3416050480.jpg#4", "3416050480.jpg#4r1n", "( x )", "( y )", "(ROOT x)",
             "(ROOT y)", "A person on a horse.", "A person is training.", "neutral", "neutral"),
         # no annotator consensus: SNLI's "-" gold label, dropped
         tsv("1", "3416050480.jpg#4", "3416050480.jpg#4r1c", "( x )", "( y )", "(ROOT x)",
             "(ROOT y)", "A person on a horse.", "A person at a diner.", "neutral", "-"),
         tsv("2", "3416050480.jpg#4", "3416050480.jpg#4r1e", "( x )", "( y )", "(ROOT x)",
             "(ROOT y)", "A person on a horse.", "A person is outdoors.", "entailment",
             "entailment")],
        [("A person on a horse.", "A person is training.", "neutral"),
         ("A person on a horse.", "A person is outdoors.", "entailment")],
        [tsv(*SNLI_HEAD, "label1", "gold_label"),
         tsv("0", "2677109430.jpg#1", "2677109430.jpg#1r1n", "( x )", "( y )", "(ROOT x)",
             "(ROOT y)", "This church choir sings.", "The church has cracks.", "neutral",
             "neutral")],
        [("This church choir sings.", "The church has cracks.")],
    ),
}


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_every_task_has_a_case():
    assert {spec.name for spec in TASKS.values()} == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_processor_reads_every_split(tmp_path, name):
    labelled, expected, test_lines, expected_test = CASES[name]
    spec = get_task(name)
    task_dir = tmp_path / spec.dir_name
    task_dir.mkdir()
    for split, file_name in spec.processor.splits.items():
        write_lines(task_dir / file_name, test_lines if split.startswith("test") else labelled)

    for split in spec.processor.splits:
        examples = spec.get_examples(tmp_path, split)
        got = [(e.text_a, e.text_b, e.label) for e in examples]
        if split.startswith("test"):
            assert got == [texts + (None,) for texts in expected_test]
        else:
            assert got == expected
        assert [e.guid for e in examples] == [f"{split}-{i}" for i in range(len(examples))]


def test_mnli_label_is_last_column_whatever_the_width(tmp_path):
    # dev_matched has label1..label5 before gold_label, train only label1
    head = tsv(*MNLI_HEAD, "label1", "label2", "label3", "label4", "label5", "gold_label")
    row = tsv("0", "1", "1n", "fiction", "x", "y", "x", "y", "A.", "B.",
              "neutral", "neutral", "entailment", "neutral", "neutral", "neutral")
    write_lines(tmp_path / "dev_matched.tsv", [head, row])
    [example] = get_task("mnli").processor.get_examples(tmp_path, "dev")
    assert (example.text_a, example.text_b, example.label) == ("A.", "B.", "neutral")


def test_read_tsv_keeps_physical_line_numbers(tmp_path):
    path = write_lines(tmp_path / "x.tsv", ["a\tb", "", 'c\t"d', "e"])
    assert read_tsv(path) == [(1, ["a", "b"]), (3, ["c", '"d']), (4, ["e"])]


@pytest.mark.parametrize("spelling, canonical", [
    ("mrpc", "MRPC"), ("MRPC", "MRPC"), ("Mrpc", "MRPC"), ("sst-2", "SST-2"), ("SST-2", "SST-2"),
    ("sts-b", "STS-B"), ("STS-B", "STS-B"), ("cola", "CoLA"), ("COLA", "CoLA"), ("mnli", "MNLI"),
])
def test_task_names_are_case_insensitive(spelling, canonical):
    assert get_task(spelling).name == canonical


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(PeakdError) as err:
        get_task("mrcp")
    message = str(err.value)
    assert "'mrcp'" in message and "--task" in message
    for spec in TASKS.values():
        assert spec.name in message
    assert "\n" not in message


def test_task_table():
    assert all(key == spec.name.lower() for key, spec in TASKS.items())
    for spec in TASKS.values():
        assert set(spec.dev_splits) <= set(spec.processor.splits)
        assert spec.main_metric in spec.metric_names
        assert spec.labels == spec.processor.labels
        assert spec.dir_name == spec.name
    thresholds = {spec.name: spec.ptp_thresholds for spec in TASKS.values()}
    assert thresholds == {"RTE": (0.80, 0.60), "MRPC": (0.95, 0.75), "SST-2": (0.98, 0.80),
                          "QNLI": (0.98, 0.70), "CoLA": (0.95, 0.70), "QQP": None,
                          "STS-B": None, "MNLI": None, "WNLI": None, "SNLI": None}
    main = {spec.name: spec.main_metric for spec in TASKS.values()}
    assert main["CoLA"] == "mcc" and main["STS-B"] == "corr" and main["MRPC"] == "acc"
    assert get_task("mnli").dev_splits == ("dev", "dev_mismatched")
    assert get_task("sts-b").output_mode == "regression" and get_task("sts-b").num_labels == 1
    assert get_task("mnli").num_labels == 3 and get_task("mrpc").num_labels == 2
    assert get_task("rte").labels == ("entailment", "not_entailment")
    assert get_task("cola").output_mode == "classification"


def test_missing_file_says_which_and_what_to_do(tmp_path):
    with pytest.raises(PeakdError) as err:
        get_task("MRPC").get_examples(tmp_path, "dev")
    message = str(err.value)
    assert str(tmp_path / "MRPC" / "dev.tsv") in message
    assert "bash preprocess.sh" in message and "--data_dir" in message


def test_unknown_split(tmp_path):
    with pytest.raises(PeakdError, match="dev_mismatched"):
        get_task("MNLI").get_examples(tmp_path, "validation")


@pytest.mark.parametrize("task, lines, bad_line, problem", [
    ("MRPC", [tsv("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
              tsv("1", "1", "2", "A.", "B."), tsv("0", "3", "4", "C.")], 3, "4 tab-separated"),
    ("SST-2", [tsv("sentence", "label"), "", tsv("good", "2")], 3, "label '2'"),
    ("CoLA", [tsv("src", "label", "", "sentence")], 1, "label 'label'"),
    ("RTE", [tsv("index", "sentence1", "sentence2", "label"), tsv("0", "A.", "B.")], 2,
     "expected at least 4"),
    ("STS-B", [tsv(*STSB_HEAD, "score"), tsv("0", "g", "f", "y", "o", "s", "s", "A.", "B.", "five")],
     2, "score 'five'"),
    ("STS-B", [tsv(*STSB_HEAD, "score"), tsv("0", "g", "f", "y", "o", "s", "s", "A.", "B.", "nan")],
     2, "score 'nan'"),
])
def test_malformed_row_names_file_and_line(tmp_path, task, lines, bad_line, problem):
    path = write_lines(tmp_path / "train.tsv", lines)
    with pytest.raises(PeakdError) as err:
        get_task(task).processor.get_examples(tmp_path, "train")
    message = str(err.value)
    assert f"{path}:{bad_line}:" in message and problem in message
    assert "\n" not in message


# the genuine GLUE files beside the project


def test_genuine_mrpc(shared_glue):
    mrpc = get_task("MRPC")
    train, dev, test = (mrpc.get_examples(shared_glue, s) for s in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (3668, 408, 1725)
    assert dev[0].label == "1"
    assert dev[0].text_a.startswith("He said the foodservice pie business")
    # QUOTE_NONE: the unbalanced quote stays and does not swallow the following lines
    assert dev[0].text_b == '"The foodservice pie business does not fit our long-term growth strategy.'
    assert Counter(e.label for e in train) == {"1": 2474, "0": 1194}
    assert all(e.label is None and e.text_b for e in test)


def test_genuine_sst2(shared_glue):
    sst2 = get_task("sst-2")
    dev, test = sst2.get_examples(shared_glue, "dev"), sst2.get_examples(shared_glue, "test")
    assert (len(dev), len(test)) == (872, 1821)
    assert dev[0].text_a == "it 's a charming and often affecting journey . " and dev[0].label == "1"
    assert test[0].text_a == "uneasy mishmash of styles and genres ." and test[0].label is None
    assert len(sst2.get_examples(shared_glue, "train")) == 67349


def test_genuine_cola(shared_glue):
    cola = get_task("cola")
    train, dev, test = (cola.get_examples(shared_glue, s) for s in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (8551, 1043, 1063)
    assert Counter(e.label for e in dev) == {"1": 721, "0": 322}
    assert dev[0].text_a == "The sailors rode the breeze clear of the rocks."
    assert test[0].text_a == "Bill whistled past the house." and test[0].label is None
