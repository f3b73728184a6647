"""bench/reproduce.py on tiny data: the grid runs through the real scripts, collects one row per
run of its plan, resumes, refuses a work folder whose runs were made with other settings, checks
its inputs before anything runs, and runs stages at once with the same results."""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from helpers import make_glue, make_tiny_bert, tree_digest
from BERT.pytorch_pretrained_bert.linear import machine_key

ROOT = Path(__file__).resolve().parents[1]


def load_reproduce():
    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "bench" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cola_grid(tmp_path_factory):
    """One tiny CoLA grid (teacher, outputs, ft and ptp_sps_pkd for seed 1), run once
    for the tests that read it; the tests never change its work folder."""
    root = tmp_path_factory.mktemp("grid")
    # CoLA spelled in lower case: the teacher file must be found under the name its owner
    # module gives it ("CoLA_...", not "COLA_...")
    glue = make_glue(root / "glue", tasks=("CoLA",))
    bert = make_tiny_bert(root / "bert", glue)
    argv = ["--task", "cola", "--bert_model", str(bert), "--data_dir", str(glue),
            "--work_dir", str(root / "work"), "--protocol", "quick", "--seeds", "1",
            "--variants", "ft,ptp_sps_pkd", "--student_hidden_layers", "2",
            "--max_seq_length", "24", "--train_batch_size", "8", "--max_steps", "2",
            "--student_args", "--eval_batch_size 4"]
    reproduce = load_reproduce()
    frame = reproduce.main(argv)
    return reproduce, argv, root, frame


def test_grid_runs_collects_and_resumes(cola_grid, capsys):
    reproduce, argv, root, frame = cola_grid
    work = root / "work"
    chart = work / "results.png"
    if importlib.util.find_spec("matplotlib"):
        assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(frame["variant"]) == ["teacher", "ft", "ptp_sps_pkd"]
    assert list(frame["seed"]) == ["-", "1", "1"]
    assert set(frame["metric"]) == {"mcc"} and frame["mcc"].notna().all()
    assert list(frame["effective_layers"]) == [4, 2, 4]
    assert frame.loc[2, "num_parameters"] == frame.loc[1, "num_parameters"]
    # the PTP student rows carry their PTP run's thresholds and 4 train label counts (16 rows)
    ptp_rows = frame[frame["variant"] == "ptp_sps_pkd"]
    counts = [list(map(int, c.split("/"))) for c in ptp_rows["ptp_train_counts"]]
    assert all(len(c) == 4 and sum(c) == 16 for c in counts)
    assert ptp_rows["ptp_t1"].between(0, 1).all() and ptp_rows["ptp_t2"].between(0, 1).all()
    assert frame[frame["variant"] == "ft"]["ptp_train_counts"].isna().all()
    # the grid's default threshold rule is the median one (quick and authors_hparams alike)
    ptp_args = json.loads((work / "ptp_SPS_seed1" / "PTP.args.json").read_text())
    assert ptp_args["ptp_thresholds"] == "median"
    assert ptp_args["ptp_label_counts"]["train"] == counts[0]
    table = (work / "results.md").read_text()
    assert "| ptp_sps_pkd | 1 |" in table and "±" in table and "protocol `quick`" in table
    assert "| PTP helps SPS+PKD | ptp_sps_pkd - sps_pkd" not in table  # sps_pkd did not run
    assert "| KD beats fine-tuning |" not in table
    assert "## PTP labels" in table and "| ptp_SPS_seed1 |" in table
    assert frame["wall_seconds"].gt(frame["train_seconds"]).all()
    assert "Not training: " in table
    assert "\nCode: " in table and "(3 runs)" in table  # one commit made all three runs
    assert f"\nCPU: {machine_key()} (3 runs)." in table  # and one machine
    assert "\n| variant | seed 1 | mean |\n" in table and "\nDev mcc of the checkpoint" in table
    # every stage tokenised through one cache: one file per split (train, dev), not per stage
    assert len(list((work / "cache").glob("CoLA-*.pt"))) == 2
    csv = pd.read_csv(work / "results.csv")
    assert len(csv) == 3 and "ptp_train_counts" in csv.columns
    record = json.loads((work / "ft_seed1" / "grid_stage.json").read_text())
    assert record["script"] == "finetune.py" and "<work>/ft_seed1" in record["argv"]
    assert record["argv"][-2:] == ["--eval_batch_size", "4"]  # --student_args, last
    capsys.readouterr()
    reproduce.main(argv)
    out = capsys.readouterr().out
    assert "[run " not in out and out.count("[skip ") == 5 and "[skip 5/5]" in out


def test_a_rerun_with_other_settings_is_refused_before_anything_runs(cola_grid):
    reproduce, argv, root, _ = cola_grid
    work = root / "work"
    before = tree_digest(work)
    # as a new user would: the same command without --max_steps, then with another student lr
    without_steps = argv[:argv.index("--max_steps")] + argv[argv.index("--max_steps") + 2:]
    for changed, needles in ((without_steps, ["--max_steps 2 (now (unset))", "teacher"]),
                             (argv + ["--lr", "1e-4"], ["--learning_rate 5e-05 (now 0.0001)",
                                                        "ft_seed1"])):
        with pytest.raises(SystemExit) as err:
            reproduce.main(changed)
        message = str(err.value)
        assert message.startswith("error: --work_dir ") and str(work) in message
        assert "\n" not in message and all(n in message for n in needles), message
    assert tree_digest(work) == before


