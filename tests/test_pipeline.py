"""The four scripts chained end to end on tiny data, and each defect of the
released code that this project must not reproduce is a test here (or named where it lives)."""
import csv
import json
import re
from pathlib import Path

import pytest
import torch

import envs
from helpers import load_script, make_glue, make_tiny_bert
import BERT.pytorch_pretrained_bert.linear as fast_linear
from BERT.pytorch_pretrained_bert.optimization import warmup_linear
from utils import runs, teacher_outputs
from utils.allocator import keep_freed_memory
from utils.features import train_batches
from utils.glue import get_task

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("finetune", "save_teacher_outputs", "PTP", "finetune_ER")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny GLUE data, a tiny BERT and an output root shared by the module's runs."""
    root = tmp_path_factory.mktemp("world")
    glue = make_glue(root / "glue")
    bert = make_tiny_bert(root / "bert", glue)
    return {"glue": glue, "bert": bert, "out": root / "outputs"}


@pytest.fixture
def outputs(world, monkeypatch):
    monkeypatch.setattr(envs, "OUTPUT_DIR", world["out"])
    return world["out"]


def common(world, task="MRPC"):
    return ["--task", task, "--data_dir", str(world["glue"]), "--bert_model", str(world["bert"]),
            "--max_seq_length", "24", "--train_batch_size", "4", "--eval_batch_size", "8"]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def pipeline(world):
    """The pipeline's four steps (README: The pipeline) with relative paths, as a user runs them."""
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(envs, "OUTPUT_DIR", world["out"])
    finetune, save, ptp = (load_script(n) for n in ("finetune", "save_teacher_outputs", "PTP"))
    args = common(world)
    teacher = finetune.main(args + ["--train_type", "ft", "--model_type", "Original",
                                    "--student_hidden_layers", "4", "--num_train_epochs", "2",
                                    "--learning_rate", "1e-3", "--output_dir", "run-1"])
    teacher_file = save.main(args[:4] + ["--teacher_dir", "run-1"])
    ptp_results = ptp.main(args + ["--model_type", "SPS", "--student_hidden_layers", "2",
                                   "--num_train_epochs", "1", "--output_dir", "run-1"])
    student = finetune.main(args + ["--train_type", "pkd", "--model_type", "SPS",
                                    "--student_hidden_layers", "2", "--num_train_epochs", "2",
                                    "--load_model_dir", "run-1/PTP.encoder_loss.pkl",
                                    "--output_dir", "run-1/final_results"])
    yield {"teacher": teacher, "teacher_file": teacher_file, "ptp": ptp_results,
           "student": student, "run": world["out"] / "MRPC" / "run-1"}
    monkeypatch.undo()


