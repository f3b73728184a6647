"""export_hf.py: trained runs load in plain transformers and give our logits (SPS unrolled)."""
import json
import shutil

import pytest
import torch

from helpers import expect_error, exported_dev, load_script, train_args
from utils.export import EXPORT_FILES
from utils.modeling import load_tokenizer, load_trained_run

transformers = pytest.importorskip("transformers")

EXPORT = load_script("export_hf")
STUDENT = ("--student_hidden_layers", 2, "--max_steps", 2)
# (script, task, extra flags, effective layers)
RUNS = {
    "Original": ("finetune", "MRPC", ("--model_type", "Original"), 2),
    "SPS": ("finetune", "MRPC", ("--model_type", "SPS"), 4),
    "SPS_no_shuffle": ("finetune", "MRPC", ("--model_type", "SPS_no_shuffle"), 4),
    "SPS second pass over layer 2": ("finetune_ER", "MRPC", ("--sps_layers", "2"), 3),
    "SPS regression": ("finetune", "STS-B", ("--model_type", "SPS"), 4),
}


def trained_run(script, task_name, tiny, run, *extra):
    """A few-step run whose attention is sharpened: random weights attend almost uniformly, and
    then swapping Query and Key changes the output by less than the export's tolerance. Scaling
    both projections by 10 scales the attention scores by 100."""
    load_script(script).main(train_args(task_name, tiny.data, tiny.bert, run, *STUDENT, *extra))
    for path in run.glob("BERT.encoder_*.pkl"):
        state = torch.load(path, weights_only=True)
        for key in state:
            if ".attention.self.query." in key or ".attention.self.key." in key:
                state[key] = state[key] * 10
        torch.save(state, path)
    return run


@pytest.mark.parametrize("name", RUNS)
def test_exported_run_loads_in_transformers_with_our_logits(name, tiny, tmp_path):
    script, task_name, extra, depth = RUNS[name]
    run, export = tmp_path / "run", tmp_path / "export"
    trained_run(script, task_name, tiny, run, *extra)
    EXPORT.main(["--run_dir", str(run), "--export_dir", str(export), "--criterion", "loss"])
    assert sorted(p.name for p in export.iterdir()) == sorted(EXPORT_FILES)

    theirs, info = transformers.BertForSequenceClassification.from_pretrained(
        export, output_loading_info=True)
    assert not any(info.values()), info
    ours, task, features, encoded = exported_dev(run, export, tiny.data, "loss")
    config = json.loads((export / "config.json").read_text())
    assert config["model_type"] == "bert" and config["num_hidden_layers"] == depth
    assert theirs.config.num_labels == task.num_labels
    if task.labels:
        assert list(theirs.config.id2label.values()) == list(task.labels)

    assert torch.equal(encoded["input_ids"], features.input_ids)
    assert torch.equal(encoded["token_type_ids"], features.token_type_ids)
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        want = ours(encoded["input_ids"], encoded["token_type_ids"], encoded["attention_mask"],
                    output_all_encoded_layers=True)
        got = theirs(**encoded, output_hidden_states=True)
    assert (got.logits - want.logits).abs().max() < 1e-4
    # logits of a barely trained head are small; every layer's output is O(1) after LayerNorm
    # (compared at the real tokens: padding positions hold no defined value)
    real = encoded["attention_mask"].bool()
    for mine, exported in zip(want.encoded_layers, got.hidden_states[1:], strict=True):
        assert (exported - mine)[real].abs().max() < 1e-4


def test_sps_is_not_plain_bert_without_the_unrolling(tiny, tmp_path):
    """The check above has teeth: an SPS student computes something else than its first k
    layers, or its 2k layers without the swap."""
    run = trained_run("finetune", "MRPC", tiny, tmp_path / "run", "--model_type", "SPS")
    sps = load_trained_run(run, "loss")[0].eval()
    plain = load_trained_run(run, "loss")[0].eval()
    plain.bert.encoder.set_schedule(plain.bert.encoder.schedule[:2])
    no_swap = load_trained_run(run, "loss")[0].eval()
    no_swap.bert.encoder.set_schedule([(i, False) for i, _ in sps.bert.encoder.schedule])
    ids = torch.randint(5, 50, (3, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        last = [m.bert(ids).sequence_output for m in (sps, plain, no_swap)]
    # a hundred times the export's tolerance
    assert (last[0] - last[1]).abs().max() > 1e-2
    assert (last[0] - last[2]).abs().max() > 1e-2


def test_export_refuses_a_folder_that_is_not_a_run_and_a_full_export_dir(tmp_path, capsys):
    export = tmp_path / "export"
    expect_error(EXPORT.main, ["--run_dir", tmp_path / "nowhere", "--export_dir", export],
                 capsys, ["--run_dir", "nowhere"], watched=(tmp_path,))
    export.mkdir()
    (export / "keep.txt").write_text("mine")
    expect_error(EXPORT.main, ["--run_dir", tmp_path, "--export_dir", export], capsys,
                 ["--export_dir", "--overwrite_export_dir"], watched=(tmp_path,))


def test_a_cased_model_stays_cased_through_the_run_and_the_export(tiny, tmp_path):
    bert = shutil.copytree(tiny.bert, tmp_path / "bert-cased")
    (bert / "tokenizer_config.json").write_text('{"do_lower_case": false}')
    run, export = tmp_path / "run", tmp_path / "export"
    load_script("finetune").main(train_args("SST-2", tiny.data, bert, run, *STUDENT))
    EXPORT.main(["--run_dir", str(run), "--export_dir", str(export)])
    assert load_tokenizer(run).do_lower_case is False
    assert json.loads((export / "tokenizer_config.json").read_text())["do_lower_case"] is False