def test_a_flag_its_train_type_does_not_read_is_no_difference(cola_grid, tmp_path):
    """A run recorded with a distillation flag its --train_type does not read (ft given
    --teacher_prediction, as plans did before finetune.py refused it) is the planned run; the
    same flag on a train type that reads it is a difference."""
    reproduce, argv, root, _ = cola_grid
    work = tmp_path / "work"
    shutil.copytree(root / "work", work)
    moved = [str(work) if a == str(root / "work") else a for a in argv]
    unread = ["--teacher_prediction", "<work>/old.pkl"]
    for stage, expect_refused in (("ft_seed1", False), ("ptp_sps_pkd_seed1", True)):
        record = work / stage / "grid_stage.json"
        saved = json.loads(record.read_text())
        flags = saved["argv"]
        if "--teacher_prediction" in flags:  # the PKD student's own file, moved elsewhere
            flags[flags.index("--teacher_prediction") + 1] = unread[1]
        else:
            flags += unread
        record.write_text(json.dumps(saved))
        if expect_refused:
            with pytest.raises(SystemExit, match="ptp_sps_pkd_seed1: --teacher_prediction "
                                                 "<work>/old.pkl"):
                reproduce.main(moved + ["--no_plot", "--report_only"])
        else:
            frame = reproduce.main(moved + ["--no_plot", "--report_only"])
            assert list(frame["variant"]) == ["teacher", "ft", "ptp_sps_pkd"]


def test_the_table_holds_only_the_current_plan(cola_grid, tmp_path):
    """A finished run in the folder that the current command did not plan (here another seed)
    is not tabled, even when made with the same settings."""
    reproduce, argv, root, _ = cola_grid
    work = tmp_path / "work"
    shutil.copytree(root / "work", work)
    shutil.copytree(work / "ft_seed1", work / "ft_seed9")
    moved = [str(work) if a == str(root / "work") else a for a in argv]
    frame = reproduce.main(moved + ["--no_plot"])  # the moved folder's runs still match
    assert list(frame["seed"]) == ["-", "1", "1"]
    assert not (work / "logs" / "ft_seed9.log").exists()


def test_report_only_tables_the_finished_runs_and_names_the_missing(cola_grid, tmp_path,
                                                                     capsys):
    reproduce, argv, root, frame = cola_grid
    work = tmp_path / "work"
    shutil.copytree(root / "work", work)
    shutil.rmtree(work / "ptp_sps_pkd_seed1")  # as if the grid stopped before its last run
    moved = [str(work) if a == str(root / "work") else a for a in argv]
    partial = reproduce.main(moved + ["--no_plot", "--report_only"])
    out = capsys.readouterr().out
    assert "[run " not in out and not (work / "ptp_sps_pkd_seed1").exists()
    assert list(partial["variant"]) == ["teacher", "ft"]
    table = (work / "results.md").read_text()
    assert "Finished 4 of 5 stages; not yet: ptp_sps_pkd_seed1." in table
    assert "| ptp_sps_pkd |" not in table
    assert "Finished 5 of 5 stages.\n" in (root / "work" / "results.md").read_text()
    shutil.rmtree(work / "teacher")
    with pytest.raises(SystemExit) as err:
        reproduce.main(moved + ["--no_plot", "--report_only"])
    assert "teacher has not finished" in str(err.value) and "\n" not in str(err.value)


def test_jobs_2_gives_the_same_results_as_jobs_1(cola_grid, capsys):
    reproduce, argv, root, frame = cola_grid
    work2 = root / "work-jobs2"
    argv2 = [str(work2) if a == str(root / "work") else a for a in argv] + ["--jobs", "2"]
    frame2 = reproduce.main(argv2 + ["--no_plot"])
    results = [c for c in frame.columns
               if not c.endswith(("seconds", "per_second")) and c != "seed"]
    pd.testing.assert_frame_equal(frame[results], frame2[results])
    assert capsys.readouterr().out.count("[done ") == 5


def test_stages_in_new_interpreters_give_the_same_results_as_forked_ones(cola_grid, capsys):
    reproduce, argv, root, frame = cola_grid
    work = root / "work-fresh"
    argv2 = [str(work) if a == str(root / "work") else a for a in argv] + ["--no_forkserver"]
    fresh = reproduce.main(argv2 + ["--no_plot"])
    results = [c for c in frame.columns
               if not c.endswith(("seconds", "per_second")) and c != "seed"]
    pd.testing.assert_frame_equal(frame[results], fresh[results])
    assert capsys.readouterr().out.count("[done ") == 5
    for name in ("teacher/BERT.encoder_acc.pkl", "ptp_SPS_seed1/PTP.encoder_loss.pkl",
                 "ptp_sps_pkd_seed1/BERT.encoder_acc.pkl"):
        forked, new = (torch.load(w / name, weights_only=True) for w in (root / "work", work))
        assert forked.keys() == new.keys() and len(forked) > 10
        assert all(torch.equal(forked[k], new[k]) for k in forked), name


