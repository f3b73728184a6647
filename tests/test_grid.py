"""The grid's paired comparisons and the speed ratios over timed pairs (bench/grid/stats.py)
on fixed numbers with known answers, and how it shares the machine among processes
(bench/grid/run.py)."""
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from grid.stats import (CLAIMS, compare_claims, holm, p_value, paired, paired_ratio, t_quantile,  # noqa: E402
                        verdict)


@pytest.mark.parametrize("p, df, expected", [
    # Student t quantiles from the standard tables (6 significant digits)
    (0.975, 1, 12.7062), (0.975, 2, 4.30265), (0.975, 3, 3.18245), (0.975, 4, 2.77645),
    (0.975, 5, 2.57058), (0.975, 9, 2.26216), (0.975, 10, 2.22814), (0.975, 29, 2.04523),
    (0.975, 30, 2.04227), (0.975, 120, 1.97993), (0.95, 1, 6.31375), (0.995, 5, 4.03214),
    (0.95, 20, 1.72472)])
def test_t_quantile_matches_the_tables(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, abs=6e-5)


def test_t_quantile_refuses_what_it_cannot_compute():
    for p, df in ((0.5, 3), (1.0, 3), (0.975, 0), (0.975, 2.5)):
        with pytest.raises(ValueError):
            t_quantile(p, df)


def test_paired_interval_on_known_numbers():
    # differences 0.02, 0.02, 0.01: mean 1/60, sd sqrt(1/3) / 100, t(0.975, 2) = 4.302653
    c = paired({1: 0.80, 2: 0.82, 3: 0.81, 9: 0.5}, {1: 0.78, 2: 0.80, 3: 0.80, 7: 0.9})
    half = 4.302653 * math.sqrt(1 / 3) / 100 / math.sqrt(3)
    assert c.n == 3 and c.mean == pytest.approx(1 / 60)
    assert (c.low, c.high) == (pytest.approx(1 / 60 - half, abs=1e-7),
                               pytest.approx(1 / 60 + half, abs=1e-7))
    assert (c.won, c.lost, c.tied, c.verdict) == (3, 0, 0, "supported")


def test_verdicts():
    assert paired({1: 0.7, 2: 0.7}, {1: 0.8, 2: 0.81}).verdict == "contradicted"
    mixed = paired({1: 0.8, 2: 0.7, 3: 0.75}, {1: 0.7, 2: 0.8, 3: 0.75})
    assert (mixed.mean, mixed.won, mixed.lost, mixed.tied, mixed.verdict) == \
        (pytest.approx(0.0, abs=1e-12), 1, 1, 1, "not decided")
    one = paired({1: 0.9, 2: 0.9}, {1: 0.1})
    assert (one.n, one.low, one.high, one.verdict) == (1, None, None, "too few seeds")
    assert paired({1: 0.9}, {2: 0.1}).n == 0
    # an interval that touches 0 does not exclude it
    assert verdict(0.0, 0.1, 5) == "not decided" and verdict(1e-9, 0.1, 5) == "supported"
    # every seed the same difference: a t interval of no width, which decides nothing
    same = paired({1: 284 / 408, 2: 287 / 408, 3: 290 / 408},
                  {1: 286 / 408, 2: 289 / 408, 3: 292 / 408})
    assert (same.lost, same.low, same.high) == (3, pytest.approx(-2 / 408), pytest.approx(-2 / 408))
    assert same.verdict == "not decided (no spread)"
    # equal differences up to float rounding (0.7 - 0.6 != 0.4 - 0.3 in binary) count as equal
    assert paired({1: 0.7, 2: 0.4}, {1: 0.6, 2: 0.3}).verdict == "not decided (no spread)"


def test_p_value_of_a_paired_t_test():
    # t(0.975, 4) = 2.776445: a mean of 2.776445 standard errors has p 0.05
    assert p_value(2.776445 * 0.1 / math.sqrt(5), 0.1, 5) == pytest.approx(0.05, abs=1e-6)
    assert p_value(0.0, 0.1, 5) == pytest.approx(1.0)
    assert p_value(0.01, 0.0, 5) == 1.0 and p_value(0.0, 0.0, 5) == 1.0


