"""Determinism on the CPU: the same seed gives the same metrics, logs and checkpoints."""
import json

import pytest

from helpers import load_script, train_args, tree_digest

# (script, task, flags, reads the teacher file)
RUNS = {
    # dropout, the shuffled batches and the fresh head's init draw from the seed
    "ft": ("finetune", "SST-2", (), False),
    # and a pkd SPS student's random Q/K swap flips
    "pkd SPS random swaps": ("finetune_ER", "MRPC", ("--train_type", "pkd", "--swap_prob", 0.5),
                             True),
}
LOGS = ("train_log.csv", "eval_log.csv")


def run(script, task, tiny, out, seed, *extra):
    results = load_script(script).main(train_args(
        task, tiny.data, tiny.bert, out, "--student_hidden_layers", 2, "--max_steps", 4,
        "--eval_steps", 2, "--train_seed", seed, *extra))
    timings = [k for k in results if k.endswith(("seconds", "per_second"))]
    return {k: v for k, v in results.items() if k not in timings}


def outputs(out):
    """Checkpoints and logs by content; resume state and timings are left out (wall clock)."""
    digests = tree_digest(out)
    return {name: digests[name] for name in digests
            if name.startswith("BERT.") or name in LOGS}


@pytest.mark.parametrize("name", RUNS)
def test_same_seed_same_metrics_and_checkpoints(name, tiny, mrpc_teacher, tmp_path):
    script, task, extra, teacher = RUNS[name]
    if teacher:
        extra += ("--teacher_prediction", mrpc_teacher.file)
    first = run(script, task, tiny, tmp_path / "a", 3, *extra)
    again = run(script, task, tiny, tmp_path / "b", 3, *extra)
    other = run(script, task, tiny, tmp_path / "c", 4, *extra)
    assert json.dumps(first, sort_keys=True) == json.dumps(again, sort_keys=True)
    assert outputs(tmp_path / "a") == outputs(tmp_path / "b")
    # the seed matters: another one trains another model
    encoder = "BERT.encoder_loss.pkl"
    assert outputs(tmp_path / "a")[encoder] != outputs(tmp_path / "c")[encoder]