def test_teacher_from_links_another_grids_teacher(cola_grid, tmp_path, capsys):
    """A new study (other seeds, other variants) takes a finished grid's teacher and teacher
    outputs through links instead of training them again; an unfinished source, or one made
    with other teacher settings, or a folder with a teacher of its own, is refused in one line
    before anything is linked or run, and the source folder is never written."""
    reproduce, argv, root, frame = cola_grid
    source = root / "work"
    before = tree_digest(source)

    def study(work, *extra):
        new = [str(work) if a == str(source) else a for a in argv]
        new[new.index("--seeds") + 1] = "2"
        new[new.index("--variants") + 1] = "ft"
        return new + ["--no_plot", "--teacher_from", str(source), *extra]

    work = tmp_path / "study2"
    refused = [(study(work, "--teacher_seed", "7"), "--train_seed 42 (now 7)"),
               (study(tmp_path / "own"), "already has its own teacher"),
               (study(work)[:-1] + [str(tmp_path / "empty")], "has not finished")]
    shutil.copytree(source / "teacher", tmp_path / "own" / "teacher")
    (tmp_path / "empty").mkdir()
    for command, needle in refused:
        with pytest.raises(SystemExit) as err:
            reproduce.main(command)
        message = str(err.value)
        assert message.startswith("error: --") and needle in message, message
        assert "\n" not in message
    assert not work.exists() and not (tmp_path / "own" / "ft_seed2").exists()
    assert sorted(p.name for p in (tmp_path / "own").iterdir()) == ["teacher"]

    second = reproduce.main(study(work))
    out = capsys.readouterr().out
    assert "] teacher: " in out and "] teacher_outputs: " in out and out.count("[run ") == 1
    assert (work / "teacher").is_symlink() and not os.path.isabs(os.readlink(work / "teacher"))
    assert list(second["variant"]) == ["teacher", "ft"] and list(second["seed"]) == ["-", "2"]
    assert second.loc[0, "mcc"] == frame.loc[0, "mcc"]  # the same teacher run
    assert f"teacher from {source}" in (work / "results.md").read_text()
    again = reproduce.main(study(work))  # a repeated command keeps its links and runs nothing
    assert "[run " not in capsys.readouterr().out and again["mcc"].equals(second["mcc"])
    assert tree_digest(source) == before


def test_records_dir_keeps_runs_across_machines(cola_grid, tmp_path, capsys):
    """--records_dir keeps each finished stage's small files (no weights). On a new machine (an
    empty work folder) the grid trains the teacher again, restores the kept runs whose
    dependants are all kept, and runs the rest; a teacher whose predictions differ from the
    kept runs' stops the grid before any run is restored, and kept runs made with other
    settings are refused before anything runs."""
    reproduce, argv, root, frame = cola_grid
    rec = tmp_path / "records"

    def on(work, *extra):
        return [str(work) if a == str(root / "work") else a for a in argv] + [
            "--no_plot", "--records_dir", str(rec), *extra]

    first = tmp_path / "first"
    shutil.copytree(root / "work", first)
    reproduce.main(on(first))  # a grid under way: its finished runs are kept, nothing runs
    assert "[run " not in capsys.readouterr().out
    kept = sorted(str(p.relative_to(rec)) for p in rec.rglob("*") if p.is_file())
    assert "teacher_outputs/sha256" in kept and "ft_seed1/eval_results.json" in kept
    assert "ptp_SPS_seed1/PTP.args.json" in kept and "ptp_sps_pkd_seed1/grid_stage.json" in kept
    assert {Path(k).suffix for k in kept} == {".json", ".csv", ""}  # no weights, no vocab

    # a new machine, with one student never kept: its PTP run is not restored either
    shutil.rmtree(rec / "ptp_sps_pkd_seed1")
    second = reproduce.main(on(tmp_path / "second"))
    out = capsys.readouterr().out
    assert "restored 1 finished run(s) from " in out and ": ft_seed1\n" in out
    assert out.count("[run ") == 4 and "[skip 5/5] ft_seed1" in out
    results = [c for c in frame.columns
               if not c.endswith(("seconds", "per_second")) and c != "seed"]
    pd.testing.assert_frame_equal(frame[results], second[results])
    assert (rec / "ptp_sps_pkd_seed1" / "eval_results.json").is_file()

    kept_digest = (rec / "teacher_outputs" / "sha256").read_text()
    (rec / "teacher_outputs" / "sha256").write_text("0" * 64 + "\n")
    with pytest.raises(SystemExit) as err:
        reproduce.main(on(tmp_path / "third"))
    message = str(err.value)
    assert "differ from those its runs were made with (000000000000)" in message, message
    assert "\n" not in message
    out = capsys.readouterr().out  # nothing restored: the kept runs' teacher is another
    assert "restored" not in out and out.count("[run ") == 2
    assert not list((tmp_path / "third").glob("*seed1"))
    (rec / "teacher_outputs" / "sha256").write_text(kept_digest)
    third = reproduce.main(on(tmp_path / "third"))  # the right teacher: all three restored
    out = capsys.readouterr().out
    assert "restored 3 finished run(s)" in out and "[run " not in out
    pd.testing.assert_frame_equal(frame[results], third[results])

    with pytest.raises(SystemExit) as err:
        reproduce.main(on(tmp_path / "fourth", "--lr", "1e-4"))
    message = str(err.value)
    assert message.startswith("error: --records_dir ") and "\n" not in message
    assert "--learning_rate 5e-05 (now 0.0001)" in message, message
    assert not (tmp_path / "fourth").exists() or not any((tmp_path / "fourth").iterdir())


