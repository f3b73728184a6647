"""Safe files: atomic checkpoints and teacher files, pickles that would run code, diverged runs."""
import dataclasses
import math
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch

from BERT.pytorch_pretrained_bert import atomic_write
from helpers import SRC, expect_error, load_script, train_args, tree_digest
from utils import pipeline
from utils.modeling import load_tokenizer, load_trained_run
from utils.pipeline import load_splits
from utils.evaluation import predict

FINETUNE = load_script("finetune")
SAVE_TEACHER_OUTPUTS = load_script("save_teacher_outputs")
STUDENT = ("--student_hidden_layers", 2)


def checkpoints(run_dir):
    return {name: digest for name, digest in tree_digest(run_dir).items()
            if name.endswith(".pkl")}


def assert_loadable_and_finite(run_dir, criterion="acc"):
    model = load_trained_run(run_dir, criterion)[0]
    assert all(torch.isfinite(p).all() for p in model.state_dict().values())


# writes half of what torch.save would on the second save of the resume state (the second
# evaluation), then dies as a killed process does: no cleanup runs
DIE_MID_SAVE = textwrap.dedent("""
    import io, os, sys
    import torch
    sys.path[:0] = [{src!r}, {tests!r}]
    torch.set_num_threads(1)
    real_save = torch.save
    states = []

    def save_half_and_die(obj, f, *args, **kwargs):
        if "resume_state" in str(getattr(f, "name", "")):
            states.append(f.name)
        if len(states) < 2:
            return real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
        f.flush()
        os._exit(17)

    torch.save = save_half_and_die
    from helpers import load_script
    load_script("finetune").main({argv!r})
""")


def test_a_run_killed_mid_save_leaves_the_previous_best_checkpoint_intact(tiny, tmp_path):
    """A run evaluated at every step dies while writing its second resume state: the
    checkpoints and the resume state of the first evaluation are still there, whole, and the
    half-written temporary file goes with the next save of that target."""
    out = tmp_path / "run"
    argv = train_args("SST-2", tiny.data, tiny.bert, out, *STUDENT, "--max_steps", 4,
                      "--eval_steps", 1)
    code = DIE_MID_SAVE.format(src=str(SRC), tests=str(SRC.parent / "tests"), argv=argv)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 17, proc.stderr
    assert {"BERT.encoder_acc.pkl", "BERT.cls_acc.pkl", "resume_state.pkl"} <= \
        set(checkpoints(out))
    assert_loadable_and_finite(out, "acc")
    assert_loadable_and_finite(out, "loss")
    assert torch.load(out / "resume_state.pkl", weights_only=True)["position"]["step"] == 1
    assert [p.name for p in out.glob(".*.tmp*")]
    FINETUNE.main(argv + ["--resume"])
    assert not list(out.glob(".*.tmp*"))


