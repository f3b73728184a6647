"""--resume: a run interrupted after a save and resumed ends exactly like one that never stopped
(dropout on), with its logs continued; and the refusals around it."""
import json

import pytest
import torch

import utils.pipeline as pipeline
from helpers import load_script, make_glue, make_tiny_bert
from utils import parallel
from utils.train import _TrainingRun

# results that measure wall-clock time, not what the run computed
TIMINGS = ("train_seconds", "eval_seconds", "train_samples_per_second")


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
            "--eval_batch_size", "8", "--num_train_epochs", "2.5", "--logging_steps", "1",
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


def assert_same_weights(a, b, atol=0.0):
    a, b = torch.load(a), torch.load(b)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=0.0, atol=atol), key


def without_timings(results):
    return {k: v for k, v in results.items() if k not in TIMINGS}


class Interrupted(Exception):
    """Stands for a killed job: raised from inside the training loop."""


@pytest.mark.parametrize("crash_step", [3, 5], ids=["after-epoch-end-save", "mid-epoch"])
def test_resumed_run_ends_exactly_like_an_uninterrupted_one(tiny2, tmp_path, monkeypatch,
                                                            crash_step):
    """Saves happen at steps 2, 4, 6 (--save_steps) and at each epoch end (3, 6, 8). The crash
    comes one micro-batch after step `crash_step`, so a log row written after the last save
    (step 5 -> saved at 4) and a half-accumulated gradient are lost and must be redone."""
    full = finetune_args(tiny2, tmp_path / "full", "--save_steps", 2)
    expected = train_and_keep_weights(full, tmp_path / "full.pt")

    broken = finetune_args(tiny2, tmp_path / "broken", "--save_steps", 2)
    micro_step = _TrainingRun.micro_step

    def crash(self, index, boundary):
        micro_step(self, index, boundary)
        if self.pos.step == crash_step:
            raise Interrupted

    monkeypatch.setattr(_TrainingRun, "micro_step", crash)
    with pytest.raises(Interrupted):
        load_script("finetune").main(broken)
    assert not (tmp_path / "broken" / "eval_results.json").exists()
    assert (tmp_path / "broken" / "resume_state.pkl").is_file()
    monkeypatch.setattr(_TrainingRun, "micro_step", micro_step)

    resumed = train_and_keep_weights(broken + ["--resume"], tmp_path / "resumed.pt")

    assert without_timings(resumed) == without_timings(expected)
    assert expected["optimizer_steps"] == 8 and expected["final"]["epoch"] == 3
    assert_same_weights(tmp_path / "full.pt", tmp_path / "resumed.pt")
    for name in ("train_log.csv", "eval_log.csv"):
        assert (tmp_path / "broken" / name).read_text() == (tmp_path / "full" / name).read_text()
    for name in ("BERT.encoder_acc.pkl", "BERT.cls_loss.pkl"):
        assert_same_weights(tmp_path / "full" / name, tmp_path / "broken" / name)
    # a finished run keeps no resume state: it cannot be resumed and would only take space
    assert not (tmp_path / "broken" / "resume_state.pkl").exists()
    saved = json.loads((tmp_path / "broken" / "eval_results.json").read_text())
    assert without_timings(saved) == without_timings(expected)


def test_resume_state_loads_with_weights_only(tiny2, tmp_path, monkeypatch):
    def stop(self):
        raise Interrupted

    monkeypatch.setattr(_TrainingRun, "results", stop)
    with pytest.raises(Interrupted):
        load_script("finetune").main(finetune_args(tiny2, tmp_path / "run", "--max_steps", 2))
    state = torch.load(tmp_path / "run" / "resume_state.pkl", weights_only=True)
    assert state["position"]["step"] == 2 and state["optimizer"]["param_groups"][0]["step"] == 2
    assert len(state["ranks"]) == 1 and state["ranks"][0]["rng"]["cpu"].dtype == torch.uint8


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
    argv = finetune_args(tiny2, tmp_path / "run", "--max_steps", 2)
    with pytest.raises(Interrupted):
        load_script("finetune").main(argv)
    monkeypatch.undo()
    err = run_expecting_error(argv + ["--resume", "--learning_rate", "5e-4"], capsys)
    assert "--learning_rate 0.0005 (was 0.001)" in err
    # evaluation-only flags may change
    load_script("finetune").main(argv + ["--resume", "--eval_batch_size", "4"])
    assert (tmp_path / "run" / "eval_results.json").is_file()