def test_progress_only_lists_finished_stages_without_values(cola_grid, tmp_path, capsys):
    """--progress_only prints which stages have finished and their wall times, no dev value,
    and runs and writes nothing; on a new machine a seed's stages kept in --records_dir count
    as finished, the teacher's (trained again there) do not."""
    reproduce, argv, root, frame = cola_grid
    work = root / "work"
    files = {p: p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file()}
    assert reproduce.main(argv + ["--progress_only"]) is None
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("teacher: done (") and "; teacher_outputs: done (" in lines[0]
    assert "1 of 1 seeds finished" in out and "[run " not in out
    assert lines[-3] == "| seed | ptp_SPS | ptp_sps_pkd | ft |"
    assert lines[-1].startswith("| 1 | done (") and lines[-1].count("done (") == 3
    assert "mcc" not in out and f"{frame.loc[1, 'mcc']:.4f}" not in out
    assert {p: p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file()} == files

    # a running grid: ft's results are written, its record not yet (the grid writes it at exit)
    record = work / "ft_seed1" / "grid_stage.json"
    kept = record.read_bytes()
    record.unlink()
    assert reproduce.main(argv + ["--progress_only"]) is None
    out = capsys.readouterr().out
    assert "0 of 1 seeds finished" in out and out.splitlines()[-1].endswith("| finishing |")
    record.write_bytes(kept)

    rec = tmp_path / "records"
    shutil.copytree(work, tmp_path / "first")
    keep = [str(tmp_path / "first") if a == str(work) else a for a in argv]
    reproduce.main(keep + ["--no_plot", "--records_dir", str(rec)])
    capsys.readouterr()
    new = [str(tmp_path / "new") if a == str(work) else a for a in argv]
    new += ["--records_dir", str(rec), "--progress_only"]
    reproduce.main(new)
    out = capsys.readouterr().out
    assert out.startswith("teacher: not yet; teacher_outputs: not yet.\n")
    assert "1 of 1 seeds finished" in out and not (tmp_path / "new").exists()
    shutil.rmtree(rec / "ft_seed1")
    reproduce.main(new)
    out = capsys.readouterr().out
    assert "0 of 1 seeds finished" in out and out.splitlines()[-1].endswith("| not yet |")


def test_report_only_tables_the_kept_runs_on_a_machine_that_trained_nothing(cola_grid, tmp_path,
                                                                             capsys):
    """--report_only with --records_dir tables the runs kept there (the teacher's and its
    outputs' records too) in an empty work folder: the same rows as the grid's own, every stage
    counted, nothing trained and only the tables written; a kept run made with other settings
    is refused in one line, and without a kept teacher there is nothing to table."""
    reproduce, argv, root, frame = cola_grid
    rec = tmp_path / "records"
    shutil.copytree(root / "work", tmp_path / "first")
    reproduce.main([str(tmp_path / "first") if a == str(root / "work") else a for a in argv]
                   + ["--no_plot", "--records_dir", str(rec)])
    capsys.readouterr()
    new = tmp_path / "new"
    report = ([str(new) if a == str(root / "work") else a for a in argv]
              + ["--no_plot", "--records_dir", str(rec), "--report_only"])
    table = reproduce.main(report)
    assert "[run " not in capsys.readouterr().out
    results = [c for c in frame.columns if c != "code"]
    pd.testing.assert_frame_equal(frame[results], table[results])
    text = (new / "results.md").read_text()
    assert "Finished 5 of 5 stages." in text and "| ptp_SPS_seed1 |" in text
    assert sorted(p.name for p in new.iterdir() if not p.name.startswith(".")) == [
        "grid_settings.json", "results.csv", "results.md"]

    # the teacher's record: the one no restore checks (a new machine trains it again)
    record = rec / "teacher" / "grid_stage.json"
    saved = json.loads(record.read_text())
    saved["argv"] = [a.replace("2", "3") if a.isdigit() else a for a in saved["argv"]]
    record.write_text(json.dumps(saved))
    with pytest.raises(SystemExit) as err:
        reproduce.main(report)
    message = str(err.value)
    assert message.startswith("error: --records_dir ") and "its teacher was" in message, message
    assert "\n" not in message

    shutil.rmtree(rec / "teacher")
    shutil.rmtree(rec / "ft_seed1")
    with pytest.raises(SystemExit) as err:
        reproduce.main(report)
    assert f"nor is it kept in {rec}; nothing to tabulate yet" in str(err.value)


