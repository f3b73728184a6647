"""Bad input: every case exits non-zero with one `error:` line naming the culprit and writes
nothing.

Each case calls a script's main(argv) on the tiny tasks and BERT (conftest `tiny`), on copies it
breaks first; the checks are the exit code, the one stderr line and an unchanged disk. The cases
are grouped by kind: the pipeline's own inputs (data, teacher files, flag combinations), path
kinds, malformed model folders, bad flag values and interruption. The last four run on every
script that has the flag concerned (BASE_ARGV), so a new script inherits them.
"""
import json
import re
import shlex
import shutil

import pytest
import torch

import envs
from helpers import expect_error, interrupt_at, load_script, train_args
from utils.train import _TrainingRun

SCRIPTS = {name: load_script(name) for name in
           ("finetune", "finetune_ER", "PTP", "save_teacher_outputs", "export_hf")}
TRAINING = ("finetune", "finetune_ER", "PTP")
STUDENT = ("--student_hidden_layers", 2)


class Case:
    """What a case builds on: the shared tiny files and a scratch folder of its own."""

    def __init__(self, request, tmp_path):
        self.request, self.tmp = request, tmp_path
        self.tiny = request.getfixturevalue("tiny")
        self.out = tmp_path / "out"

    @property
    def teacher(self):
        return self.request.getfixturevalue("mrpc_teacher")

    def args(self, *extra, task="MRPC", data=None, bert=None):
        return train_args(task, data or self.tiny.data, bert or self.tiny.bert, self.out,
                          *STUDENT, *extra)

    def pkd(self, *extra, teacher_file=None):
        return self.args("--train_type", "pkd", "--teacher_prediction",
                         teacher_file or self.teacher.file, *extra)

    def data_copy(self, task="MRPC"):
        root = self.tmp / "glue"
        shutil.copytree(self.tiny.data / task, root / task)
        return root

    def bert_copy(self):
        return shutil.copytree(self.tiny.bert, self.tmp / "bert")

    def teacher_file(self, change):
        """A copy of the teacher file after `change(record)`."""
        record = torch.load(self.teacher.file, weights_only=True)
        change(record)
        path = self.tmp / self.teacher.file.name
        torch.save(record, path)
        return path

    def teacher_run_copy(self):
        return shutil.copytree(self.teacher.run, self.tmp / "teacher")

    def save_outputs(self, teacher_dir, *extra, task="MRPC"):
        return ["--task", task, "--data_dir", str(self.tiny.data), "--teacher_dir",
                str(teacher_dir), "--output_dir", str(self.tmp), "--no_cuda", *map(str, extra)]


