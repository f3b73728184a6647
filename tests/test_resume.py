"""--resume: a run interrupted after a save and resumed ends exactly like one that never stopped
(dropout on), with its logs continued; and the refusals around it."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import utils.pipeline as pipeline
from helpers import load_script, make_glue, make_tiny_bert
from utils import parallel
from utils.train import _TrainingRun

TESTS = Path(__file__).resolve().parent
# results that measure wall-clock time, not what the run computed
TIMINGS = ("train_seconds", "eval_seconds", "train_samples_per_second", "inference_samples_per_second")
# finetune.py in a new process, as a restarted job runs: nothing cached by this test process's
# earlier runs (e.g. a first-call probe drawing random numbers) can hide a divergence
WORKER = f"""
import sys
sys.path[:0] = [{str(TESTS.parent / "src")!r}, {str(TESTS)!r}]
from test_resume import train_and_keep_weights
train_and_keep_weights(sys.argv[2:], sys.argv[1])
"""


@pytest.fixture(scope="module")
def tiny2(tmp_path_factory):
    """Tiny GLUE folders and a 2-layer random BERT (hidden 32, 4 heads, dropout 0.1)."""
    root = tmp_path_factory.mktemp("resume")
    glue = make_glue(root / "glue", tasks=("SST-2",))
    return {"root": root, "glue": glue, "bert": make_tiny_bert(root / "bert", glue, layers=2)}


def finetune_args(world, output_dir, *extra):
    """16 train examples in micro-batches of 3 (2 per optimizer step): 3 steps per epoch, a short
    last micro-batch, and 2.5 epochs, so the run also stops in the middle of an epoch."""
    return ["--task", "SST-2", "--data_dir", str(world["glue"]), "--bert_model",
            str(world["bert"]), "--output_dir", str(output_dir), "--no_cuda",
            "--student_hidden_layers", "2", "--max_seq_length", "24", "--learning_rate", "1e-3",
            "--train_batch_size", "6", "--gradient_accumulation_steps", "2",
            "--eval_batch_size", "8", "--num_train_epochs", "2.5", "--logging_steps", "3",
            *map(str, extra)]


def train_and_keep_weights(argv, weights_file):
    """finetune.py on argv; rank 0 then saves the trained model's state dict to weights_file."""
    inner = pipeline.train

    def keep(model, *args, **kwargs):
        results = inner(model, *args, **kwargs)
        if parallel.is_main():
            torch.save(model.state_dict(), weights_file)
        return results

    pipeline.train = keep
    try:
        return load_script("finetune").main(argv)
    finally:
        pipeline.train = inner


def train_in_new_processes(argv, weights_file, processes=1):
    """train_and_keep_weights in a new process, or under torchrun in `processes` of them; returns
    the run's eval_results.json."""
    launcher = []
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc_per_node", str(processes), "--no-python"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"  # as this test process runs (conftest)
    done = subprocess.run([*launcher, sys.executable, "-c", WORKER, str(weights_file), *argv],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    output_dir = Path(argv[argv.index("--output_dir") + 1])
    return json.loads((output_dir / "eval_results.json").read_text())


def assert_same_weights(a, b, atol=0.0):
    a, b = torch.load(a), torch.load(b)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=0.0, atol=atol), key


def without_timings(results):
    return {k: v for k, v in results.items() if k not in TIMINGS}


class Interrupted(Exception):
    """Stands for a killed job: raised from inside the training loop."""


def crash_after_micro_step(step):
    """Killed during the first micro-batch after optimizer step `step`, gradient half-summed."""
    original = _TrainingRun.micro_step

    def crash(self, *args):
        original(self, *args)
        if self.pos.step == step:
            raise Interrupted

    return "micro_step", crash


def crash_instead_of(method, step):
    """Killed as `method` (save_state, evaluate_dev) starts at step `step`."""
    original = getattr(_TrainingRun, method)

    def crash(self, *args):
        if self.pos.step == step:
            raise Interrupted
        original(self, *args)

    return method, crash


@pytest.mark.parametrize("crash", [crash_after_micro_step(2), crash_after_micro_step(3),
                                   crash_instead_of("save_state", 6),
                                   crash_instead_of("evaluate_dev", 6)],
                         ids=["mid-epoch-mid-accumulation", "after-epoch-end", "saving-mid-epoch",
                              "before-epoch-end-eval"])