def test_bad_inputs_fail_in_one_line_before_any_run(tmp_path):
    glue = make_glue(tmp_path / "glue", tasks=("MRPC",))
    bert = make_tiny_bert(tmp_path / "bert", glue)
    reproduce = load_reproduce()
    work = tmp_path / "work"
    good = ["--task", "MRPC", "--bert_model", str(bert), "--data_dir", str(glue),
            "--work_dir", str(work), "--max_seq_length", "24"]
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = [(["--bert_model", str(tmp_path)], "--bert_model"),
             (["--data_dir", str(tmp_path)], "--data_dir"),
             (["--variants", "ft,pkd2"], "--variants"),
             (["--variants", "ft,kd,ft"], "--variants"),
             (["--seeds", "1,x"], "--seeds"),
             (["--seeds", "1,2,1"], "--seeds"),
             (["--epochs", "0"], "--epochs"),
             (["--ptp_epochs", "-1"], "--ptp_epochs"),
             (["--teacher_epochs", "0"], "--teacher_epochs"),
             (["--max_steps", "0"], "--max_steps"),
             (["--student_hidden_layers", "5"], "--student_hidden_layers"),
             (["--student_hidden_layers", "0"], "--student_hidden_layers"),
             (["--student_hidden_layers", "4", "--variants", "sps_pkd"],
              "--student_hidden_layers"),
             (["--protocol", "paper"], "--protocol"),
             (["--ptp_thresholds", "0.9"], "--ptp_thresholds"),
             (["--jobs", "0"], "--jobs"),
             (["--cores", "0"], "--cores"),
             (["--max_seq_length", "65"], "--max_seq_length"),  # the tiny BERT has 64
             (["--work_dir", str(a_file)], "--work_dir"),
             (["--student_args", "--warmpu_proportion 0.2"], "--student_args"),
             (["--student_args", "--warmup 0.2"], "--student_args"),  # abbreviations too
             (["--student_args", "--warmup_proportion two"], "--student_args"),
             (["--ptp_args", "--learning_rate 1e-4"], "--ptp_args"),
             (["--teacher_args", "'unclosed"], "--teacher_args")]
    for extra, flag in cases:
        with pytest.raises(SystemExit) as err:
            reproduce.main(good + extra)
        message = str(err.value)
        assert message.startswith("error: ") and flag in message and "\n" not in message, \
            (extra, message)
    assert not work.exists()


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_failed_stage_names_its_log_and_records_nothing(tmp_path, jobs):
    glue = make_glue(tmp_path / "glue", tasks=("SST-2",))
    bert = make_tiny_bert(tmp_path / "bert", glue)
    work = tmp_path / "work"
    with pytest.raises(SystemExit) as err:
        load_reproduce().main(
            ["--task", "SST-2", "--bert_model", str(bert), "--data_dir", str(glue),
             "--work_dir", str(work), "--max_seq_length", "24", "--jobs", jobs,
             "--teacher_args", "--layer_initialization 1,2,3,9"])  # the model has 4 layers
    message = str(err.value)
    assert message.startswith("error: teacher failed (exit 1); see ") and "\n" not in message
    assert str(work / "logs" / "teacher.log") in message and "--layer_initialization" in message
    assert not (work / "teacher" / "eval_results.json").exists()
    assert not list(work.rglob("grid_stage.json")) and not (work / "results.csv").exists()


def plan(reproduce, tmp_path, *extra):
    args = reproduce.build_parser().parse_args(
        ["--task", "MRPC", "--bert_model", "b", "--data_dir", "d", "--work_dir", "w",
         "--variants", "ft,ptp_sps_pkd", *extra])
    reproduce.apply_protocol(args)
    _, stages = reproduce.grid_plan.plan_grid(args, tmp_path, depth=6)
    return args, {s.label: s.argv for s in stages}


def flag(argv, name):
    assert argv.count(name) <= 1
    return argv[argv.index(name) + 1] if name in argv else None


def test_protocols_are_a_table_and_explicit_flags_win(tmp_path):
    reproduce = load_reproduce()
    assert reproduce.build_parser().parse_args(
        ["--task", "t", "--bert_model", "b", "--data_dir", "d", "--work_dir", "w"]
    ).protocol == "authors_hparams"
    args, argv = plan(reproduce, tmp_path)  # authors_hparams, the default
    assert args.seeds == "1,2,3,4,5" and "ft_seed5" in argv and "ft_seed6" not in argv
    assert [flag(argv["teacher"], f) for f in ("--learning_rate", "--num_train_epochs",
                                               "--train_seed", "--train_batch_size")] \
        == ["2e-05", "3.0", "42", "32"]
    assert [flag(argv["ft_seed1"], f) for f in ("--learning_rate", "--num_train_epochs")] \
        == ["2e-05", "7.0"]
    assert [flag(argv["ptp_SPS_seed1"], f) for f in ("--learning_rate", "--num_train_epochs",
                                                     "--ptp_thresholds")] \
        == ["2e-05", "4.0", "median"]
    assert flag(argv["ptp_sps_pkd_seed1"], "--load_model_dir").endswith(
        "ptp_SPS_seed1/PTP.encoder_loss.pkl")
    args, argv = plan(reproduce, tmp_path, "--protocol", "quick")
    assert args.seeds == "1,2,3"
    assert [flag(argv["ft_seed1"], f) for f in ("--learning_rate", "--num_train_epochs")] \
        == ["5e-05", "2.0"]
    assert [flag(argv["ptp_SPS_seed1"], f) for f in ("--learning_rate", "--num_train_epochs")] \
        == ["5e-05", "2.0"]
    # explicit flags win over the protocol, each for its own stage kind only
    args, argv = plan(reproduce, tmp_path, "--protocol", "quick", "--teacher_lr", "3e-5",
                      "--lr", "1e-4", "--ptp_epochs", "3", "--seeds", "7",
                      "--ptp_thresholds", "table", "--ptp_args", "--warmup_proportion 0.2",
                      "--student_args", "--alpha 0.5")
    assert sorted(argv) == ["ft_seed7", "ptp_SPS_seed7", "ptp_sps_pkd_seed7", "teacher",
                            "teacher_outputs"]
    assert flag(argv["teacher"], "--learning_rate") == "3e-05"
    assert flag(argv["ft_seed7"], "--learning_rate") == "0.0001"
    assert [flag(argv["ptp_SPS_seed7"], f) for f in ("--learning_rate", "--num_train_epochs",
                                                     "--ptp_thresholds",
                                                     "--warmup_proportion")] \
        == ["5e-05", "3.0", None, "0.2"]
    assert flag(argv["ptp_sps_pkd_seed7"], "--alpha") == "0.5"
    assert flag(argv["teacher"], "--alpha") is None
    assert flag(argv["ptp_SPS_seed7"], "--alpha") is None