def append_line(path, line):
    """Appends `line` and returns its 1-based line number."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
    return len(path.read_text(encoding="utf-8").splitlines())


def malformed_row(c):
    data = c.data_copy()
    line = append_line(data / "MRPC" / "train.tsv", "1\t1\t2\tonly one sentence")
    return "finetune", c.args(data=data), [f"MRPC/train.tsv:{line}", "columns"]


def bad_label(c):
    data = c.data_copy()
    line = append_line(data / "MRPC" / "dev.tsv", "7\t1\t2\tthe movie was good .\tit was .")
    return "finetune", c.args(data=data), [f"MRPC/dev.tsv:{line}", "'7'"]


def bad_score(c):
    data = c.data_copy("STS-B")
    line = append_line(data / "STS-B" / "train.tsv", "\t".join(["x"] * 9 + ["high"]))
    return "finetune", c.args(task="STS-B", data=data), [f"STS-B/train.tsv:{line}", "'high'"]


def missing_glue_file(c):
    data = c.data_copy()
    (data / "MRPC" / "dev.tsv").unlink()
    return "finetune", c.args(data=data), ["MRPC/dev.tsv", "bash preprocess.sh", "--data_dir"]


def empty_split(c):
    data = c.data_copy()
    path = data / "MRPC" / "train.tsv"
    path.write_text(path.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    return "finetune", c.args(data=data), ["train split", "empty"]


def finished_run(c):
    SCRIPTS["finetune"].main(c.args("--max_steps", 1))
    return "finetune", c.args(), ["--output_dir", "finished run", "--overwrite_output_dir"]


def other_task_teacher(c):
    path = c.teacher_file(lambda r: r.update(task="SST-2"))
    return "finetune", c.pkd(teacher_file=path), [str(path), "SST-2"]


def other_size_teacher(c):
    def drop_one(record):
        record["splits"]["train"]["num_examples"] -= 1
    path = c.teacher_file(drop_one)
    return "finetune", c.pkd(teacher_file=path), [str(path), "15 train examples"]


def other_fingerprint_teacher(c):
    def other_data(record):
        record["splits"]["train"]["fingerprint"] = "0" * 64
    path = c.teacher_file(other_data)
    return "finetune", c.pkd(teacher_file=path), [str(path), "fingerprint"]


def old_schema_teacher(c):
    path = c.teacher_file(lambda r: r.update(schema_version=0))
    return "finetune", c.pkd(teacher_file=path), [str(path), "schema version 0"]


def other_width_teacher(c):
    def narrow(record):
        train = record["splits"]["train"]
        train["layer_cls"] = train["layer_cls"][..., :16].contiguous()
    path = c.teacher_file(narrow)
    return "finetune", c.pkd(teacher_file=path), ["hidden size 16", "32"]


def normal_teacher_for_pkd(c):
    def strip_layers(record):
        record["patient"] = False
        for split in record["splits"].values():
            split.pop("layer_cls")
    path = c.teacher_file(strip_layers)
    return "finetune", c.pkd(teacher_file=path), [str(path), "per-layer", "--no_layer_features"]


def truncated_teacher(c):
    path = c.tmp / c.teacher.file.name
    blob = c.teacher.file.read_bytes()
    path.write_bytes(blob[:len(blob) // 2])
    return "finetune", c.pkd(teacher_file=path), [str(path), "truncated"]


def garbage_teacher(c):
    path = c.tmp / c.teacher.file.name
    # 'h' is pickle's BINGET: the unpickler fails with a bare KeyError
    path.write_bytes(b"hello, this is not a checkpoint\n" * 8)
    return "finetune", c.pkd(teacher_file=path), [str(path), "corrupted"]


def no_default_teacher(c):
    return "finetune", c.args("--train_type", "kd"), ["no teacher outputs", "MRPC",
                                                      "save_teacher_outputs.py"]


def missing_teacher_file(c):
    path = c.tmp / "nowhere.pkl"
    return "finetune", c.pkd(teacher_file=path), [str(path), "does not exist"]


def ptp_thresholds(value):
    def case(c):
        return "PTP", c.args("--teacher_prediction", c.teacher.file, "--ptp_thresholds", value), \
            ["--ptp_thresholds", value, "(0, 1)"]
    return case


def teacher_dir_without_checkpoint(c):
    run = c.teacher_run_copy()
    (run / "BERT.encoder_acc.pkl").unlink()
    return "save_teacher_outputs", c.save_outputs(run), ["BERT.encoder_acc.pkl", "does not exist"]


CASES = {
    "unknown task": lambda c: ("finetune", c.args(task="MRQC"), ["'MRQC'", "--task", "MRPC"]),
    "missing GLUE folder": lambda c: (
        "finetune", c.args(data=c.tmp / "nowhere"),
        ["--data_dir", "nowhere does not exist", "MRPC/train.tsv", "bash preprocess.sh"]),
    "missing GLUE file": missing_glue_file,
    "malformed TSV row": malformed_row,
    "unknown label": bad_label,
    "non-numeric score": bad_score,
    "empty split": empty_split,
    "missing model dir": lambda c: ("finetune", c.args(bert=c.tmp / "no-bert"),
                                    ["--bert_model", "no-bert"]),
    "max_seq_length above positions": lambda c: (
        "finetune", c.args("--max_seq_length", 65), ["--max_seq_length 65", "64 positions"]),
    "student deeper than model": lambda c: (
        "finetune", c.args("--student_hidden_layers", 5),
        ["--student_hidden_layers 5", "4 layers"]),
    "student without layers": lambda c: (
        "finetune", c.args("--student_hidden_layers", 0), ["--student_hidden_layers 0"]),
    "layer_initialization length": lambda c: (
        "finetune", c.args("--layer_initialization", "1,2,3"), ["--layer_initialization 1,2,3"]),
    "layer_initialization range": lambda c: (
        "finetune", c.args("--layer_initialization", "1,5"),
        ["--layer_initialization 1,5", "1..4"]),
    "layer_initialization not numbers": lambda c: (
        "finetune", c.args("--layer_initialization", "first,last"), ["--layer_initialization"]),
    "fc_layer_idx count": lambda c: (
        "finetune", c.pkd("--fc_layer_idx", "1,2"), ["--fc_layer_idx '1,2'", "needs 1"]),
    "fc_layer_idx range": lambda c: (
        "finetune", c.pkd("--fc_layer_idx", "3"), ["--fc_layer_idx '3'", "out of range"]),
    "SPS fc_layer_idx count": lambda c: (
        "finetune_ER", c.pkd("--fc_layer_idx", "0,1"), ["--fc_layer_idx '0,1'", "needs 3"]),
    "teacher of another task": other_task_teacher,
    "teacher of another size": other_size_teacher,
    "teacher of other data": other_fingerprint_teacher,
    "teacher of an old schema": old_schema_teacher,
    "teacher of another width": other_width_teacher,
    "teacher with another max_seq_length": lambda c: (
        "finetune", c.pkd("--max_seq_length", 48), ["--max_seq_length 32", "48"]),
    "pkd with a normal teacher file": normal_teacher_for_pkd,
    "truncated teacher file": truncated_teacher,
    "corrupted teacher file": garbage_teacher,
    "kd without a teacher file": no_default_teacher,
    "missing --teacher_prediction": missing_teacher_file,
    "missing --load_model_dir": lambda c: (
        "finetune", c.args("--load_model_dir", c.tmp / "PTP.encoder_loss.pkl"),
        ["--load_model_dir", "PTP.encoder_loss.pkl", "does not exist"]),
    "PTP on a regression task": lambda c: (
        "PTP", c.args(task="STS-B"), ["PTP", "STS-B", "regression"]),
    "ptp_thresholds zero": ptp_thresholds("0,0.5"),
    "ptp_thresholds one": ptp_thresholds("0.9,1"),
    "ptp_thresholds above one": ptp_thresholds("1.5,0.5"),
    "alpha above one": lambda c: ("finetune", c.pkd("--alpha", 1.5), ["--alpha 1.5", "[0, 1]"]),
    "alpha below zero": lambda c: ("finetune", c.pkd("--alpha", -0.1), ["--alpha -0.1"]),
    "output dir with a finished run": finished_run,
    "accumulation not dividing the batch": lambda c: (
        "finetune", c.args("--gradient_accumulation_steps", 3),
        ["--train_batch_size 4", "--gradient_accumulation_steps 3"]),
    "CUDA graphs with accumulation": lambda c: (
        "finetune", c.args("--compile", "reduce-overhead", "--gradient_accumulation_steps", 2),
        ["--compile reduce-overhead", "--gradient_accumulation_steps 2"]),
    "logging_steps zero": lambda c: ("finetune", c.args("--logging_steps", 0),
                                     ["--logging_steps 0"]),
    "fp16 on the CPU": lambda c: ("finetune", c.args("--fp16"), ["--fp16", "CUDA"]),
    "do_predict without a test file": lambda c: (
        "finetune", c.args("--do_predict"), ["MRPC/test.tsv", "bash preprocess.sh"]),
    "finetune_ER with a plain student": lambda c: (
        "finetune_ER", c.args("--model_type", "Original"), ["finetune_ER.py", "SPS"]),
    "sps_layers range": lambda c: (
        "finetune_ER", c.args("--sps_layers", "1,3"), ["--sps_layers 1,3", "1..2"]),
    "teacher dir that is no run": lambda c: (
        "save_teacher_outputs", c.save_outputs(c.tmp), [str(c.tmp), "args.json"]),
    "teacher dir without its checkpoint": teacher_dir_without_checkpoint,
    "teacher dir of another task": lambda c: (
        "save_teacher_outputs", c.save_outputs(c.teacher.run, task="SST-2"),
        ["--teacher_dir", "MRPC teacher", "SST-2"]),
    "teacher outputs above positions": lambda c: (
        "save_teacher_outputs", c.save_outputs(c.teacher.run, "--max_seq_length", 100),
        ["--max_seq_length 100", "64 positions"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_1_with_one_line_and_writes_nothing(name, request, tmp_path, capsys,
                                                            monkeypatch):
    # the default teacher file and relative paths resolve here, never in src/data/outputs
    monkeypatch.setattr(envs, "OUTPUT_DIR", tmp_path / "outputs")
    c = Case(request, tmp_path)
    script, argv, needles = CASES[name](c)
    expect_error(SCRIPTS[script].main, argv, capsys, needles, watched=(tmp_path, c.tiny.root))
    assert not (tmp_path / "outputs").exists()


def test_overwrite_output_dir_replaces_a_finished_run(request, tmp_path):
    c = Case(request, tmp_path)
    SCRIPTS["finetune"].main(c.args("--max_steps", 1))
    first = (c.out / "eval_results.json").read_text()
    results = SCRIPTS["finetune"].main(c.args("--max_steps", 2, "--overwrite_output_dir"))
    assert results["optimizer_steps"] == 2
    assert (c.out / "eval_results.json").read_text() != first


# --- the cases below run on every script that has the flag concerned ------------------------

def base_argv(c, script):
    """A command line of `script` that runs on the tiny files (the cases change one flag)."""
    # pkd: the train type that reads every distillation flag of the cases
    return {"finetune": c.pkd, "finetune_ER": c.pkd,
            "PTP": lambda: c.args("--teacher_prediction", c.teacher.file),
            "save_teacher_outputs": lambda: c.save_outputs(c.teacher.run),
            "export_hf": lambda: ["--run_dir", c.teacher.run, "--export_dir", c.tmp / "export"],
            }[script]()


BASE_SCRIPTS = ("finetune", "finetune_ER", "PTP", "save_teacher_outputs", "export_hf")


def flags_of(script):
    return {o for a in SCRIPTS[script].build_parser()._actions for o in a.option_strings}


def with_flag(argv, flag, value=None):
    """argv with `flag` set to `value` (replaced when present, else appended)."""
    argv = [str(a) for a in argv]
    if flag in argv:
        i = argv.index(flag)
        return argv[:i + 1] + [str(value)] + argv[i + 2:]
    return argv + [flag] + ([] if value is None else [str(value)])


def a_file(c):
    path = c.tmp / "a-file"
    path.write_text("not a folder\n")
    return path


def tsv_as_folder(c):
    data = c.data_copy()
    (data / "MRPC" / "train.tsv").unlink()
    (data / "MRPC" / "train.tsv").mkdir()
    return data


# name: (flag, value(c), needles(value), extra flags where the script has them)
PATH_KIND_CASES = {
    "output_dir is a file": ("--output_dir", a_file,
                             lambda v: [str(v), "is a file, expected a folder"]),
    "output_dir under a file": ("--output_dir", lambda c: a_file(c) / "run",
                                lambda v: ["--output_dir", "cannot be created", "is a file"]),
    "export_dir is a file": ("--export_dir", a_file,
                             lambda v: [str(v), "is a file, expected a folder"]),
    "export_dir under a file": ("--export_dir", lambda c: a_file(c) / "export",
                                lambda v: ["--export_dir", "is a file"]),
    "data_dir is a file": ("--data_dir", a_file,
                           lambda v: ["--data_dir", str(v), "is a file, expected a folder"]),
    "GLUE file is a folder": ("--data_dir", tsv_as_folder,
                              lambda v: ["MRPC/train.tsv", "is a folder, expected a GLUE TSV"]),
    "bert_model is a file": ("--bert_model", a_file,
                             lambda v: ["--bert_model", str(v), "is a file, expected a model"]),
    "teacher_dir is a file": ("--teacher_dir", a_file,
                              lambda v: ["--teacher_dir", str(v), "is a file, expected a folder"],
                              ("--train_type", "ckd")),  # finetune's reader of the flag
    "run_dir is a file": ("--run_dir", a_file,
                          lambda v: ["--run_dir", str(v), "is a file, expected a folder"]),
    "load_model_dir is a folder": ("--load_model_dir", lambda c: c.tmp,
                                   lambda v: ["--load_model_dir", "is a folder, expected a file"]),
    "teacher_prediction is a folder": ("--teacher_prediction", lambda c: c.tmp,
                                       lambda v: ["--teacher_prediction",
                                                  "is a folder, expected a file"],
                                       ("--train_type", "kd")),
}


def flag_cases(cases):
    return [(script, name) for name, case in cases.items() for script in BASE_SCRIPTS
            if case[0] in flags_of(script)]


def run_flag_case(case, script, c, capsys, tmp_path, code=1):
    flag, value, needles, *extra = case
    v = value(c)
    argv = with_flag(base_argv(c, script), flag, v)
    for i in range(0, len(extra[0]) if extra else 0, 2):
        if extra[0][i] in flags_of(script):
            argv = with_flag(argv, extra[0][i], extra[0][i + 1])
    return expect_error(SCRIPTS[script].main, argv, capsys, needles(v),
                        watched=(tmp_path, c.tiny.root), code=code)


@pytest.fixture
def case(request, tmp_path, monkeypatch):
    # the default teacher file and relative paths resolve here, never in src/data/outputs
    monkeypatch.setattr(envs, "OUTPUT_DIR", tmp_path / "outputs")
    return Case(request, tmp_path)


@pytest.mark.parametrize("script,name", flag_cases(PATH_KIND_CASES))
def test_path_of_the_wrong_kind(script, name, case, capsys, tmp_path):
    run_flag_case(PATH_KIND_CASES[name], script, case, capsys, tmp_path)


def model_folder(c, script):
    """(flag, a copy of the folder the script reads a model from): the pretrained BERT of a
    training script, the run folder of save_teacher_outputs.py and export_hf.py."""
    if script in TRAINING:
        return "--bert_model", c.bert_copy()
    return ("--teacher_dir" if script == "save_teacher_outputs" else "--run_dir",
            c.teacher_run_copy())


def write(name, content):
    def breaker(folder):
        path = folder / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return breaker


def edit_config(change):
    def breaker(folder):
        config = json.loads((folder / "config.json").read_text())
        change(config)
        (folder / "config.json").write_text(json.dumps(config))
    return breaker


def weights(change):
    def breaker(folder):
        path = folder / "model.safetensors"
        path.write_bytes(change(path.read_bytes(), folder))
    return breaker


def without_pooler(blob, folder):
    from safetensors.torch import load, save
    state = load(blob)
    return save({k: v for k, v in state.items() if not k.startswith("pooler.")})


def vocab_with_more_words(folder):
    words = (folder / "vocab.txt").read_text(encoding="utf-8")
    (folder / "vocab.txt").write_text(words + "".join(f"extra{i}\n" for i in range(300)),
                                      encoding="utf-8")


# name: (break(folder), needles, also for run folders)
MALFORMED_MODEL_CASES = {
    "config.json not json": (write("config.json", '{"hidden_size": 32,'), ["config.json"], True),
    "config.json a list": (write("config.json", "[1, 2]"), ["config.json", "not a valid"], True),
    "config.json without vocab_size": (edit_config(lambda c: c.pop("vocab_size")),
                                       ["config.json", "vocab_size"], True),
    "config.json with a text width": (edit_config(lambda c: c.update(hidden_size="wide")),
                                      ["config.json", "not a valid"], True),
    "config.json without config": (lambda f: (f / "config.json").unlink(), ["config"], True),
    "vocab.txt missing": (lambda f: (f / "vocab.txt").unlink(), ["vocab"], True),
    "vocab.txt empty": (write("vocab.txt", ""), ["vocab.txt", "is empty"], True),
    "vocab.txt garbled": (write("vocab.txt", b"\xff\xfe\x00\x81 not text\n" * 20),
                          ["vocab.txt", "is not UTF-8 text"], True),
    "vocab.txt without [CLS]": (write("vocab.txt", "[PAD]\n[UNK]\nthe\n"),
                                ["vocab.txt", "lacks [CLS], [SEP]"], True),
    "vocab.txt larger than the model": (vocab_with_more_words, ["vocab.txt", "vocab_size"], True),
    "tokenizer_config.json garbled": (write("tokenizer_config.json", "{oops"),
                                      ["tokenizer_config.json"], True),
    "weights missing": (lambda f: (f / "model.safetensors").unlink(), ["incomplete", "weights"],
                        False),
    "weights missing keys": (weights(without_pooler), ["does not fit", "pooler.dense.weight"],
                             False),
    "weights truncated": (weights(lambda b, f: b[:len(b) // 2]),
                          ["model.safetensors", "truncated"], False),
    "weights garbled": (weights(lambda b, f: b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}" * 9),
                        ["model.safetensors", "corrupted"], False),
}


@pytest.mark.parametrize("script,name", [(s, n) for n, (_, _, runs) in
                                         MALFORMED_MODEL_CASES.items()
                                         for s in BASE_SCRIPTS if s in TRAINING or runs])
def test_malformed_model_folder(script, name, case, capsys, tmp_path):
    breaker, needles, _ = MALFORMED_MODEL_CASES[name]
    flag, folder = model_folder(case, script)
    breaker(folder)
    argv = with_flag(base_argv(case, script), flag, folder)
    line = expect_error(SCRIPTS[script].main, argv, capsys, needles,
                        watched=(tmp_path, case.tiny.root))
    assert str(folder) in line or flag in line


# name: (flag, value, needles, exit code); ints and floats as typed on a command line
BAD_VALUE_CASES = {
    "learning_rate nan": ("--learning_rate", "nan", ["--learning_rate nan", "finite"], 1),
    "learning_rate inf": ("--learning_rate", "inf", ["--learning_rate inf", "finite"], 1),
    "learning_rate empty": ("--learning_rate", "", ["--learning_rate", "invalid float"], 2),
    "num_train_epochs nan": ("--num_train_epochs", "nan", ["--num_train_epochs nan"], 1),
    "warmup_proportion nan": ("--warmup_proportion", "nan", ["--warmup_proportion nan"], 1),
    "weight_decay negative": ("--weight_decay", "-1", ["--weight_decay -1.0", ">= 0"], 1),
    "alpha empty": ("--alpha", "", ["--alpha", "invalid float value: ''"], 2),
    "alpha nan": ("--alpha", "nan", ["--alpha nan"], 1),
    "T zero": ("--T", "0", ["--T 0.0", "> 0"], 1),
    "T nan": ("--T", "nan", ["--T nan", "finite"], 1),
    "beta nan": ("--beta", "nan", ["--beta nan", "finite"], 1),
    "beta inf": ("--beta", "inf", ["--beta inf", "finite"], 1),
    "negative train_batch_size": ("--train_batch_size", "-4", ["--train_batch_size -4", ">= 1"], 1),
    "zero eval_batch_size": ("--eval_batch_size", "0", ["--eval_batch_size 0", ">= 1"], 1),
    "fractional batch size": ("--train_batch_size", "2.5", ["--train_batch_size",
                                                            "invalid int value"], 2),
    "max_seq_length without room": ("--max_seq_length", "3", ["--max_seq_length 3",
                                                              "no room for text"], 1),
    "saving_criterion_acc nan": ("--saving_criterion_acc", "nan", ["--saving_criterion_acc nan"],
                                 1),
    "swap_prob nan": ("--swap_prob", "nan", ["--swap_prob nan"], 1),
    "empty task": ("--task", "", ["--task is empty"], 1),
    "empty bert_model": ("--bert_model", "", ["--bert_model is empty"], 1),
    "empty output_dir": ("--output_dir", "", ["--output_dir is empty"], 1),
    "empty teacher_dir": ("--teacher_dir", "", ["--teacher_dir is empty"], 1),
    "bad choice": ("--model_type", "sps", ["--model_type", "invalid choice: 'sps'"], 2),
}


@pytest.mark.parametrize("script,name", flag_cases(BAD_VALUE_CASES))
def test_bad_flag_value(script, name, case, capsys, tmp_path):
    flag, value, needles, code = BAD_VALUE_CASES[name]
    run_flag_case((flag, lambda c: value, lambda v: needles), script, case, capsys, tmp_path,
                  code)


@pytest.mark.parametrize("script", BASE_SCRIPTS)
def test_unknown_flag_is_one_line(script, case, capsys, tmp_path):
    expect_error(SCRIPTS[script].main, base_argv(case, script) + ["--learning-rate", "1"],
                 capsys, ["unrecognized arguments: --learning-rate", "--help"],
                 watched=(tmp_path, case.tiny.root), code=2)


# --- accepted but suspicious values: a warning line, and the run goes on ---------------------

WARNING_CASES = {
    "duplicate layer_initialization": ("finetune", ("--layer_initialization", "1,1"),
                                       "--layer_initialization 1,1 names a layer more than once"),
    "duplicate fc_layer_idx": ("finetune_ER", ("--train_type", "pkd", "--fc_layer_idx", "0,0,1"),
                               "--fc_layer_idx 0,0,1 pairs one teacher layer"),
    "short max_seq_length": ("finetune", ("--max_seq_length", "6"),
                             "--max_seq_length 6 leaves 3 word pieces"),
}


@pytest.mark.parametrize("name", WARNING_CASES)
def test_suspicious_value_warns(name, case, capsys):
    script, extra, needle = WARNING_CASES[name]
    argv = case.args()
    if "--train_type" in extra:  # the teacher file only where the train type reads it
        argv = case.args("--teacher_prediction", case.teacher.file)
    for i in range(0, len(extra), 2):
        argv = with_flag(argv, extra[i], extra[i + 1])
    capsys.readouterr()
    assert SCRIPTS[script].main(argv)["optimizer_steps"] == 3
    warnings = [line for line in capsys.readouterr().err.splitlines()
                if line.startswith("warning: ")]
    assert len(warnings) == 1 and needle in warnings[0], warnings


# --- interruption: Ctrl-C is one line, exit 130, and says how to go on -----------------------

def expect_interrupted(main, argv, capsys, needles):
    """Exit 130 and, after the progress bar (closed, so the line starts on its own), one
    `error:` line holding the needles; returns it."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    lines = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 130, lines
    assert lines[-1].startswith("error: "), lines
    assert not any(line.startswith(("error", "Traceback")) for line in lines[:-1]), lines
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])
    return lines[-1]