def test_resumed_run_ends_exactly_like_an_uninterrupted_one(tiny2, tmp_path, monkeypatch, crash):
    """Loss rows at steps 3, 6, 8 (--logging_steps 3 and each epoch's end), saves at steps 2, 4, 6
    (--save_steps) and after each epoch's evaluation (3, 6, 8). The crashes resume from states
    with a part-summed running loss (2, 4), from an epoch boundary (3), from step 4 after the
    step-6 loss row was written (so the log must be cut back, then continued), and from the
    step-6 --save_steps state taken after epoch 2's last batch but before its evaluation."""
    full = finetune_args(tiny2, tmp_path / "full", "--save_steps", 2)
    expected = train_and_keep_weights(full, tmp_path / "full.pt")

    broken = finetune_args(tiny2, tmp_path / "broken", "--save_steps", 2)
    monkeypatch.setattr(_TrainingRun, *crash)
    with pytest.raises(Interrupted):
        load_script("finetune").main(broken)
    assert not (tmp_path / "broken" / "eval_results.json").exists()
    assert (tmp_path / "broken" / "resume_state.pkl").is_file()
    monkeypatch.undo()

    resumed = train_in_new_processes(broken + ["--resume"], tmp_path / "resumed.pt")

    assert without_timings(resumed) == without_timings(expected)
    assert expected["optimizer_steps"] == 8 and expected["final"]["epoch"] == 3
    assert_same_weights(tmp_path / "full.pt", tmp_path / "resumed.pt")
    for name in ("train_log.csv", "eval_log.csv"):
        assert (tmp_path / "broken" / name).read_text() == (tmp_path / "full" / name).read_text()
    for name in ("BERT.encoder_acc.pkl", "BERT.cls_loss.pkl"):
        assert_same_weights(tmp_path / "full" / name, tmp_path / "broken" / name)
    # a finished run keeps no resume state: it cannot be resumed and would only take space
    assert not (tmp_path / "broken" / "resume_state.pkl").exists()


def test_resume_state_loads_with_weights_only_and_none_follows_the_last_step(tiny2, tmp_path,
                                                                             monkeypatch):
    """Stopped just before its results are written, a 3-step run holds the state saved at step
    2 (--save_steps); the evaluation after its last step wrote none (results() deletes it)."""
    def stop(self):
        raise Interrupted

    monkeypatch.setattr(_TrainingRun, "results", stop)
    for name, steps in (("run", 3), ("two", 2)):
        with pytest.raises(Interrupted):
            load_script("finetune").main(finetune_args(tiny2, tmp_path / name, "--max_steps",
                                                       steps, "--save_steps", 2))
        # header and the one evaluation, after the last step
        assert len((tmp_path / name / "eval_log.csv").read_text().splitlines()) == 2
    state = torch.load(tmp_path / "run" / "resume_state.pkl", weights_only=True)
    assert state["position"]["step"] == 2 and state["optimizer"]["param_groups"][0]["step"] == 2
    assert len(state["ranks"]) == 1 and state["ranks"][0]["rng"]["cpu"].dtype == torch.uint8
    assert not (tmp_path / "two" / "resume_state.pkl").exists()


def run_expecting_error(argv, capsys):
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        load_script("finetune").main(argv)
    assert e.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ")
    return err


def test_resume_refuses_a_finished_run_and_a_folder_without_state(tiny2, tmp_path, capsys):
    done = finetune_args(tiny2, tmp_path / "done", "--max_steps", 1)
    load_script("finetune").main(done)
    assert "holds a finished run" in run_expecting_error(done + ["--resume"], capsys)
    empty = finetune_args(tiny2, tmp_path / "empty", "--resume")
    assert "has no resume_state.pkl" in run_expecting_error(empty, capsys)
    err = run_expecting_error(done + ["--resume", "--overwrite_output_dir"], capsys)
    assert "only one of them" in err


def test_resume_refuses_changed_training_flags(tiny2, tmp_path, monkeypatch, capsys):
    def stop(self):
        raise Interrupted

    monkeypatch.setattr(_TrainingRun, "results", stop)
    argv = finetune_args(tiny2, tmp_path / "run", "--max_steps", 3, "--save_steps", 2)
    with pytest.raises(Interrupted):
        load_script("finetune").main(argv)
    monkeypatch.undo()
    err = run_expecting_error(argv + ["--resume", "--learning_rate", "5e-4"], capsys)
    assert "--learning_rate 0.0005 (was 0.001)" in err
    # evaluation-only flags may change
    load_script("finetune").main(argv + ["--resume", "--eval_batch_size", "4"])
    assert (tmp_path / "run" / "eval_results.json").is_file()


def test_an_eval_step_at_an_epoch_end_is_not_repeated(tiny2, tmp_path):
    """--eval_steps 3 falls on every epoch's last step (3 steps per epoch): one eval each."""
    load_script("finetune").main(finetune_args(tiny2, tmp_path / "run", "--eval_steps", 3))
    with open(tmp_path / "run" / "eval_log.csv", newline="") as f:
        assert [int(row["step"]) for row in csv.DictReader(f)] == [3, 6, 8]


def test_a_run_records_the_code_it_started_with(tiny2, tmp_path, monkeypatch):
    """A checkout that moves on during a long run must not relabel the run with code it did not
    run: the commit is read when training starts."""
    import utils.train as train_module
    now = {"code": "a" * 40}
    monkeypatch.setattr(train_module, "code_version", lambda: now["code"])
    step = _TrainingRun.micro_step

    def commit_meanwhile(self, *args, **kwargs):
        now["code"] = "b" * 40
        return step(self, *args, **kwargs)

    monkeypatch.setattr(_TrainingRun, "micro_step", commit_meanwhile)
    out = tmp_path / "out"
    load_script("finetune").main(finetune_args(tiny2, out, "--num_train_epochs", 1))
    assert json.loads((out / "eval_results.json").read_text())["code"] == "a" * 40