def test_authors_exact_is_the_released_codes_schedule_and_the_flags_still_win(tmp_path):
    """Students: t_total over 10 epochs, lr x w^2, file order, evaluated every step from the
    second epoch, MRPC kept by F1; PTP: t_total over 6 epochs, every step, file order, the
    paper's threshold table; the teacher: BERT's recipe; --select train_slice for every stage
    that trains. The default protocol adds none of these flags (old records still match)."""
    reproduce = load_reproduce()
    args, argv = plan(reproduce, tmp_path, "--protocol", "authors_exact", "--select",
                      "train_slice")
    student, ptp, teacher = argv["ptp_sps_pkd_seed1"], argv["ptp_SPS_seed1"], argv["teacher"]
    assert [flag(student, f) for f in ("--schedule_epochs", "--eval_steps",
                                       "--eval_start_epoch", "--select_metric", "--select",
                                       "--num_train_epochs")] == \
        ["10.0", "1", "2", "f1", "train_slice", "7.0"]
    assert "--schedule_applied_twice" in student and "--no_shuffle" in student
    assert [flag(ptp, f) for f in ("--schedule_epochs", "--eval_steps", "--select",
                                   "--num_train_epochs", "--ptp_thresholds")] == \
        ["6.0", "1", "train_slice", "4.0", None]
    assert "--no_shuffle" in ptp and "--schedule_applied_twice" not in ptp
    assert "--eval_start_epoch" not in ptp and "--select_metric" not in ptp
    assert flag(teacher, "--select") == "train_slice" and "--no_shuffle" not in teacher
    assert flag(teacher, "--num_train_epochs") == "3.0"
    _, argv = plan(reproduce, tmp_path, "--protocol", "authors_exact", "--eval_steps", "10",
                   "--no_shuffle", "false")
    assert flag(argv["ft_seed1"], "--eval_steps") == "10"
    assert "--no_shuffle" not in argv["ft_seed1"] and "--select" not in argv["ft_seed1"]
    _, argv = plan(reproduce, tmp_path)
    for name in ("--schedule_epochs", "--no_shuffle", "--eval_steps", "--select",
                 "--select_metric", "--eval_start_epoch", "--schedule_applied_twice"):
        assert all(name not in a for a in argv.values()), name


def test_ptp_summary_warns_about_a_near_empty_class(tmp_path, capsys):
    reproduce = load_reproduce()  # puts bench/ on the import path
    from grid.plan import Stage
    from grid.report import ptp_summary, ptp_warnings

    def summary(counts):
        (tmp_path / "PTP.args.json").write_text(json.dumps(
            {"ptp_thresholds_used": [0.95, 0.7], "ptp_label_counts": {"train": counts}}))
        stage = Stage("ptp_SPS_seed1", "ptp", [], tmp_path / "x", tmp_path / "y",
                      ptp_dir=tmp_path)
        return ptp_summary(stage)

    info, problem = summary([24, 7114, 610, 803])  # the paper's CoLA table on MiniLM
    assert info == {"ptp_t1": 0.95, "ptp_t2": 0.7, "ptp_train_counts": "24/7114/610/803"}
    assert "confidently correct 24" in problem
    assert "24/7114/610/803" in problem and "t1=0.9500, t2=0.7000" in problem
    assert "unconfidently wrong" not in problem.split(";")[0]
    # the run's own line names it once, as results.md's line does
    reproduce.print_ptp(Stage("ptp_SPS_seed1", "ptp", [], tmp_path / "x", tmp_path / "y",
                              ptp_dir=tmp_path))
    printed = capsys.readouterr().out.splitlines()
    assert printed[1] == f"warning: ptp_SPS_seed1: {problem}"
    assert summary([1000, 1000, 500, 500])[1] is None
    assert summary([980, 1000, 500, 20])[1] is not None  # 20 / 2500 = 0.8%
    # results.md gives one warning per distinct problem, naming the runs that share it
    other = summary([980, 1000, 500, 20])[1]
    lines = ptp_warnings({f"ptp_SPS_seed{i}": (info, w)
                          for i, w in ((1, problem), (2, problem), (3, other), (4, None))})
    assert len(lines) == 2 and lines[0].startswith("warning: ptp_SPS_seed1, ptp_SPS_seed2: PTP ")
    assert lines[0].count("24/7114/610/803") == 1
    assert lines[1].startswith("warning: ptp_SPS_seed3: PTP ") and "wrong 20" in lines[1]


