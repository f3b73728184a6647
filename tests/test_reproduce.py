"""bench/reproduce.py on tiny data: the grid runs through the real scripts, collects one row per
run, and a repeated command skips what is finished."""
import importlib.util
from pathlib import Path

import pytest

from helpers import make_glue, make_tiny_bert

ROOT = Path(__file__).resolve().parents[1]


def load_reproduce():
    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "bench" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_grid_runs_collects_and_resumes(tmp_path, capsys):
    # CoLA spelled in lower case: the teacher file must be found under the name its owner
    # module gives it ("CoLA_...", not "COLA_...")
    glue = make_glue(tmp_path / "glue", tasks=("CoLA",))
    bert = make_tiny_bert(tmp_path / "bert", glue)
    reproduce = load_reproduce()
    argv = ["--task", "cola", "--bert_model", str(bert), "--data_dir", str(glue),
            "--work_dir", str(tmp_path / "work"), "--seeds", "1", "--variants",
            "ft,ptp_sps_pkd", "--student_hidden_layers", "2", "--max_seq_length", "24",
            "--train_batch_size", "8", "--max_steps", "2"]
    frame = reproduce.main(argv)
    chart = tmp_path / "work" / "results.png"
    if importlib.util.find_spec("matplotlib"):
        assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert not chart.exists() and "matplotlib is not installed" in capsys.readouterr().out
    assert list(frame["variant"]) == ["teacher", "ft", "ptp_sps_pkd"]
    assert set(frame["metric"]) == {"mcc"} and frame["mcc"].notna().all()
    assert list(frame["effective_layers"]) == [4, 2, 4]
    assert frame.loc[2, "num_parameters"] == frame.loc[1, "num_parameters"]
    table = (tmp_path / "work" / "results.md").read_text()
    assert "| ptp_sps_pkd | 1 |" in table and "±" in table
    assert (tmp_path / "work" / "results.csv").read_text().count("\n") == 4
    capsys.readouterr()
    reproduce.main(argv)
    out = capsys.readouterr().out
    assert "[run " not in out and out.count("[skip ") == 5 and "[skip 5/5]" in out


def test_bad_inputs_fail_in_one_line_before_any_run(tmp_path):
    glue = make_glue(tmp_path / "glue", tasks=("MRPC",))
    bert = make_tiny_bert(tmp_path / "bert", glue)
    reproduce = load_reproduce()
    work = tmp_path / "work"
    good = ["--task", "MRPC", "--bert_model", str(bert), "--data_dir", str(glue),
            "--work_dir", str(work)]
    cases = [(["--bert_model", str(tmp_path)], "--bert_model"),
             (["--data_dir", str(tmp_path)], "--data_dir"),
             (["--variants", "ft,pkd2"], "--variants")]
    for extra, flag in cases:
        with pytest.raises(SystemExit) as err:
            reproduce.main(good + extra)
        message = str(err.value)
        assert message.startswith("error: ") and flag in message and "\n" not in message
    assert not work.exists()


def test_the_plan_gives_each_stage_its_own_learning_rate(tmp_path):
    reproduce = load_reproduce()
    args = reproduce.build_parser().parse_args(
        ["--task", "MRPC", "--bert_model", "b", "--data_dir", "d", "--work_dir", "w",
         "--seeds", "1", "--variants", "ft,ptp_sps_pkd", "--teacher_lr", "3e-5", "--lr", "5e-5",
         "--ptp_lr", "2e-5"])
    _, stages = reproduce.plan_grid(args, tmp_path, depth=6)
    rates = {label: argv[argv.index("--learning_rate") + 1] for label, script, argv, _ in stages
             if "--learning_rate" in argv}
    assert rates == {"teacher": "3e-05", "ft_seed1": "5e-05", "ptp_SPS_seed1": "2e-05",
                     "ptp_sps_pkd_seed1": "5e-05"}
    assert all(argv.count("--learning_rate") <= 1 for _, _, argv, _ in stages)
    args.ptp_lr = None
    _, stages = reproduce.plan_grid(args, tmp_path, depth=6)
    ptp_argv = next(argv for label, _, argv, _ in stages if label == "ptp_SPS_seed1")
    assert ptp_argv[ptp_argv.index("--learning_rate") + 1] == "5e-05"