@pytest.mark.parametrize("script", TRAINING)
def test_ctrl_c_during_training_says_how_to_resume(script, case, capsys, monkeypatch):
    argv = with_flag(with_flag(base_argv(case, script), "--save_steps", 1),
                     "--overwrite_output_dir")
    original = interrupt_at(monkeypatch, 3)
    line = expect_interrupted(SCRIPTS[script].main, argv, capsys,
                              ["interrupted at optimizer step 2",
                               "continue the run with: python"])
    command = shlex.split(line.split("continue the run with: ", 1)[1])
    assert command[-1] == "--resume" and "--overwrite_output_dir" not in command
    monkeypatch.setattr(_TrainingRun, "optimizer_step", original)
    results = SCRIPTS[script].main(command[2:])  # the hint's flags, as the user reruns them
    assert results["optimizer_steps"] == 3


@pytest.mark.parametrize("script", TRAINING)
def test_ctrl_c_before_a_resume_state_says_to_start_again(script, case, capsys, monkeypatch):
    interrupt_at(monkeypatch, 1)
    line = expect_interrupted(SCRIPTS[script].main, base_argv(case, script), capsys,
                              ["interrupted at optimizer step 0", "start again with: python"])
    assert "--resume" not in line


@pytest.mark.parametrize("script", ("save_teacher_outputs", "export_hf"))
def test_ctrl_c_elsewhere_is_one_line_and_writes_nothing(script, case, capsys, monkeypatch,
                                                         tmp_path):
    import utils.checkpoints
    from BERT.pytorch_pretrained_bert import serialization

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    # as the model loads, before anything is written
    monkeypatch.setattr(utils.checkpoints.torch, "load", interrupted)
    monkeypatch.setattr(serialization.torch, "load", interrupted)
    expect_error(SCRIPTS[script].main, base_argv(case, script), capsys,
                 ["interrupted", "rerun the same command"], watched=(tmp_path, case.tiny.root),
                 code=130)