def test_atomic_write_removes_temporaries_of_dead_processes_only(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    target = tmp_path / "x.pkl"
    for pid in (dead, str(os.getppid())):
        (tmp_path / f".x.pkl.tmp{pid}").write_bytes(b"half")
    (tmp_path / f".y.pkl.tmp{dead}").write_bytes(b"other target")
    atomic_write(target, lambda f: f.write(b"whole"))
    assert target.read_bytes() == b"whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f".x.pkl.tmp{os.getppid()}", f".y.pkl.tmp{dead}", "x.pkl"]


def test_a_model_best_by_both_criteria_is_written_once_and_linked(tmp_path, monkeypatch):
    """The loss checkpoint of an evaluation best by both is a hard link to the acc one (one
    write); the next acc-only save replaces the acc files and leaves the loss ones intact;
    where hard links fail, the files are written."""
    from BERT.pytorch_pretrained_bert import BertConfig, BertForSequenceClassification
    from utils.checkpoints import checkpoint_path, save_model_checkpoint

    torch.manual_seed(0)
    config = BertConfig(50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=16)
    model = BertForSequenceClassification(config, num_labels=2)
    writes = []
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f: writes.append(1) or real_save(obj, f))

    def path(part, criterion):
        return checkpoint_path(tmp_path, "BERT", part, criterion)

    save_model_checkpoint(model, tmp_path, "BERT", "acc")
    save_model_checkpoint(model, tmp_path, "BERT", "loss", same_as="acc")
    assert len(writes) == 2  # encoder and classifier, once
    assert all(path(p, "loss").samefile(path(p, "acc")) for p in ("encoder", "cls"))
    first = torch.load(path("encoder", "loss"), weights_only=True)
    with torch.no_grad():
        model.bert.pooler.dense.weight.add_(1.0)
    save_model_checkpoint(model, tmp_path, "BERT", "acc")
    assert not path("encoder", "loss").samefile(path("encoder", "acc"))
    kept = torch.load(path("encoder", "loss"), weights_only=True)
    assert all(torch.equal(kept[k], first[k]) for k in first)
    assert not torch.equal(torch.load(path("encoder", "acc"), weights_only=True)
                           ["pooler.dense.weight"], first["pooler.dense.weight"])

    def no_links(*args):
        raise OSError("no hard links here")

    monkeypatch.setattr(os, "link", no_links)
    writes.clear()
    save_model_checkpoint(model, tmp_path, "BERT", "loss", same_as="acc")
    assert len(writes) == 2 and not path("encoder", "loss").samefile(path("encoder", "acc"))
    assert torch.equal(torch.load(path("encoder", "loss"), weights_only=True)
                       ["pooler.dense.weight"], model.bert.pooler.dense.weight)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_teacher_file_save_that_fails_midway_keeps_the_previous_file(tiny, mrpc_teacher,
                                                                        tmp_path, monkeypatch):
    previous = tmp_path / mrpc_teacher.file.name
    shutil.copyfile(mrpc_teacher.file, previous)
    real_save = torch.save

    def save_half_then_fail(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(f.tell() // 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(SystemExit) as e:  # Ctrl-C: one line, exit 130
        SAVE_TEACHER_OUTPUTS.main(["--task", "MRPC", "--data_dir", str(tiny.data), "--no_cuda",
                                   "--teacher_dir", str(mrpc_teacher.run),
                                   "--output_dir", str(tmp_path)])
    assert e.value.code == 130
    # no half-written temporary file is left beside the intact previous one
    assert sorted(p.name for p in tmp_path.iterdir()) == [previous.name]
    assert previous.read_bytes() == mrpc_teacher.file.read_bytes()


class RunsCode:
    """Unpickling this calls os.system: what a malicious `.pkl` does."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def plant(path, marker, how):
    payload = {"weights": RunsCode(f"touch {marker}")}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    return path


def planted_teacher_file(c):
    return FINETUNE, train_args("MRPC", c.tiny.data, c.tiny.bert, c.tmp / "out", *STUDENT,
                                "--train_type", "kd", "--teacher_prediction", c.planted)


def planted_load_model_dir(c):
    return FINETUNE, train_args("MRPC", c.tiny.data, c.tiny.bert, c.tmp / "out", *STUDENT,
                                "--load_model_dir", c.planted)


def planted_teacher_checkpoint(c):
    run = shutil.copytree(c.teacher.run, c.tmp / "teacher")
    shutil.copyfile(c.planted, run / "BERT.encoder_acc.pkl")
    c.planted = run / "BERT.encoder_acc.pkl"
    return SAVE_TEACHER_OUTPUTS, ["--task", "MRPC", "--data_dir", c.tiny.data, "--no_cuda",
                                  "--teacher_dir", run, "--output_dir", c.tmp]


PLANTED = {"teacher file": planted_teacher_file, "--load_model_dir": planted_load_model_dir,
           "teacher checkpoint": planted_teacher_checkpoint}


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
@pytest.mark.parametrize("where", PLANTED)
def test_a_pickle_that_would_run_code_is_refused_and_never_run(where, how, tiny, mrpc_teacher,
                                                               tmp_path, capsys):
    marker = tmp_path / "code-ran"
    c = SimpleNamespace(tiny=tiny, teacher=mrpc_teacher, tmp=tmp_path,
                        planted=plant(tmp_path / "planted.pkl", marker, how))
    script, argv = PLANTED[where](c)
    expect_error(script.main, argv, capsys, ["refused", str(c.planted)],
                 watched=(tmp_path, tiny.root))
    assert not marker.exists()


def test_a_nan_loss_stops_the_run_and_keeps_the_checkpoints_of_earlier_steps(tiny, tmp_path,
                                                                            capsys, monkeypatch):
    out = tmp_path / "run"
    nan_call, seen = 3, {}
    build_objective = pipeline.build_objective

    def poisoned_build_objective(*args, **kwargs):
        objective = build_objective(*args, **kwargs)

        def objective_turning_nan(outputs, batch):
            seen["calls"] = seen.get("calls", 0) + 1
            loss = objective(outputs, batch)
            if seen["calls"] < nan_call:
                return loss
            # what the disk held before the step whose loss is NaN
            seen.setdefault("before", checkpoints(out))
            return loss * math.nan
        return dataclasses.replace(objective, loss=objective_turning_nan)

    monkeypatch.setattr(pipeline, "build_objective", poisoned_build_objective)
    with pytest.raises(SystemExit) as exit_info:
        FINETUNE.main(train_args("SST-2", tiny.data, tiny.bert, out, *STUDENT,
                                 "--eval_steps", 1, "--max_steps", 4))
    # the progress bar shares stderr, so the error is the end of the last line
    error = capsys.readouterr().err.strip().splitlines()[-1].partition("error: ")[2]
    assert exit_info.value.code == 1
    assert "nan" in error and "--learning_rate" in error
    assert any(name.startswith("BERT.encoder_") for name in seen["before"])
    assert checkpoints(out) == seen["before"]
    assert not (out / "eval_results.json").exists()
    assert_loadable_and_finite(out)


def test_a_diverged_run_saves_no_checkpoint_of_the_diverged_model(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        FINETUNE.main(train_args("MRPC", tiny.data, tiny.bert, out, *STUDENT,
                                 "--learning_rate", "1e10", "--eval_steps", 1, "--max_steps", 6))
    assert exit_info.value.code == 1
    assert "error: " in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (out / "eval_results.json").exists()
    # whatever is left on disk must be a model that still predicts finite numbers
    model, _, run_args, task = load_trained_run(out, "acc")
    tokenizer = load_tokenizer(out)
    _, features = load_splits(task, tiny.data, ("dev",), tokenizer,
                              run_args["max_seq_length"])["dev"]
    assert torch.isfinite(predict(model, features, 8, torch.device("cpu"), nullcontext())).all()
