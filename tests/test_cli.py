"""Every script's command line: --help gives each flag a help text and its default and cites
nothing outside the repository; every script ends by saying what it did and where."""
import argparse
import shutil
import sys
from pathlib import Path

import pytest

from helpers import load_script, train_args

SRC = Path(__file__).resolve().parents[1] / "src"
# the downloaders import their shared http_fetch module from their own folder
sys.path.insert(0, str(SRC / "data" / "data_raw"))
# every script (anything with a build_parser), so that a new one is checked too
SCRIPTS = sorted(str(p.relative_to(SRC).with_suffix("")) for p in
                 [*SRC.glob("*.py"), *SRC.glob("data/data_raw/download_*.py")]
                 if "def build_parser" in p.read_text(encoding="utf-8"))


def test_the_scripts_are_found():
    assert {"finetune", "finetune_ER", "PTP", "save_teacher_outputs", "export_hf",
            "data/data_raw/download_glue_data",
            "data/data_raw/download_pretrained_bert"} <= set(SCRIPTS)


BENCH = SRC.parent / "bench"


def bench_parser(name):
    """The parser of bench/<name>.py (the benchmark and the grid)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"cli_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_parser()


@pytest.mark.parametrize("script", SCRIPTS + ["bench/reproduce", "bench/throughput"])
def test_every_flag_has_help_and_a_default_and_no_outside_citation(script, capsys):
    parser = (bench_parser(script.split("/")[1]) if script.startswith("bench/")
              else load_script(script).build_parser())
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and action.help.strip(), action.option_strings
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    text = capsys.readouterr().out
    assert "SPEC" not in text
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        # the help text as --help prints it: it says the flag's default or that it is required
        entry = formatter._expand_help(action)
        assert "default:" in entry or "(required)" in entry, (action.option_strings, entry)
    for action in parser._actions:
        for choice in action.choices or ():
            assert str(choice) in text


def test_docstrings_cite_nothing_outside_the_repository():
    root = SRC.parent
    for path in [*SRC.rglob("*.py"), *(root / "bench").glob("*.py")]:
        text = path.read_text(encoding="utf-8").replace("SPECIAL_TOKENS", "")
        assert "SPEC" not in text, path


def summary(capsys):
    """The last two stdout lines of a script."""
    return capsys.readouterr().out.strip().splitlines()[-2:]


def test_scripts_end_with_what_they_did_and_where(tiny, mrpc_teacher, tmp_path, capsys):
    out = tmp_path / "student"
    capsys.readouterr()
    load_script("finetune").main(train_args("MRPC", tiny.data, tiny.bert, out,
                                            "--student_hidden_layers", 2))
    done, where = summary(capsys)
    assert done.startswith("done: MRPC ft Original") and "dev acc " in done
    assert "(BERT.*_acc.pkl, epoch 1" in done and "(BERT.*_loss.pkl" in done
    assert where == f"run folder: {out.resolve()}"

    ptp_run = shutil.copytree(mrpc_teacher.run, tmp_path / "run-1")
    load_script("PTP").main(train_args("MRPC", tiny.data, tiny.bert, ptp_run,
                                       "--student_hidden_layers", 2, "--teacher_prediction",
                                       mrpc_teacher.file))
    done, where = summary(capsys)
    assert "dev acc " in done and "(PTP.*_acc.pkl" in done
    assert where == f"run folder: {ptp_run.resolve()}"

    path = load_script("save_teacher_outputs").main(
        ["--task", "MRPC", "--data_dir", str(tiny.data), "--teacher_dir", str(out),
         "--output_dir", str(tmp_path), "--no_cuda", "--no_layer_features"])
    done, where = summary(capsys)
    assert done.startswith("done: MRPC teacher outputs") and "; dev acc " in done
    assert where == f"teacher file: {path.resolve()}"

    load_script("export_hf").main(["--run_dir", str(out), "--export_dir",
                                   str(tmp_path / "export"), "--criterion", "loss"])
    done, where = summary(capsys)
    assert done.startswith(f"done: exported {out}") and "(BERT.*_loss.pkl" in done
    assert where == f"export folder: {(tmp_path / 'export').resolve()}"


def test_every_example_in_a_help_text_works():
    """Each `e.g. VALUE` of every script's, the grid's and the benchmark's --help is accepted
    where it applies (the grid's pass-through examples: tests/test_trial.py). A new example
    fails here until it is given its check below."""
    import re

    from BERT.pytorch_pretrained_bert import load_config  # noqa: F401 (src on the path)
    from utils.args import task_output_dir
    from utils.checkpoints import checkpoint_path
    from utils.losses import resolve_fc_layer_idx
    from utils.modeling import second_pass_layers, student_layer_map

    sys.path.insert(0, str(BENCH))
    from grid.plan import parse_seeds

    checks = {
        ("--layer_initialization", "1,5,9"): lambda v: student_layer_map(3, 12, v) == [0, 4, 8],
        ("--fc_layer_idx", "3,7"): lambda v: resolve_fc_layer_idx(v, 3, 12) == [3, 7],
        ("--sps_layers", "4,5,6"): lambda v: second_pass_layers(v, 6) == [3, 4, 5],
        ("--seeds", "1,2,3,4,5"): lambda v: parse_seeds(v) == ["1", "2", "3", "4", "5"],
        # the file PTP.py writes into the README's run-1
        ("--load_model_dir", "run-1/PTP.encoder_loss.pkl"): lambda v: task_output_dir(
            "MRPC", v) == checkpoint_path(task_output_dir("MRPC", "run-1"), "PTP", "encoder",
                                          "loss"),
    }
    parsers = [load_script(s).build_parser() for s in SCRIPTS] + \
        [bench_parser(n) for n in ("reproduce", "throughput")]
    found = set()
    for parser in parsers:
        for action in parser._actions:
            for value in re.findall(r"e\.g\. ([^\s;,)]+(?:,[^\s;,)]+)*)", action.help or ""):
                if value.startswith("--"):
                    continue  # a pass-through flag's example
                found.add((action.option_strings[0], value))
    assert found == set(checks), found ^ set(checks)
    for key, check in checks.items():
        assert check(key[1]), key