def test_a_row_with_no_spread_takes_no_holm_step_from_the_others():
    """Two claims: one at p 0.01, one whose seeds all gave -2/408. The no-spread
    row ranks last (p 1), so the other is tested at 0.05 / 2 and its verdict stands or falls on
    its own p, never on a t test that could not be made."""
    same = paired({1: 284 / 408, 2: 287 / 408, 3: 290 / 408},
                  {1: 286 / 408, 2: 289 / 408, 3: 292 / 408}, claim="same")
    decided = row(0.01, name="decided")
    rows = {r.claim or r.a: r for r in holm([same, decided])}
    assert rows["same"].verdict == "not decided (no spread)" and rows["same"].p_holm == 1.0
    assert rows["decided"].p_holm == pytest.approx(0.02)
    assert rows["decided"].verdict == "supported"


def row(p, n=5, sd=0.01, name="x"):
    """A Comparison whose mean gives the paired t test this two-sided p."""
    t = t_quantile(1 - p / 2, n - 1)
    return paired({i: 0.0 for i in range(n)}, {i: 0.0 for i in range(n)}, name, "b", name) \
        .__class__(name, "b", name, n, t * sd / math.sqrt(n), None, None, n, 0, 0, "",
                   sd, p)


def test_holm_steps_down_and_words_each_verdict_from_its_adjusted_interval():
    """m = 3 at alpha 0.05: p 0.01 < 0.05/3 is rejected; p 0.03 > 0.05/2 stops the procedure,
    so p 0.04 is not rejected either although it is below 0.05. Each interval excludes 0 exactly
    when its row is rejected; adjusted p: 3 x 0.01, 2 x 0.03, max(0.06, 0.04)."""
    rows = holm([row(0.04, name="c"), row(0.01, name="a"), row(0.03, name="b")])
    by = {r.a: r for r in rows}
    assert [by[k].verdict for k in "abc"] == ["supported", "not decided", "not decided"]
    assert [by[k].p_holm for k in "abc"] == [pytest.approx(0.03), pytest.approx(0.06),
                                             pytest.approx(0.06)]
    assert by["a"].level == pytest.approx(1 - 0.05 / 3)
    assert by["b"].level == by["c"].level == pytest.approx(1 - 0.05 / 2)
    assert by["a"].low > 0 and by["b"].low < 0 < by["b"].high and by["c"].low < 0
    # one comparison alone: the plain 95% interval
    alone = holm([row(0.04)])[0]
    assert alone.verdict == "supported" and alone.level == pytest.approx(0.95)
    # excluded, but the near end within one dev example of 0: borderline
    near = holm([row(0.04, sd=0.01)], grain=0.01)[0]
    assert near.low < 0.01 and near.verdict == "borderline (not decided)"


def test_holm_intervals_agree_with_its_decisions_on_random_tables():
    rng = random.Random(0)
    for _ in range(200):
        rows = holm([row(rng.choice([1e-4, 0.002, 0.011, 0.021, 0.03, 0.2, 0.6]), name=str(i))
                     for i in range(rng.randint(1, 7))])
        ranked = sorted(rows, key=lambda r: r.p)
        m, decided = len(ranked), True
        for i, r in enumerate(ranked):
            decided = decided and r.p < 0.05 / (m - i)
            assert (r.low > 0) == decided, (r.p, m, i)


def test_claims_cover_the_papers_comparisons_that_ran():
    assert [(a, b) for a, b, _ in CLAIMS] == [
        ("ptp_sps_pkd", "pkd"), ("pkd", "kd"), ("kd", "ft"), ("sps_pkd", "pkd"),
        ("sps_pkd", "sps_no_shuffle_pkd"), ("ptp_pkd", "pkd"), ("ptp_sps_pkd", "sps_pkd")]
    rows = compare_claims({"kd": {1: 0.8, 2: 0.8}, "ft": {1: 0.7, 2: 0.75}, "pkd": {1: 0.8}})
    assert [(r.a, r.b, r.n, r.verdict) for r in rows] == [
        ("pkd", "kd", 1, "too few seeds"), ("kd", "ft", 2, "not decided")]


