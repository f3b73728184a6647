"""The new-user trial's cases (issue 41), by class: nothing a user has is lost, no traceback, no
misleading message, nothing silently accepted; and what the protections cost a normal run.

Each class runs on every script that has the flag concerned where the case is about a flag.
"""
import json
import math
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import envs
from helpers import (expect_error, interrupt_at, load_script, make_glue, make_tiny_bert,
                     train_args, tree_digest)
from utils import locks

ROOT = Path(__file__).resolve().parents[1]
FINETUNE, PTP, SAVE, EXPORT = (load_script(n) for n in
                               ("finetune", "PTP", "save_teacher_outputs", "export_hf"))
DEMO = load_script("demo")
TRAINING = {"finetune": FINETUNE, "finetune_ER": load_script("finetune_ER"), "PTP": PTP}
STUDENT = ("--student_hidden_layers", 2)


def run_argv(script, tiny, out, mrpc_teacher, *extra):
    """A short run of a training script on the tiny MRPC files."""
    more = ("--teacher_prediction", mrpc_teacher.file) if script == "PTP" else ()
    return train_args("MRPC", tiny.data, tiny.bert, out, *STUDENT, *more, *extra)


# --- data lost ------------------------------------------------------------------------------

@pytest.mark.parametrize("script", TRAINING)
@pytest.mark.parametrize("which", ["bert_model", "data_dir", "task data"])
def test_a_run_never_writes_into_its_input_folders(script, which, tiny, mrpc_teacher, tmp_path,
                                                   capsys):
    """Even with --overwrite_output_dir: the refusal comes before any write."""
    bert = shutil.copytree(tiny.bert, tmp_path / "bert")
    data = shutil.copytree(tiny.data, tmp_path / "glue")
    out = {"bert_model": bert, "data_dir": data, "task data": data / "MRPC"}[which]
    argv = train_args("MRPC", data, bert, out, *STUDENT, "--overwrite_output_dir",
                      *(("--teacher_prediction", mrpc_teacher.file) if script == "PTP" else ()))
    expect_error(TRAINING[script].main, argv, capsys, ["--output_dir", "is the folder of"],
                 watched=(tmp_path,))


def test_a_student_never_writes_into_the_run_it_starts_from(tiny, mrpc_teacher, tmp_path,
                                                           capsys):
    run = shutil.copytree(mrpc_teacher.run, tmp_path / "teacher")
    PTP.main(run_argv("PTP", tiny, run, mrpc_teacher))  # PTP writes beside the teacher: by design
    argv = train_args("MRPC", tiny.data, tiny.bert, run, *STUDENT, "--load_model_dir",
                      run / "PTP.encoder_loss.pkl", "--overwrite_output_dir")
    expect_error(FINETUNE.main, argv, capsys, ["--output_dir", "--load_model_dir"],
                 watched=(tmp_path,))
    live = train_args("MRPC", tiny.data, tiny.bert, run, *STUDENT, "--train_type", "ckd",
                      "--teacher_dir", run, "--overwrite_output_dir")
    expect_error(FINETUNE.main, live, capsys, ["--output_dir", "the teacher's run"],
                 watched=(tmp_path,))


def test_an_overwrite_interrupted_before_the_new_run_starts_leaves_the_old_run_whole(
        tiny, tmp_path, monkeypatch):
    """The old run is set aside, not deleted, until the new one has written its settings; an
    interruption in between puts it back at the next start."""
    from utils import pipeline, runs

    out = tmp_path / "run"
    FINETUNE.main(train_args("MRPC", tiny.data, tiny.bert, out, *STUDENT))
    before = tree_digest(out)

    def dies(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "write_args", dies)
    with pytest.raises(SystemExit):
        FINETUNE.main(train_args("MRPC", tiny.data, tiny.bert, out, *STUDENT,
                                 "--overwrite_output_dir", "--train_seed", 7))
    assert (out / runs.PREVIOUS).is_dir() and not (out / "eval_results.json").exists()
    monkeypatch.undo()
    runs.recover(out)

    def run_files(digest):
        return {k: v for k, v in digest.items() if not k.startswith(".peakd")}
    assert run_files(tree_digest(out)) == run_files(before)