def test_each_seed_starts_its_longest_chain_first(tmp_path):
    """The runner takes the first ready stage in plan order: a seed's PTP runs (SPS's first)
    and their students come before the other students, whatever order --variants gives."""
    reproduce = load_reproduce()
    _, argv = plan(reproduce, tmp_path, "--seeds", "1,2", "--variants",
                   "ft,kd,pkd,sps_no_shuffle_pkd,sps_pkd,ptp_pkd,ptp_sps_pkd")
    seed1 = ["ptp_SPS_seed1", "ptp_Original_seed1", "ptp_sps_pkd_seed1", "ptp_pkd_seed1",
             "ft_seed1", "kd_seed1", "pkd_seed1", "sps_no_shuffle_pkd_seed1", "sps_pkd_seed1"]
    assert list(argv) == ["teacher", "teacher_outputs", *seed1,
                          *[label.replace("seed1", "seed2") for label in seed1]]
    assert flag(argv["ptp_pkd_seed2"], "--load_model_dir").endswith(
        "ptp_Original_seed2/PTP.encoder_loss.pkl")


def test_ctrl_c_stops_the_grid_with_a_line_and_exit_130(cola_grid, monkeypatch, capsys):
    reproduce, argv, root, _ = cola_grid

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(reproduce, "run_stages", interrupted)
    with pytest.raises(SystemExit) as err:
        reproduce.main(argv + ["--no_plot"])
    assert err.value.code == 130
    assert "the same command resumes them" in capsys.readouterr().err


def test_the_grid_passes_its_order_to_the_runner(cola_grid, monkeypatch):
    reproduce, argv, root, _ = cola_grid
    given = []
    monkeypatch.setattr(reproduce, "run_stages",
                        lambda *args, **kwargs: given.append(kwargs["order"]))
    reproduce.main(argv + ["--no_plot", "--order", "seed"])
    assert given == ["seed"]


def test_a_grid_under_train_slice_selection_reports_both_scores(tmp_path):
    """authors_exact on tiny MRPC, two seeds, --select train_slice: every run chose on the slice
    and scored dev there; results.md says so, tables the claims on those scores and, apart, on
    the best-on-dev scores, each Holm-adjusted."""
    glue = make_glue(tmp_path / "glue", tasks=("MRPC",))
    bert = make_tiny_bert(tmp_path / "bert", glue)
    work = tmp_path / "work"
    frame = load_reproduce().main(
        ["--task", "MRPC", "--bert_model", str(bert), "--data_dir", str(glue), "--work_dir",
         str(work), "--protocol", "authors_exact", "--select", "train_slice", "--seeds", "1,2",
         "--variants", "kd,pkd", "--student_hidden_layers", "2", "--max_seq_length", "24",
         "--train_batch_size", "4", "--epochs", "2", "--ptp_epochs", "1", "--teacher_epochs",
         "1", "--no_plot"])
    assert set(frame["select"]) == {"train_slice"}
    assert frame["acc"].notna().all() and frame["best_dev"].notna().all()
    results = json.loads((work / "pkd_seed1" / "eval_results.json").read_text())
    assert results["chosen_acc"]["dev"]["acc"] == frame.loc[
        (frame["variant"] == "pkd") & (frame["seed"] == "1"), "acc"].item()
    assert results["selection"]["metric"] == "f1" and results["selection"]["eval_steps"] == 1
    teacher = json.loads((work / "teacher" / "eval_results.json").read_text())
    assert teacher["selection"]["rule"] == "train_slice"
    table = (work / "results.md").read_text()
    assert "held-out train slice" in table and "select train_slice" in table
    assert "## The same claims on best-on-dev scores" in table
    assert table.count("| PKD beats KD | pkd - kd | 2 |") == 2
    assert "Holm-adjusted interval" in table


def test_the_compared_methods_plan_their_own_stages_and_settings(tmp_path):
    """tinybert and minilm chain an intermediate stage (its train type, at TinyBERT's stage-1
    settings) into their second stage, which loads its final encoder; ckd takes CKD's MRPC
    lr and epochs; distil_cos the grid's; none takes the Pea-KD protocol's schedule flags;
    the live-teacher stages name the teacher's run and read no teacher file."""
    reproduce = load_reproduce()
    _, argv = plan(reproduce, tmp_path, "--protocol", "authors_exact", "--variants",
                   "pkd,tinybert,sps_tinybert,minilm,ckd,distil_cos")
    assert list(argv)[:6] == ["teacher", "teacher_outputs", "tinybert_layer_SPS_seed1",
                              "minilm_layer_Original_seed1", "tinybert_layer_Original_seed1",
                              "sps_tinybert_seed1"]
    layer = argv["tinybert_layer_Original_seed1"]
    assert [flag(layer, f) for f in ("--train_type", "--learning_rate", "--num_train_epochs",
                                     "--model_type")] == ["tinybert_layer", "5e-05", "10.0",
                                                          "Original"]
    assert flag(layer, "--teacher_dir").endswith("teacher") and "--teacher_prediction" not in layer
    pred = argv["tinybert_seed1"]
    assert [flag(pred, f) for f in ("--train_type", "--learning_rate", "--num_train_epochs")] \
        == ["tinybert_pred", "3e-05", "3.0"]
    assert flag(pred, "--load_model_dir").endswith("tinybert_layer_Original_seed1/"
                                                   "BERT.encoder_final.pkl")
    assert flag(argv["sps_tinybert_seed1"], "--model_type") == "SPS"
    assert flag(argv["minilm_seed1"], "--train_type") == "ft"
    assert [flag(argv["ckd_seed1"], f) for f in ("--learning_rate", "--num_train_epochs")] \
        == ["3e-05", "4.0"]
    assert flag(argv["distil_cos_seed1"], "--learning_rate") == "2e-05"
    for name in ("tinybert_seed1", "ckd_seed1", "distil_cos_seed1", "minilm_seed1"):
        assert "--schedule_applied_twice" not in argv[name] and "--no_shuffle" not in argv[name]
        assert flag(argv[name], "--eval_steps") == "1"  # the grid's evaluation cadence
    assert "--schedule_applied_twice" in argv["pkd_seed1"]
    assert "--teacher_prediction" not in argv["ckd_seed1"]