def test_each_process_slot_gets_its_share_of_cores_and_gpus():
    from grid.run import slot_env

    base = {"PATH": "/bin", "OMP_NUM_THREADS": "7"}
    assert slot_env(0, 1, base, n_cores=8, gpus=["0", "1"]) == base  # one job: as called
    # a share of the machine (--cores): one job takes all of it, two split it
    assert slot_env(0, 1, base, n_cores=2, gpus=[], share=1)["OMP_NUM_THREADS"] == "1"
    assert slot_env(0, 2, base, n_cores=16, gpus=[], share=8)["MKL_NUM_THREADS"] == "4"
    env = slot_env(1, 2, base, n_cores=8, gpus=[])
    assert env["OMP_NUM_THREADS"] == "4" and "CUDA_VISIBLE_DEVICES" not in env
    assert slot_env(0, 3, base, n_cores=2, gpus=["5"])["OMP_NUM_THREADS"] == "1"
    assert "CUDA_VISIBLE_DEVICES" not in slot_env(0, 3, base, n_cores=2, gpus=["5"])
    assert [slot_env(s, 3, base, n_cores=16, gpus=["2", "3"])["CUDA_VISIBLE_DEVICES"]
            for s in range(3)] == ["2", "3", "2"]
    assert base == {"PATH": "/bin", "OMP_NUM_THREADS": "7"}


def test_an_interrupted_stage_resumes_and_a_fresh_one_starts(tmp_path):
    from grid.plan import Stage
    from grid.run import resume_flag

    def stage(done):
        return Stage(label="x", kind="student", argv=[], done=done, record=tmp_path / "r.json")

    student, ptp = tmp_path / "ft_seed1", tmp_path / "ptp_SPS_seed1"
    student.mkdir()
    ptp.mkdir()
    assert resume_flag(stage(student / "eval_results.json")) == []
    (student / "resume_state.pkl").write_bytes(b"")
    assert resume_flag(stage(student / "eval_results.json")) == ["--resume"]
    # PTP runs carry their prefix; the teacher file has no resume state
    (ptp / "resume_state.pkl").write_bytes(b"")
    assert resume_flag(stage(ptp / "PTP.eval_results.json")) == []
    (ptp / "PTP.resume_state.pkl").write_bytes(b"")
    assert resume_flag(stage(ptp / "PTP.eval_results.json")) == ["--resume"]
    assert resume_flag(stage(tmp_path / "MRPC_patient_kd_teacher_6layer_result_summary.pkl")) == []


PROBE_SCRIPT = """
import os, sys
import torch
print("argv", sys.argv[1:], "env", os.environ.get("PEAKD_PROBE"), "threads",
      torch.get_num_threads(), "first path", os.path.basename(sys.path[0]), flush=True)
if sys.argv[1] == "fail":
    raise ValueError("probe failed")
if sys.argv[1] == "wait":
    import time
    time.sleep(60)
sys.exit(int(sys.argv[1]))
"""


@pytest.mark.parametrize("forkserver", [True, False])
def test_a_launched_stage_runs_as_python_script_would(tmp_path, forkserver):
    """Forked from the stage server or in a new interpreter, a stage gets its argv, its own
    environment and thread count, its script's folder first on sys.path and its exit status,
    and appends its output to its log; terminate stops it."""
    import os

    from utils.launch import launch

    script = tmp_path / "scripts" / "probe.py"
    script.parent.mkdir()
    script.write_text(PROBE_SCRIPT)
    log = tmp_path / "probe.log"
    log.write_text("earlier attempt\n")
    env = {**os.environ, "PEAKD_PROBE": "slot env", "OMP_NUM_THREADS": "1"}
    assert launch(script, ["3", "x y"], env, log, forkserver).wait() == 3
    lines = log.read_text().splitlines()
    assert lines == ["earlier attempt", "argv ['3', 'x y'] env slot env threads 1 "
                                        "first path scripts"]
    assert "PEAKD_PROBE" not in os.environ  # the caller's environment is left alone
    assert launch(script, ["fail"], env, log, forkserver).wait() == 1
    assert log.read_text().splitlines()[-1] == "ValueError: probe failed"
    waiting = launch(script, ["wait"], env, log, forkserver)
    assert waiting.poll() is None
    waiting.terminate()
    assert waiting.wait() == -15 and waiting.returncode == -15