def test_an_overwrite_interrupted_mid_training_leaves_a_new_run_marked_unfinished(
        tiny, tmp_path, capsys, monkeypatch):
    """After the new run has started, the old run's files are gone: the folder never holds the
    old results beside the new settings, and the printed resume command works."""
    out = tmp_path / "run"
    base = train_args("MRPC", tiny.data, tiny.bert, out, *STUDENT, "--max_steps", 4,
                      "--eval_steps", 1)
    FINETUNE.main(base)
    interrupt_at(monkeypatch, 3)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        FINETUNE.main(base + ["--overwrite_output_dir", "--train_seed", "7"])
    assert e.value.code == 130
    assert not (out / "eval_results.json").exists()
    assert json.loads((out / "args.json").read_text())["train_seed"] == 7
    line = capsys.readouterr().err.strip().splitlines()[-1]
    command = line.split("continue the run with: ", 1)[1].split()
    monkeypatch.undo()
    assert "--resume" in command and "--overwrite_output_dir" not in command
    results = FINETUNE.main(command[2:])  # python src/finetune.py ...
    assert results["optimizer_steps"] == 4


def test_a_rerun_never_discards_an_interrupted_run_without_being_told(tiny, tmp_path, capsys,
                                                                     monkeypatch):
    out = tmp_path / "run"
    argv = train_args("MRPC", tiny.data, tiny.bert, out, *STUDENT, "--max_steps", 4,
                      "--eval_steps", 1)
    interrupt_at(monkeypatch, 3)
    with pytest.raises(SystemExit):
        FINETUNE.main(argv)
    monkeypatch.undo()
    expect_error(FINETUNE.main, argv, capsys, ["holds an interrupted run", "--resume",
                                               "--overwrite_output_dir"], watched=(out,))
    assert FINETUNE.main(argv + ["--overwrite_output_dir"])["optimizer_steps"] == 4


def _hold(folder, ready, release):
    with locks.folder_lock(folder, "--output_dir"):
        ready.set()
        release.wait(30)


@pytest.mark.parametrize("script", TRAINING)
def test_two_runs_never_share_a_folder(script, tiny, mrpc_teacher, tmp_path, capsys):
    """A second writer stops at once, writes nothing and names the holder's pid."""
    out = tmp_path / "run"
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(out, ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        expect_error(TRAINING[script].main, run_argv(script, tiny, out, mrpc_teacher), capsys,
                     ["--output_dir", "is being written by process", str(holder.pid)],
                     watched=(out,))
    finally:
        release.set()
        holder.join(30)


def test_a_stale_lock_is_taken_over_with_a_note(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (out / locks.PID_NAME).write_text(gone + "\n")
    FINETUNE.main(train_args("MRPC", tiny.data, tiny.bert, out, *STUDENT))
    assert f"taking over the lock of process {gone}" in capsys.readouterr().err
    assert not (out / locks.PID_NAME).exists()


def test_two_grids_never_share_a_work_folder(tmp_path):
    reproduce = load_script_from(ROOT / "bench" / "reproduce.py")
    work = tmp_path / "work"
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(work, ready, release))
    holder.start()
    glue = make_glue(tmp_path / "glue", tasks=("MRPC",))
    bert = make_tiny_bert(tmp_path / "bert", glue)
    try:
        assert ready.wait(30)
        with pytest.raises(SystemExit) as err:
            reproduce.main(["--task", "MRPC", "--bert_model", str(bert), "--data_dir",
                            str(glue), "--work_dir", str(work), "--max_seq_length", "24"])
        assert "is being written by process" in str(err.value) and "\n" not in str(err.value)
        assert sorted(p.name for p in work.iterdir()) == sorted([locks.LOCK_NAME,
                                                                  locks.PID_NAME])
    finally:
        release.set()
        holder.join(30)


def load_script_from(path):
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"trial_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_demo_writes_only_into_its_own_or_an_empty_folder(tmp_path, capsys, monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("a user's file\n")
    before = tree_digest(mine)
    expect_error(DEMO.main, ["--work_dir", mine], capsys, ["--work_dir", "holds files",
                                                           "new or empty folder"])
    assert tree_digest(mine) == before
    # an empty folder, or one an earlier demo marked, is taken (the steps are not run here)
    monkeypatch.setattr(DEMO, "run_demo", lambda args, work, start: "ran")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert DEMO.main(["--work_dir", str(empty)]) == "ran"
    (empty / "teacher").mkdir()
    assert DEMO.main(["--work_dir", str(empty)]) == "ran"  # its own marker is there
    assert DEMO.main(["--work_dir", str(tmp_path / "new")]) == "ran"


# --- tracebacks -----------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["0", "-3", "nan"])
@pytest.mark.parametrize("script", ["download_glue_data", "download_pretrained_bert",
                                    "download_mpnet"])
def test_downloaders_refuse_a_bad_timeout(script, value, tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "src" / "data" / "data_raw" /
                                              f"{script}.py"), "--timeout", value],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: --timeout")