def test_four_scripts_chain_and_write_the_spec_artifacts(pipeline):
    run = pipeline["run"]
    for name in ("BERT.encoder_acc.pkl", "BERT.encoder_loss.pkl", "BERT.cls_acc.pkl",
                 "BERT.cls_loss.pkl", "args.json", "train_log.csv", "eval_log.csv",
                 "eval_results.json", "PTP.encoder_acc.pkl", "PTP.encoder_loss.pkl",
                 "PTP.cls_acc.pkl", "PTP.cls_loss.pkl"):
        assert (run / name).is_file(), name
    for name in ("BERT.encoder_loss.pkl", "eval_results.json", "args.json"):
        assert (run / "final_results" / name).is_file(), name
    assert pipeline["teacher_file"] == run.parent / "MRPC_patient_kd_teacher_4layer_result_summary.pkl"
    student = json.loads((run / "final_results" / "eval_results.json").read_text())
    assert student["train_type"] == "pkd" and student["effective_layers"] == 4
    assert student["num_parameters"] < pipeline["teacher"]["num_parameters"]
    assert set(student["best_acc"]) >= {"acc", "f1", "acc_and_f1", "loss", "epoch", "step"}
    # the run says which CPU matmul library computed it: a tiny model's layers all take F.linear
    assert student["cpu_linear"] == {"requested": "auto", "train": "mkl", "infer": "mkl"}
    # this process's setting (what it does: tests/test_speed_paths.py)
    assert student["malloc_keeps_freed"] is keep_freed_memory()
    # and on which CPU and torch (float rounding depends on them)
    assert student["machine"] == fast_linear.machine_key()
    assert f"torch {torch.__version__}" in student["machine"]
    # and which code: the commit of this checkout (None only outside a git checkout)
    if (ROOT / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", student["code"]), student["code"]
    assert student["code"] == runs.code_version()


def test_teacher_file_schema(pipeline):
    record = torch.load(pipeline["teacher_file"], weights_only=True)
    assert record["schema_version"] == teacher_outputs.SCHEMA_VERSION
    assert record["task"] == "MRPC" and record["teacher_layers"] == 4 and record["patient"]
    train = record["splits"]["train"]
    n = train["num_examples"]
    assert train["logits"].shape == (n, 2) and train["layer_cls"].shape == (n, 4, 32)
    assert train["pooled"].shape == (n, 32) and train["correct"].dtype == torch.bool
    assert set(record["splits"]) == {"train", "dev"}  # no test.tsv in the fixture


def test_ptp_start_point_gives_a_fresh_task_head(pipeline, world):
    ptp_encoder = torch.load(pipeline["run"] / "PTP.encoder_loss.pkl", weights_only=True)
    ptp_cls = torch.load(pipeline["run"] / "PTP.cls_loss.pkl", weights_only=True)
    assert ptp_cls["weight"].shape[0] == 4  # the 4-way PTP head
    assert set(ptp_encoder) == set(torch.load(pipeline["run"] / "final_results" /
                                              "BERT.encoder_loss.pkl", weights_only=True))


def test_finetune_er_trains_an_sps_student_with_a_partial_second_pass(pipeline, world, outputs):
    er = load_script("finetune_ER")
    res = er.main(common(world) + ["--train_type", "kd", "--student_hidden_layers", "2",
                                   "--sps_layers", "2", "--swap_prob", "0.5", "--max_steps", "3",
                                   "--output_dir", "er"])
    assert res["model_type"] == "SPS" and res["effective_layers"] == 3


# --- the released code's defects (README: Where things are) ----------------------------

def test_scripts_import_without_side_effects_and_follow_the_layout():
    """Defect: PTP.py crashed on import. Every script imports cleanly and does no work."""
    for name in SCRIPTS:
        module = load_script(name)
        assert callable(module.build_parser) and callable(module.main)
        text = (ROOT / "src" / f"{name}.py").read_text()
        assert 'if __name__ == "__main__":\n    main()' in text
        assert not re.search(r"^(from|import) (finetune|PTP|save_teacher_outputs)", text, re.M)


def test_model_type_is_honoured(pipeline):
    """Defect: finetune.py ignored --model_type. The SPS student ran 2k effective layers."""
    assert pipeline["student"]["model_type"] == "SPS"
    assert pipeline["student"]["effective_layers"] == 2 * 2


def test_the_default_teacher_file_is_the_one_the_readers_find(pipeline):
    """Defects: save_teacher_outputs hard-coded CoLA and wrote a name readers did not look for."""
    assert teacher_outputs.find_default("MRPC") == pipeline["teacher_file"]
    assert "MRPC" in pipeline["teacher_file"].name


def test_explicit_flags_win_over_presets(pipeline, world, outputs):
    """Defect: presets silently overrode CLI flags."""
    load_script("finetune").main(common(world) + [
        "--train_type", "pkd", "--student_hidden_layers", "2", "--teacher_prediction",
        str(pipeline["teacher_file"]), "--alpha", "0.3", "--beta", "7", "--max_steps", "2",
        "--output_dir", "flags"])
    saved = json.loads((outputs / "MRPC" / "flags" / "args.json").read_text())
    assert saved["alpha"] == 0.3 and saved["beta"] == 7.0
    assert saved["T"] == 10.0 and saved["normalize_patience"] is True  # the rest from the preset


def test_lr_schedule_applied_once(pipeline):
    """Defect: the LR schedule was applied twice. The logged LR is lr * warmup_linear(t)."""
    args = json.loads((pipeline["run"] / "args.json").read_text())
    results = json.loads((pipeline["run"] / "eval_results.json").read_text())
    t_total = results["optimizer_steps"]
    for row in read_csv(pipeline["run"] / "train_log.csv"):
        step = int(row["step"])
        # the row is written after `step` steps: the next step's LR is logged
        want = args["learning_rate"] * warmup_linear(step / t_total, args["warmup_proportion"])
        assert float(row["lr"]) == pytest.approx(want, rel=1e-6, abs=1e-12)


def test_training_data_is_shuffled_each_epoch():
    """Defect: training data was never shuffled."""
    g = torch.Generator().manual_seed(42)
    first, second = torch.cat(train_batches(50, 8, g)), torch.cat(train_batches(50, 8, g))
    assert sorted(first.tolist()) == list(range(50)) and not torch.equal(first, second)
    assert not torch.equal(first, torch.arange(50))


def test_runs_end_normally_evaluating_from_the_first_epoch_and_saving_by_default(pipeline):
    """Defects: runs ended by raising mid-training; no evaluation in the first epoch; default
    criteria never saved."""
    rows = read_csv(pipeline["run"] / "eval_log.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert pipeline["teacher"]["best_acc"]["epoch"] in (1, 2)
    assert (pipeline["run"] / "BERT.encoder_acc.pkl").is_file()


def test_gradient_accumulation_divides_before_backward(world, outputs):
    """Defect: the loss was divided for accumulation after backward. With dropout off, 2 x 4
    accumulated equals one batch of 8."""
    finetune = load_script("finetune")
    config = json.loads((world["bert"] / "config.json").read_text())
    no_dropout = world["bert"].parent / "bert_no_dropout"
    if not no_dropout.exists():
        no_dropout.mkdir()
        for f in world["bert"].iterdir():
            (no_dropout / f.name).write_bytes(f.read_bytes())
        config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        (no_dropout / "config.json").write_text(json.dumps(config))
    weights = []
    for accum in ("1", "2"):
        args = common(world, "SST-2") + ["--bert_model", str(no_dropout), "--train_batch_size",
                                         "8", "--gradient_accumulation_steps", accum,
                                         "--student_hidden_layers", "2", "--max_steps", "2",
                                         "--output_dir", f"accum{accum}", "--pad_to_max_length"]
        finetune.main(args)
        weights.append(torch.load(outputs / "SST-2" / f"accum{accum}" / "BERT.encoder_loss.pkl",
                                  weights_only=True))
    for key in weights[0]:
        assert torch.allclose(weights[0][key], weights[1][key], atol=1e-5), key


def test_training_evaluates_dev_not_placeholder_test_labels():
    """Defect: the released code evaluated on GLUE test files, whose labels are placeholders."""
    for spec in map(get_task, ("MRPC", "SST-2", "CoLA", "MNLI", "STS-B")):
        assert all(split.startswith("dev") for split in spec.dev_splits)


def test_requirements_list_the_runtime_libraries_and_pin_torch():
    """Defect: requirements listed no torch or numpy."""
    names = {re.split(r"[<>=\s]", line)[0].lower()
             for line in (ROOT / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")}
    assert {"torch", "numpy", "pandas", "tqdm", "requests"} <= names
    assert "torch==" in (ROOT / "requirements.txt").read_text()


def test_preprocess_calls_a_download_script_that_exists():
    """Defect: preprocess.sh called a missing download script."""
    text = (ROOT / "preprocess.sh").read_text()
    scripts = set(re.findall(r"src/data/data_raw/[\w./]+\.py", text))
    assert scripts and all((ROOT / s).is_file() for s in scripts)


def test_regression_task_trains_ft_kd_and_pkd(world, outputs):
    """STS-B: MSE losses, Pearson/Spearman metrics, through teacher outputs to kd and pkd."""
    finetune, save = load_script("finetune"), load_script("save_teacher_outputs")
    args = common(world, "sts-b")
    teacher = finetune.main(args + ["--student_hidden_layers", "4", "--max_steps", "3",
                                    "--output_dir", "stsb-teacher"])
    assert set(teacher["best_acc"]) >= {"pearson", "spearman", "corr", "loss"}
    path = save.main(args[:4] + ["--teacher_dir", "stsb-teacher"])
    record = torch.load(path, weights_only=True)
    assert record["splits"]["train"]["logits"].shape[1] == 1
    assert record["splits"]["train"]["correct"] is None
    for train_type in ("kd", "pkd"):
        res = finetune.main(args + ["--train_type", train_type, "--student_hidden_layers", "2",
                                    "--max_steps", "3", "--output_dir", f"stsb-{train_type}"])
        assert res["main_metric"] == "corr" and res["train_type"] == train_type
