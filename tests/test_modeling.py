"""The BERT package: parity with transformers, loading of both checkpoint layouts, BertAdam."""
import json
import math

import pytest
import torch

from BERT.pytorch_pretrained_bert import (BertAdam, BertConfig, BertForSequenceClassification,
                                          BertModel, count_parameters, load_safetensors,
                                          save_safetensors)
from BERT.pytorch_pretrained_bert.optimization import warmup_linear

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size_or_config_json_file=99, hidden_size=32, num_hidden_layers=3,
            num_attention_heads=4, intermediate_size=37, max_position_embeddings=64)


def hf_model(config, cls_name="BertModel", **extra):
    hf_config = transformers.BertConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size, hidden_act=config.hidden_act,
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size, layer_norm_eps=config.layer_norm_eps, **extra)
    return getattr(transformers, cls_name)(hf_config).eval()


def batch(config, lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    seq = max(lengths)
    ids = torch.randint(1, config.vocab_size, (len(lengths), seq), generator=g)
    types = torch.randint(0, config.type_vocab_size, (len(lengths), seq), generator=g)
    mask = torch.zeros(len(lengths), seq, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    return ids * mask, types * mask, mask


@pytest.mark.parametrize("hidden_act", ["gelu", "relu", "gelu_new"])
@pytest.mark.parametrize("lengths", [[9, 9, 9], [12, 5, 1, 8]], ids=["full", "padded"])
def test_bert_model_matches_transformers(hidden_act, lengths):
    torch.manual_seed(1)
    config = BertConfig(**TINY, hidden_act=hidden_act)
    ours = BertModel(config).eval()
    theirs = hf_model(config)
    theirs.load_state_dict(ours.state_dict(), strict=False)
    ids, types, mask = batch(config, lengths)
    with torch.no_grad():
        out = ours(ids, types, mask, output_all_encoded_layers=True)
        ref = theirs(input_ids=ids, token_type_ids=types, attention_mask=mask,
                     output_hidden_states=True)
    assert len(out.encoded_layers) == config.num_hidden_layers
    real = mask.bool()  # padding positions hold no defined value (zeros when packed)
    for mine, want in zip(out.encoded_layers, ref.hidden_states[1:]):
        assert (mine - want)[real].abs().max() < 1e-5
    assert (out.sequence_output - ref.last_hidden_state)[real].abs().max() < 1e-5
    assert (out.pooled_output - ref.pooler_output).abs().max() < 1e-5


def test_classifier_matches_transformers_and_returns_same_structure():
    torch.manual_seed(2)
    config = BertConfig(**TINY)
    ours = BertForSequenceClassification(config, num_labels=3).eval()
    theirs = hf_model(config, "BertForSequenceClassification", num_labels=3)
    theirs.load_state_dict(ours.state_dict(), strict=False)
    ids, types, mask = batch(config, [7, 3])
    with torch.no_grad():
        plain = ours(ids, types, mask)
        full = ours(ids, types, mask, output_all_encoded_layers=True)
        ref = theirs(input_ids=ids, token_type_ids=types, attention_mask=mask).logits
    assert type(plain) is type(full) and plain._fields == full._fields
    assert plain.encoded_layers == () and len(full.encoded_layers) == 3
    assert (plain.logits - ref).abs().max() < 1e-5


def test_padding_does_not_change_real_tokens():
    torch.manual_seed(3)
    config = BertConfig(**TINY)
    model = BertForSequenceClassification(config).eval()
    ids, types, mask = batch(config, [6])
    pad = torch.zeros(1, 10, dtype=torch.long)
    with torch.no_grad():
        short = model(ids, types, mask).logits
        long = model(torch.cat([ids, pad], 1), torch.cat([types, pad], 1),
                     torch.cat([mask, pad], 1)).logits
    assert (short - long).abs().max() < 1e-5


def write_2019_layout(model, directory):
    """bert_config.json + pytorch_model.bin with TF-style gamma/beta and a pretraining head."""
    directory.mkdir()
    state = {}
    for key, value in model.state_dict().items():
        key = key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias",
                                                                         "LayerNorm.beta")
        state["bert." + key] = value.clone()
    state["cls.predictions.bias"] = torch.zeros(model.config.vocab_size)
    torch.save(state, directory / "pytorch_model.bin")
    (directory / "bert_config.json").write_text(json.dumps(
        {**model.config.to_dict(), "vocab_size": model.config.vocab_size}))


def write_today_layout(model, directory):
    """config.json (with extra keys) + model.safetensors without the `bert.` prefix."""
    directory.mkdir()
    save_safetensors(model.state_dict(), directory / "model.safetensors")
    (directory / "config.json").write_text(json.dumps(
        {**model.config.to_dict(), "architectures": ["BertModel"], "model_type": "bert"}))


@pytest.mark.parametrize("writer", [write_2019_layout, write_today_layout])
def test_from_pretrained_loads_both_layouts(tmp_path, writer):
    torch.manual_seed(4)
    source = BertModel(BertConfig(**TINY))
    writer(source, tmp_path / "m")
    for cls in (BertModel, BertForSequenceClassification):
        model = cls.from_pretrained(tmp_path / "m")
        bert = model if cls is BertModel else model.bert
        for key, value in source.state_dict().items():
            assert torch.equal(bert.state_dict()[key], value), key


def test_from_pretrained_is_strict(tmp_path):
    source = BertModel(BertConfig(**TINY))
    state = source.state_dict()
    state["encoder.layer.9.output.dense.weight"] = torch.zeros(1)
    del state["pooler.dense.bias"]
    (tmp_path / "m").mkdir()
    save_safetensors(state, tmp_path / "m" / "model.safetensors")
    source.config.to_json_file(tmp_path / "m" / "config.json")
    with pytest.raises(ValueError, match=r"missing keys \[pooler.dense.bias\].*"
                                         r"unexpected keys \[encoder.layer.9"):
        BertModel.from_pretrained(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="has no config"):
        BertModel.from_pretrained(tmp_path)


def test_safetensors_round_trip_with_shared_tensors(tmp_path):
    state = {"a": torch.randn(3, 4), "b": torch.arange(5), "c": torch.randn(2).half(),
             "d": torch.randn(2, 2).bfloat16()}
    # an unrolled SPS student names one layer's tensor twice: written as a copy, not refused
    state["e"] = state["a"]
    save_safetensors(state, tmp_path / "x.safetensors", metadata={"format": "pt"})
    back = load_safetensors(tmp_path / "x.safetensors")
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], v) and back[k].dtype == v.dtype for k, v in state.items())
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]  # no temporary file left