@pytest.mark.parametrize("script", ["export_hf", "save_teacher_outputs"])
def test_a_damaged_args_json_is_one_line(script, mrpc_teacher, tiny, tmp_path, capsys):
    run = shutil.copytree(mrpc_teacher.run, tmp_path / "teacher")
    (run / "args.json").write_text("{not json")
    argv = (["--run_dir", run, "--export_dir", tmp_path / "export"] if script == "export_hf"
            else ["--task", "MRPC", "--data_dir", tiny.data, "--teacher_dir", run,
                  "--output_dir", tmp_path / "out", "--no_cuda"])
    expect_error({"export_hf": EXPORT, "save_teacher_outputs": SAVE}[script].main, argv, capsys,
                 ["args.json is not valid JSON"], watched=(tmp_path,))


def test_the_demo_work_dir_as_a_file_or_read_only(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    expect_error(DEMO.main, ["--work_dir", afile], capsys, ["--work_dir", "is a file"])
    if os.geteuid() != 0:  # root writes everywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        expect_error(DEMO.main, ["--work_dir", locked / "demo"], capsys, ["cannot be written"])


def test_the_grid_refuses_a_records_dir_that_is_a_file(tmp_path):
    reproduce = load_script_from(ROOT / "bench" / "reproduce.py")
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(SystemExit) as err:
        reproduce.main(["--task", "MRPC", "--bert_model", "b", "--data_dir", "d",
                        "--work_dir", str(tmp_path / "w"), "--records_dir", str(afile)])
    assert str(err.value).startswith("error: --records_dir") and "is a file" in str(err.value)


def test_pkd_with_a_one_layer_student_is_one_line(tiny, mrpc_teacher, tmp_path, capsys):
    expect_error(FINETUNE.main, train_args("MRPC", tiny.data, tiny.bert, tmp_path / "r",
                                           "--student_hidden_layers", 1, "--train_type", "pkd",
                                           "--teacher_prediction", mrpc_teacher.file), capsys,
                 ["1 effective layer", "--train_type kd"], watched=(tmp_path,))


# --- misleading messages --------------------------------------------------------------------

def test_corrupt_pretrained_weights_are_one_short_line(tiny, tmp_path, capsys):
    bert = shutil.copytree(tiny.bert, tmp_path / "bert")
    (bert / "model.safetensors").unlink()
    (bert / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not a torch file")
    line = expect_error(FINETUNE.main, train_args("MRPC", tiny.data, bert, tmp_path / "r",
                                                  *STUDENT), capsys, ["cannot read the weights"])
    assert len(line) < 400 and "weights_only=False" not in line


def test_an_interrupted_export_leaves_nothing(mrpc_teacher, tmp_path, capsys, monkeypatch):
    from utils import export

    def dies(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "save_safetensors", dies)
    with pytest.raises(SystemExit):
        EXPORT.main(["--run_dir", str(mrpc_teacher.run), "--export_dir", str(tmp_path / "x")])
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    EXPORT.main(["--run_dir", str(mrpc_teacher.run), "--export_dir", str(tmp_path / "x")])
    assert (tmp_path / "x" / "model.safetensors").is_file()


def test_an_empty_required_flag_is_not_told_to_be_left_out(tiny, capsys):
    line = expect_error(FINETUNE.main, ["--task", "MRPC", "--output_dir", ""], capsys,
                        ["--output_dir is empty; pass a value"])
    assert "leave the flag out" not in line


def test_a_value_that_starts_with_a_dash_reaches_its_check(tiny, mrpc_teacher, tmp_path, capsys):
    expect_error(PTP.main, run_argv("PTP", tiny, tmp_path / "r", mrpc_teacher,
                                    "--ptp_thresholds", "-1,-2"), capsys,
                 ["--ptp_thresholds", "-1"], watched=(tmp_path,))


def test_make_quotes_its_variables(tmp_path):
    proc = subprocess.run(["make", "-n", "reproduce", "TASK=MRPC; echo pwned", "DATA=my data"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    recipe = proc.stdout
    assert '--task "$TASK"' in recipe and '--data_dir "$data"' in recipe
    done = subprocess.run(["make", "-s", "reproduce", "TASK=MRPC; echo pwned", "BERT=/none",
                           "VENV=" + str(tmp_path / "no-venv"), "-o",
                           str(tmp_path / "no-venv" / ".installed-bench")],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "pwned" not in done.stdout.replace("echo pwned", "")


def test_every_grid_help_example_is_accepted(tmp_path):
    reproduce = load_script_from(ROOT / "bench" / "reproduce.py")
    from grid.plan import KINDS, check_script_flags, plan_grid

    for kind, (script, flag) in KINDS.items():
        args = reproduce.build_parser().parse_args(
            ["--task", "MRPC", "--bert_model", "b", "--data_dir", "d", "--work_dir", "w",
             "--variants", "ft,ptp_pkd,tinybert", f"{flag}={reproduce.EXTRA_EXAMPLES[kind]}"])
        reproduce.apply_protocol(args)
        _, stages = plan_grid(args, tmp_path, depth=6)
        check_script_flags(stages)


# --- silently accepted ----------------------------------------------------------------------

@pytest.mark.parametrize("flag, value, needle", [
    ("--learning_rate", "1e6", "--learning_rate 1e+06 is far outside"),
    ("--beta", "1e30", "--beta 1e+30 is far outside"),
    ("--T", "1e-30", "--T 1e-30 is far outside")])
def test_absurd_magnitudes_warn(flag, value, needle, tiny, mrpc_teacher, tmp_path, capsys):
    argv = train_args("MRPC", tiny.data, tiny.bert, tmp_path / "r", *STUDENT, "--train_type",
                      "pkd", "--teacher_prediction", mrpc_teacher.file, flag, value,
                      "--max_steps", 1)
    try:
        FINETUNE.main(argv)
    except SystemExit:
        pass  # a diverged loss stops the run with its own line
    assert needle in capsys.readouterr().err


def test_data_problems_are_refused_or_counted(tiny, tmp_path, capsys):
    from utils.glue import get_task

    data = shutil.copytree(tiny.data, tmp_path / "glue")
    train = data / "MRPC" / "train.tsv"
    lines = train.read_text().splitlines()
    train.write_text("\n".join(lines[1:]) + "\n")  # the header left out
    examples = get_task("MRPC").get_examples(data, "train")
    assert len(examples) == len(lines) - 1
    assert "looks like an example, not the header" in capsys.readouterr().err
    row = lines[1].split("\t")
    row[3] = ""
    train.write_text("\n".join([lines[0], "\t".join(row)] + lines[2:]) + "\n")
    get_task("MRPC").get_examples(data, "train")
    assert "1 of 16 examples have an empty text" in capsys.readouterr().err
    stsb = data / "STS-B" / "train.tsv"
    rows = stsb.read_text().splitlines()
    cells = rows[1].split("\t")
    cells[-1] = "9.5"
    stsb.write_text("\n".join([rows[0], "\t".join(cells)] + rows[2:]) + "\n")
    with pytest.raises(Exception, match="score '9.5' is outside the task's range 0..5"):
        get_task("STS-B").get_examples(data, "train")


def test_empty_values_never_mean_the_current_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    expect_error(DEMO.main, ["--work_dir", ""], capsys, ["--work_dir is empty"])
    proc = subprocess.run([sys.executable, str(ROOT / "src" / "data" / "data_raw" /
                                              "download_glue_data.py"), "--data_dir", ""],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--data_dir is empty" in proc.stderr
    assert list(tmp_path.iterdir()) == []
    env = {**os.environ, "PEAKD_OUTPUT_DIR": "", "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", "import envs; print(envs.OUTPUT_DIR)"],
                         capture_output=True, text=True, env=env, check=True).stdout.strip()
    assert out.endswith("outputs/KD") and out != "."


@pytest.mark.parametrize("value, ok", [("yes", True), ("TRUE", True), ("0", True),
                                       ("maybe", False)])
def test_preprocess_switches(value, ok, tmp_path):
    env = {**os.environ, "PEAKD_WITH_BERT": value, "PEAKD_GLUE_BASE_URL": "http://127.0.0.1:9",
           "PEAKD_GLUE_DIR": str(tmp_path / "glue")}
    proc = subprocess.run(["bash", str(ROOT / "preprocess.sh"), "--tasks", "RTE",
                           "--timeout", "1"], capture_output=True, text=True, env=env,
                          timeout=60)
    if ok:
        assert "PEAKD_WITH_BERT" not in proc.stderr
    else:
        assert proc.returncode == 2 and "error: PEAKD_WITH_BERT=maybe" in proc.stderr


def test_contradictory_sps_settings_are_refused(tiny, tmp_path, capsys):
    er = TRAINING["finetune_ER"].main
    expect_error(er, train_args("MRPC", tiny.data, tiny.bert, tmp_path / "r", *STUDENT,
                                "--sps_layers", "1,1"), capsys, ["--sps_layers 1,1",
                                                                 "names a layer twice"])
    expect_error(er, train_args("MRPC", tiny.data, tiny.bert, tmp_path / "r", *STUDENT,
                                "--model_type", "SPS_no_shuffle", "--swap_prob", 0.3),
                 capsys, ["--swap_prob 0.3", "SPS_no_shuffle"])


def test_the_benchmark_fails_when_its_script_run_fails(tiny, tmp_path):
    """Its finetune.py run finds no MRPC files in --glue_dir and fails: so does the benchmark."""
    (tmp_path / "glue").mkdir()
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "throughput.py"), "--quick",
                           "--force", "--configs", "", "--bert_model", str(tiny.bert),
                           "--glue_dir", str(tmp_path / "glue"), "--out",
                           str(tmp_path / "t.json")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("error: finetune.py failed")


# --- what the protections cost --------------------------------------------------------------

def test_each_protection_runs_once_per_run_and_never_per_step(tiny, tmp_path, monkeypatch):
    """The lock, the input-folder check and the folder preparation run once when a run starts;
    no step calls them, so a longer run pays nothing more for them."""
    from utils import pipeline

    calls = {}

    def counted(module, name):
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return real(*args, **kwargs)
        monkeypatch.setattr(module, name, wrapper)

    for name in ("folder_lock", "check_not_an_input", "prepare_output_dir"):
        counted(pipeline, name)
    for steps in (2, 6):
        calls.clear()
        FINETUNE.main(train_args("MRPC", tiny.data, tiny.bert, tmp_path / f"r{steps}", *STUDENT,
                                 "--max_steps", steps, "--num_train_epochs", 3))
        assert calls == {"folder_lock": 1, "check_not_an_input": 1, "prepare_output_dir": 1}


def test_a_long_key_list_is_summarised(tiny, mrpc_teacher, tmp_path, capsys):
    """A 4-layer encoder into a 2-layer student: 32 unexpected keys, two of them named."""
    line = expect_error(FINETUNE.main, train_args(
        "MRPC", tiny.data, tiny.bert, tmp_path / "r", *STUDENT, "--load_model_dir",
        mrpc_teacher.run / "BERT.encoder_acc.pkl"), capsys, ["does not fit", "more]"])
    assert len(line) < 400
