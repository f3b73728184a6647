"""Bad input: every case exits 1 with one `error:` line naming the culprit and writes nothing.

Each case calls a script's main(argv) on the tiny tasks and BERT (conftest `tiny`), on copies it
breaks first; the checks are the exit code, the one stderr line and an unchanged disk.
"""
import shutil

import pytest
import torch

import envs
from helpers import expect_error, load_script, train_args

SCRIPTS = {name: load_script(name) for name in
           ("finetune", "finetune_ER", "PTP", "save_teacher_outputs")}
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


def incomplete_model(c):
    bert = c.bert_copy()
    (bert / "model.safetensors").unlink()
    return "finetune", c.args(bert=bert), ["--bert_model", "incomplete", "weights"]


def truncated_weights(c):
    bert = c.bert_copy()
    blob = (bert / "model.safetensors").read_bytes()
    (bert / "model.safetensors").write_bytes(blob[:len(blob) // 2])
    return "finetune", c.args(bert=bert), ["model.safetensors", "truncated"]


def broken_config(c):
    bert = c.bert_copy()
    (bert / "config.json").write_text('{"hidden_size": 32,', encoding="utf-8")
    return "finetune", c.args(bert=bert), ["config.json"]


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


def teacher_dir_without_config(c):
    run = c.teacher_run_copy()
    (run / "config.json").unlink()
    return "save_teacher_outputs", c.save_outputs(run), [str(run), "config.json"]


CASES = {
    "unknown task": lambda c: ("finetune", c.args(task="MRQC"), ["'MRQC'", "--task", "MRPC"]),
    "missing GLUE folder": lambda c: (
        "finetune", c.args(data=c.tmp / "nowhere"),
        ["nowhere/MRPC/train.tsv", "bash preprocess.sh", "--data_dir"]),
    "missing GLUE file": missing_glue_file,
    "malformed TSV row": malformed_row,
    "unknown label": bad_label,
    "non-numeric score": bad_score,
    "empty split": empty_split,
    "missing model dir": lambda c: ("finetune", c.args(bert=c.tmp / "no-bert"),
                                    ["--bert_model", "no-bert"]),
    "incomplete model dir": incomplete_model,
    "truncated weights": truncated_weights,
    "broken config": broken_config,
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
    "alpha above one": lambda c: ("finetune", c.args("--alpha", 1.5), ["--alpha 1.5", "[0, 1]"]),
    "alpha below zero": lambda c: ("finetune", c.args("--alpha", -0.1), ["--alpha -0.1"]),
    "output dir with a finished run": finished_run,
    "accumulation not dividing the batch": lambda c: (
        "finetune", c.args("--gradient_accumulation_steps", 3),
        ["--train_batch_size 4", "--gradient_accumulation_steps 3"]),
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
    "teacher dir without its config": teacher_dir_without_config,
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