@pytest.mark.parametrize("damage", ["truncate", "garble", "empty"])
def test_broken_safetensors_is_a_value_error_naming_the_file(tmp_path, damage):
    path = tmp_path / "model.safetensors"
    save_safetensors({"a": torch.randn(64, 64)}, path)
    blob = path.read_bytes()
    path.write_bytes({"truncate": blob[:len(blob) // 2], "garble": b"not a weights file" * 9,
                      "empty": b""}[damage])
    with pytest.raises(ValueError, match=r"model\.safetensors is corrupted or truncated"):
        load_safetensors(path)


def test_failed_safetensors_write_keeps_the_previous_file(tmp_path, monkeypatch):
    import safetensors.torch

    path = tmp_path / "x.safetensors"
    save_safetensors({"a": torch.ones(2)}, path)
    before = path.read_bytes()

    def crash_midway(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        save_safetensors({"a": torch.zeros(2)}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]


def test_config_json_round_trip(tmp_path):
    config = BertConfig(**TINY)
    config.to_json_file(tmp_path / "c.json")
    assert BertConfig.from_json_file(tmp_path / "c.json") == config
    assert config.copy(num_hidden_layers=2).num_hidden_layers == 2
    with pytest.raises(ValueError, match="not a multiple"):
        BertConfig(99, hidden_size=30, num_attention_heads=4)


def test_count_parameters_counts_shared_once():
    model = BertForSequenceClassification(BertConfig(**TINY))
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())


def test_warmup_linear_schedule_shape():
    assert warmup_linear(0.0, 0.1) == 0.0
    assert warmup_linear(0.05, 0.1) == pytest.approx(0.5)
    assert warmup_linear(0.1, 0.1) == pytest.approx(1.0)
    assert warmup_linear(0.55, 0.1) == pytest.approx(0.5)
    assert warmup_linear(1.0, 0.1) == 0.0


def test_bert_adam_first_step_has_no_bias_correction():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = BertAdam([p], lr=0.1, weight_decay=0.0, max_grad_norm=-1)
    p.grad = torch.tensor([0.5, 0.25])
    opt.step()
    # m = 0.1 g, v = 0.001 g^2 -> update = 0.1 g / (sqrt(0.001) |g| + 1e-6)
    g = torch.tensor([0.5, 0.25])
    want = torch.tensor([1.0, -2.0]) - 0.1 * (0.1 * g / (math.sqrt(0.001) * g.abs() + 1e-6))
    assert torch.allclose(p.detach(), want, atol=1e-6)


def test_bert_adam_clips_each_tensor_and_decays_weights():
    a = torch.nn.Parameter(torch.zeros(4))
    b = torch.nn.Parameter(torch.ones(1))
    opt = BertAdam([a, b], lr=1.0, max_grad_norm=1.0, weight_decay=0.5)
    a.grad = torch.full((4,), 10.0)  # norm 20 -> clipped to 1 on its own
    b.grad = torch.tensor([0.001])   # untouched by a's clipping
    opt.step()
    assert torch.allclose(opt.state[a]["next_m"], torch.full((4,), 0.1 * 0.5), atol=1e-6)
    assert torch.allclose(opt.state[b]["next_m"], torch.tensor([0.1 * 0.001]), atol=1e-9)
    # b: update = m / (sqrt(v) + e) + 0.5 * b
    m, v = 0.1 * 0.001, 0.001 * 0.001 ** 2
    assert b.item() == pytest.approx(1.0 - (m / (math.sqrt(v) + 1e-6) + 0.5), rel=1e-5)


def test_bert_adam_applies_schedule_once_per_step():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = BertAdam([p], lr=1.0, warmup=0.5, t_total=4)
    lrs = []
    for _ in range(4):
        lrs.append(opt.get_lr()[0])
        p.grad = torch.ones(1)
        opt.step()
    assert lrs == pytest.approx([0.0, 0.5, 1.0, 0.5])
    restored = BertAdam([p], lr=1.0, warmup=0.5, t_total=4)
    restored.load_state_dict(opt.state_dict())
    assert restored.param_groups[0]["step"] == 4


@pytest.mark.parametrize("fused", [True, False])
def test_bert_adam_with_bias_correction_is_adamw(fused):
    torch.manual_seed(5)
    start = torch.randn(6, 4)
    ours, theirs = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    opt = BertAdam([ours], lr=0.01, e=1e-8, weight_decay=0.1, max_grad_norm=-1, fused=fused,
                   bias_correction=True)
    ref = torch.optim.AdamW([theirs], lr=0.01, eps=1e-8, weight_decay=0.1)
    for _ in range(5):
        grad = torch.randn(6, 4)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        opt.step()
        ref.step()
    assert torch.allclose(ours.detach(), theirs.detach(), atol=1e-6)


def test_bert_adam_first_steps_are_larger_without_bias_correction():
    """The size of step t for a steady gradient: (1 - b1^t) / sqrt(1 - b2^t) x lr."""
    sizes = []
    for correct in (False, True):
        p = torch.nn.Parameter(torch.zeros(1))
        opt = BertAdam([p], lr=1.0, e=0.0, weight_decay=0.0, max_grad_norm=-1,
                       bias_correction=correct)
        for _ in range(10):
            p.grad = torch.ones(1)
            opt.step()
        sizes.append(-p.item())
    ratios = [(1 - 0.9 ** t) / math.sqrt(1 - 0.999 ** t) for t in range(1, 11)]
    assert sizes[1] == pytest.approx(10.0, rel=1e-5)
    assert sizes[0] == pytest.approx(sum(ratios), rel=1e-5) and sizes[0] > 4 * sizes[1]