def test_launch_starts_new_interpreters_when_a_forked_process_cannot_use_the_gpu(
        tmp_path, monkeypatch, capsys):
    """A GPU that a forked probe cannot use (here a device name torch refuses) makes every
    later launch a new interpreter, after one warning; a usable one (the CPU) keeps forking."""
    import os
    import subprocess

    from utils import launch

    script = tmp_path / "probe.py"
    script.write_text(PROBE_SCRIPT)
    env = dict(os.environ)
    monkeypatch.setattr(launch, "_FORK_OK", None)
    monkeypatch.setattr(launch, "_probe_device", lambda: "cpu")
    assert isinstance(launch.launch(script, ["0"], env, tmp_path / "a.log"), launch._Forked)
    monkeypatch.setattr(launch, "_FORK_OK", None)
    monkeypatch.setattr(launch, "_probe_device", lambda: "no_such_device")
    first = launch.launch(script, ["0"], env, tmp_path / "b.log")
    second = launch.launch(script, ["4"], env, tmp_path / "c.log")
    assert isinstance(first, subprocess.Popen) and isinstance(second, subprocess.Popen)
    assert first.wait() == 0 and second.wait() == 4
    err = capsys.readouterr().err
    assert err.count("warning: a process forked from the stage server could not use "
                     "no_such_device") == 1


def finishing_start(started):
    """A stand-in for grid.run.start: notes each stage's label in `started` and runs a process
    that only writes the stage's results file."""
    def start(stage, env, logs, forkserver):
        started.append(stage.label)
        proc = subprocess.Popen([sys.executable, "-c",
                                 f"open({str(stage.done)!r}, 'w').write('{{}}')"])
        return proc, logs / f"{stage.label}.log"
    return start


def test_a_resumed_stage_records_no_wall_time(tmp_path, monkeypatch):
    """Its earlier attempts ran in processes the grid did not time: the record says None
    rather than the last attempt's seconds (which made 'not training' negative)."""
    import json

    import grid.run as run
    from grid.plan import Stage

    monkeypatch.setattr(run, "start", finishing_start([]))
    stages = []
    for label in ("fresh", "resumed"):
        (tmp_path / label).mkdir()
        stages.append(Stage(label=label, kind="student", argv=[],
                            done=tmp_path / label / "eval_results.json",
                            record=tmp_path / label / "grid_stage.json"))
    (tmp_path / "resumed" / "resume_state.pkl").write_bytes(b"")
    run.run_stages(stages, tmp_path, tmp_path)
    fresh, resumed = (json.loads(s.record.read_text()) for s in stages)
    assert fresh["wall_seconds"] > 0 and resumed["wall_seconds"] is None