def test_a_grid_with_the_compared_methods_tables_them(tmp_path):
    glue = make_glue(tmp_path / "glue", tasks=("MRPC",))
    bert = make_tiny_bert(tmp_path / "bert", glue)
    work = tmp_path / "work"
    frame = load_reproduce().main(
        ["--task", "MRPC", "--bert_model", str(bert), "--data_dir", str(glue), "--work_dir",
         str(work), "--protocol", "quick", "--seeds", "1,2", "--variants",
         "pkd,ckd,sps_ckd,tinybert", "--student_hidden_layers", "2", "--max_seq_length", "24",
         "--train_batch_size", "8", "--max_steps", "2", "--no_plot", "--jobs", "2"])
    assert set(frame["variant"]) == {"teacher", "pkd", "ckd", "sps_ckd", "tinybert"}
    table = (work / "results.md").read_text()
    assert "## The compared methods against PKD and PeaKD" in table
    assert "| CKD beats PKD | ckd - pkd | 2 |" in table and "| SPS helps CKD | sps_ckd - ckd |" \
        in table
    results = json.loads((work / "ckd_seed1" / "eval_results.json").read_text())
    assert results["teacher_forwards"] > 0


def test_sigterm_stops_the_grid_and_its_stages(tmp_path):
    """A `kill` of the grid stops the stage it is running too (it resumes next time), instead of
    leaving it running on its own, and the grid exits 130 with a line."""
    glue = make_glue(tmp_path / "glue", tasks=("SST-2",))
    bert = make_tiny_bert(tmp_path / "bert", glue)
    work = tmp_path / "work"
    cmd = [sys.executable, str(ROOT / "bench" / "reproduce.py"), "--task", "SST-2",
           "--bert_model", str(bert), "--data_dir", str(glue), "--work_dir", str(work),
           "--protocol", "quick", "--seeds", "1", "--variants", "ft", "--max_seq_length", "24",
           "--teacher_epochs", "500", "--no_plot"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = work / "logs" / "teacher.log"
    deadline = time.time() + 60
    while time.time() < deadline and not (log.is_file() and "BERT SST-2" in log.read_text()):
        time.sleep(0.2)
    assert log.is_file(), proc.communicate()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err
    assert "leaked semaphore" not in err  # the stopped stage left nothing to clean up
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-f", str(work / "teacher")], capture_output=True, text=True)
    assert left.stdout.strip() == ""


def test_the_runner_starts_the_longest_chain_first_across_seeds(tmp_path):
    """A ready stage's priority is its layer-epochs plus its costliest chain of dependants: with
    every seed ready, the SPS PTP chains (4 x 6 + 7 x 6) of all seeds start before any plain
    student (7 x 3), so no long chain is started last."""
    reproduce = load_reproduce()
    from grid.run import chain_priority, stage_cost

    _, stages = reproduce.grid_plan.plan_grid(reproduce.build_parser().parse_args(
        ["--task", "MRPC", "--bert_model", "b", "--data_dir", "d", "--work_dir", "w",
         "--variants", "ft,sps_pkd,ptp_sps_pkd", "--seeds", "1,2", "--teacher_epochs", "3",
         "--epochs", "7", "--ptp_epochs", "4", "--lr", "2e-5", "--ptp_lr", "2e-5",
         "--teacher_lr", "2e-5", "--teacher_seed", "42", "--train_batch_size", "32",
         "--ptp_thresholds", "median"]), tmp_path, depth=6)
    priority = chain_priority(stages)
    by_label = {s.label: s for s in stages}
    assert stage_cost(by_label["ptp_SPS_seed2"]) == 4 * 6 and priority["ptp_SPS_seed2"] == 66
    assert stage_cost(by_label["ft_seed1"]) == 21 and priority["ft_seed1"] == 21
    seeds = [s for s in stages if s.seed]
    order = sorted(seeds, key=lambda s: -priority[s.label])  # stable: plan order between equals
    assert [s.label for s in order] == ["ptp_SPS_seed1", "ptp_SPS_seed2", "ptp_sps_pkd_seed1",
                                        "sps_pkd_seed1", "ptp_sps_pkd_seed2", "sps_pkd_seed2",
                                        "ft_seed1", "ft_seed2"]
    assert priority["teacher"] > priority["teacher_outputs"] > priority["ptp_SPS_seed1"]