def test_seed_order_starts_every_stage_of_a_seed_before_the_next_seeds(tmp_path, monkeypatch):
    """--order seed: the teacher, then seed 1's stages (longest chain first), then seed 2's, so
    a grid stopped part-way leaves whole seeds; the default (chain) starts seed 2's long SPS
    student before seed 1's short one. One job, so starts follow the priority exactly."""
    import grid.run as run
    from grid.plan import GridError, Stage

    started = []
    monkeypatch.setattr(run, "start", finishing_start(started))

    def stages(folder):
        plan = [("teacher", None, "Original", (), "3")]
        for seed in ("1", "2"):
            plan += [(f"ft_seed{seed}", seed, "Original", ("teacher",), "1"),
                     (f"sps_seed{seed}", seed, "SPS", ("teacher",), "7")]
        out = []
        for label, seed, model, needs, epochs in plan:
            (folder / label).mkdir(parents=True)
            out.append(Stage(label=label, kind="student", seed=seed, needs=needs,
                             argv=["--model_type", model, "--num_train_epochs", epochs],
                             done=folder / label / "eval_results.json",
                             record=folder / label / "grid_stage.json"))
        return out

    run.run_stages(stages(tmp_path / "seed"), tmp_path, tmp_path, order="seed")
    assert started == ["teacher", "sps_seed1", "ft_seed1", "sps_seed2", "ft_seed2"]
    started.clear()
    run.run_stages(stages(tmp_path / "chain"), tmp_path, tmp_path)
    assert started == ["teacher", "sps_seed1", "sps_seed2", "ft_seed1", "ft_seed2"]
    with pytest.raises(GridError, match="--order 'random'"):
        run.start_priority(stages(tmp_path / "bad"), "random")


def test_the_seed_table_shows_every_run_and_the_mean_of_those_that_ran():
    import pandas as pd

    from grid.report import seed_table

    frame = pd.DataFrame([
        {"variant": "teacher", "seed": "-", "acc": 0.80, "f1": 0.86},
        {"variant": "ft", "seed": "1", "acc": 0.70, "f1": 0.80},
        {"variant": "ft", "seed": "2", "acc": 0.72, "f1": 0.84},
        {"variant": "pkd", "seed": "1", "acc": 0.75, "f1": 0.81},
        {"variant": "ft", "seed": "10", "acc": 0.74, "f1": 0.82}])
    lines = seed_table(frame, "acc").splitlines()
    assert lines[0] == "Dev acc (f1 in parentheses) of the checkpoint each run selected."
    assert lines[2] == "| variant | seed 1 | seed 2 | seed 10 | mean |"  # seeds in number order
    assert lines[4] == "| teacher | - | - | - | 0.8000 (0.8600) |"
    assert lines[5] == ("| ft | 0.7000 (0.8000) | 0.7200 (0.8400) | 0.7400 (0.8200) "
                        "| 0.7200 (0.8200) |")
    assert lines[6] == "| pkd | 0.7500 (0.8100) | - | - | 0.7500 (0.8100) |"
    # a task with one metric (CoLA's mcc) shows it alone
    cola = frame.drop(columns="f1").rename(columns={"acc": "mcc"})
    assert seed_table(cola, "mcc").splitlines()[5] == "| ft | 0.7000 | 0.7200 | 0.7400 | 0.7200 |"


def test_the_variant_table_shows_a_dash_where_no_run_has_a_value():
    import pandas as pd

    from grid.report import summarize

    frame = pd.DataFrame([
        {"variant": "teacher", "seed": "-", "acc": 0.80, "wall_seconds": 100.0},
        {"variant": "ft", "seed": "1", "acc": 0.70, "wall_seconds": None},   # resumed
        {"variant": "ft", "seed": "2", "acc": 0.74, "wall_seconds": None}])
    lines = summarize(frame).splitlines()
    assert lines[0] == "| variant | runs | acc | wall_seconds |"
    assert lines[2] == "| teacher | 1 | 0.8000 ± 0.0000 | 100.0 |"
    assert lines[3] == "| ft | 2 | 0.7200 ± 0.0283 | - |"


def test_predictions_digest_follows_the_predictions_not_the_folder(tmp_path):
    """The grid's records compare teachers by this digest: the same predictions saved by
    teachers in two folders digest alike; one changed logit does not."""
    import torch

    from utils import teacher_outputs

    def saved(name, teacher_dir, logits):
        split = teacher_outputs.make_split("f" * 64, logits, torch.ones(3, 4), torch.ones(3, 2, 4),
                                           torch.tensor([0, 1, 1]), torch.ones(3, 5),
                                           torch.full((3,), 5), {"acc": 1.0})
        path = tmp_path / name
        teacher_outputs.save(path, "MRPC", 2, 5, teacher_dir, {"train": split})
        return teacher_outputs.predictions_digest(path)

    logits = torch.tensor([[0.1, 0.9], [0.2, 0.8], [0.7, 0.3]])
    first = saved("a.pkl", tmp_path / "one" / "teacher", logits)
    assert saved("b.pkl", tmp_path / "two" / "teacher", logits.clone()) == first
    changed = logits.clone()
    changed[2, 0] += 1e-6
    assert saved("c.pkl", tmp_path / "one" / "teacher", changed) != first


def test_paired_ratio_gives_the_geometric_mean_and_a_t_interval():
    # b / a per pair: 2, 2, 2 -> a point interval at 2, above 1
    assert paired_ratio([1, 2, 3], [2, 4, 6]) == pytest.approx(
        {"ratio": 2, "low": 2, "high": 2, "verdict": "faster", "pairs": 3, "min": 2, "max": 2})
    # ratios 1/2, 1/2, 1/2: slower; ratios 2 and 1/2 and 1: log mean 0, not decided
    assert paired_ratio([2, 2, 2], [1, 1, 1])["verdict"] == "slower"
    mixed = paired_ratio([1, 2, 1], [2, 1, 1])
    assert mixed["verdict"] == "not decided" and mixed["ratio"] == pytest.approx(1)
    # log ratios 0, 0.1, 0.2: mean 0.1, sd 0.1, interval 0.1 -+ t(0.975, 2) * 0.1 / sqrt(3)
    r = paired_ratio([1, 1, 1], [1, math.exp(0.1), math.exp(0.2)])
    half = 4.302653 * 0.1 / math.sqrt(3)
    assert (r["low"], r["high"]) == pytest.approx((math.exp(0.1 - half), math.exp(0.1 + half)))
    assert r["verdict"] == "not decided"
    with pytest.raises(ValueError, match="at least 3 pairs"):
        paired_ratio([1, 1], [1, 1])


def test_under_train_slice_selection_every_claim_table_comes_again_on_best_on_dev_scores():
    """Each claim table (the paper's, the compared methods') is tabled on the chosen
    checkpoints' scores and, under train-slice selection, again on best_dev, each from its own
    column; the per-seed best-on-dev scores come once, before the first table on them."""
    import pandas as pd

    from grid.report import claim_tables, markdown

    rows = [{"variant": "teacher", "seed": "-", "acc": 0.80, "best_dev": 0.80,
             "select": "train_slice"}]
    for seed, shift in (("1", 0.00), ("2", 0.01), ("3", -0.01)):
        for variant, acc, best in (("pkd", 0.70, 0.72), ("ptp_sps_pkd", 0.74, 0.75),
                                   ("ckd", 0.70, 0.71), ("sps_ckd", 0.75, 0.79)):
            rows.append({"variant": variant, "seed": seed, "acc": acc + shift,
                         "best_dev": best + shift, "select": "train_slice"})
    frame = pd.DataFrame(rows)
    tables = claim_tables(frame, "acc", best_dev=True)
    assert [(heading.split(",")[0], score) for heading, _, score in tables] == [
        ("The paper's claims", "acc"),
        ("The same claims on best-on-dev scores (dev chose these)", "best_dev"),
        ("The compared methods against PKD and PeaKD", "acc"),
        ("The compared methods on best-on-dev scores (dev chose these)", "best_dev")]
    sps_helps_ckd = [next(r for r in t if r.claim == "SPS helps CKD") for _, t, _ in tables[2:]]
    assert [round(r.mean, 4) for r in sps_helps_ckd] == [0.05, 0.08]  # acc, then best_dev
    assert [score for _, _, score in claim_tables(frame, "acc")] == ["acc", "acc"]
    text = markdown(frame, {}, tables, "acc")
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[2:] == ["## " + heading for heading, _, _ in tables]
    assert text.count("Dev best_dev of the checkpoint each run selected.") == 1
    assert text.index("Dev best_dev of the") < text.index("## The compared methods against")
    assert "| SPS helps CKD | sps_ckd - ckd | 3 | +0.0800 |" in text
