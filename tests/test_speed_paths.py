"""The speed measures change no results: dynamic padding, packed tokens, SDPA, the mask skip,
oneDNN linears and the fused BertAdam step agree with the plain paths (fp32, tiny models, CPU)."""
import argparse
import contextlib
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from unittest import mock
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import BERT.pytorch_pretrained_bert.linear as fast_linear
import BERT.pytorch_pretrained_bert.modeling as modeling
from BERT.pytorch_pretrained_bert import BertAdam, BertConfig
from utils.errors import PeakdError
from utils.features import Features, eval_batches, train_batches
from utils.device import pad_multiple
from utils.evaluation import collect_outputs
from utils.modeling import build_classifier

TINY = dict(vocab_size_or_config_json_file=99, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=37, max_position_embeddings=128)
MAX_LEN = 128


@contextmanager
def plain_paths():
    """Every speed switch off, and SDPA's reference (math) kernel: the eager path."""
    old = fast_linear.LINEAR_PATH, modeling.SKIP_FULL_MASK, modeling.PACK_MIN_PADDING
    fast_linear.LINEAR_PATH, modeling.SKIP_FULL_MASK, modeling.PACK_MIN_PADDING = "mkl", False, None
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        fast_linear.LINEAR_PATH, modeling.SKIP_FULL_MASK, modeling.PACK_MIN_PADDING = old


def tiny_features(n=23, seed=0):
    """n rows of lengths 3..60 zero-padded to MAX_LEN, as convert_examples_to_features makes."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 61, (n,), generator=g)
    lengths[0] = 60
    ids = torch.randint(1, 99, (n, MAX_LEN), generator=g)
    types = torch.randint(0, 2, (n, MAX_LEN), generator=g)
    keep = torch.arange(MAX_LEN) < lengths[:, None]
    return Features(ids * keep, types * keep, lengths, torch.randint(0, 2, (n,), generator=g))


@pytest.mark.parametrize("model_type", ["Original", "SPS"])
def test_dynamic_padding_equals_fixed_length_eager(model_type):
    torch.manual_seed(0)
    model = build_classifier(BertConfig(**TINY), 2, model_type).eval()
    features = tiny_features()
    fast = torch.empty(len(features), 2)
    with torch.no_grad():
        # eval path: length-grouped batches, each padded to its own longest row, all switches on
        for index in eval_batches(features.lengths, 5):
            b = features.batch(index)
            assert b["input_ids"].shape[1] < MAX_LEN
            fast[index] = model(b["input_ids"], b["token_type_ids"], b["attention_mask"]).logits
        with plain_paths():
            b = features.batch(torch.arange(len(features)), pad_to_max=True)
            assert b["input_ids"].shape[1] == MAX_LEN
            eager = model(b["input_ids"], b["token_type_ids"], b["attention_mask"]).logits
    assert (fast - eager).abs().max() < 1e-5


@pytest.mark.parametrize("model_type", ["Original", "SPS"])
def test_training_gradients_equal_plain_paths(model_type):
    """A training batch (its own length, no dropout) gives the plain paths' loss and gradients."""
    torch.manual_seed(1)
    config = BertConfig(**TINY, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = build_classifier(config, 2, model_type).train()
    features = tiny_features(seed=1)
    index = train_batches(len(features), 8, torch.Generator().manual_seed(0))[0]

    def grads(batch):
        model.zero_grad(set_to_none=True)
        out = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
                    output_all_encoded_layers=True)
        loss = F.cross_entropy(out.logits, batch["labels"]) + out.encoded_layers[0][:, 0].sum()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    loss, fast = grads(features.batch(index))
    with plain_paths():
        ref_loss, ref = grads(features.batch(index, pad_to_max=True))
    assert abs(loss - ref_loss) < 1e-5
    # fp32 rounding follows the largest gradients through the backward pass: 1e-5 of the
    # largest (the packed path in float64 agrees within 1e-10, see the dropout test below)
    scale = max(1.0, max(g.abs().max().item() for g in ref.values()))
    for name in ref:
        assert (fast[name] - ref[name]).abs().max() < 1e-5 * scale, name


@contextmanager
def packing(min_padding):
    old = modeling.PACK_MIN_PADDING
    modeling.PACK_MIN_PADDING = min_padding
    try:
        yield
    finally:
        modeling.PACK_MIN_PADDING = old


@pytest.mark.parametrize("model_type,dtype,tol", [("Original", torch.float32, 1e-5),
                                                  ("SPS", torch.float32, 1e-5),
                                                  ("SPS", torch.float64, 1e-10)])
def test_packed_training_with_dropout_is_the_padded_run(model_type, dtype, tol):
    """Dropout on: with one seed, packed tokens draw the padded batch's masks, so loss, every
    effective layer's [CLS] and every gradient equal the padded path's up to rounding (fp32:
    1e-5 of the largest value; float64: 1e-10)."""
    torch.manual_seed(2)
    model = build_classifier(BertConfig(**TINY), 2, model_type).train().to(dtype)
    features = tiny_features(seed=2)
    index = train_batches(len(features), 8, torch.Generator().manual_seed(0))[0]
    batch = features.batch(index)
    assert modeling.choose_packing(batch["attention_mask"]) is not None

    def run(min_padding):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(7)
        with packing(min_padding):
            out = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
                        output_all_encoded_layers=True)
        cls = torch.stack([h[:, 0] for h in out.encoded_layers], dim=1)
        loss = F.cross_entropy(out.logits, batch["labels"]) + cls.pow(2).mean()
        loss.backward()
        return loss.detach(), cls.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    (loss, cls, got), (ref_loss, ref_cls, ref) = run(0.0), run(None)
    assert abs(loss - ref_loss) < tol and (cls - ref_cls).abs().max() < tol
    scale = max(1.0, max(g.abs().max().item() for g in ref.values()))
    for name in ref:
        assert (got[name] - ref[name]).abs().max() < tol * scale, name
    # another seed draws other masks: the comparison above is not vacuous
    torch.manual_seed(8)
    with packing(0.0):
        other = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]).logits
    assert (other.detach() - model.eval()(batch["input_ids"], batch["token_type_ids"],
                                          batch["attention_mask"]).logits.detach()).abs().max() > 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_dropout_is_the_padded_dropout_bit_for_bit(dtype):
    """Packing.dropout on the real tokens gives exactly F.dropout's values there: the same
    random draw over the padded shape and the same scaling."""
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0]])
    p = modeling.Packing.from_mask(mask)
    x = torch.randn(3, 7, 16, dtype=dtype)
    module = torch.nn.Dropout(0.1).train()
    torch.manual_seed(5)
    padded = F.dropout(x, 0.1, True)
    torch.manual_seed(5)
    packed = p.dropout(p.pack(x), module)
    assert packed.dtype == dtype and torch.equal(packed, p.pack(padded))
    assert 0 < (packed == 0).sum() < packed.numel()  # some dropped, some kept


def test_packing_takes_batches_with_enough_padding_and_keeps_the_output_shapes():
    full = torch.ones(2, 6, dtype=torch.long)
    some = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])  # 1/12 padding
    half = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]])
    with packing(0.1):
        assert modeling.choose_packing(full) is None and modeling.choose_packing(some) is None
        p = modeling.choose_packing(half)
    assert p.index.tolist() == [0, 1, 2, 3, 4, 5, 6, 7] and (p.batch, p.length) == (2, 6)
    with packing(0.0):
        assert modeling.choose_packing(some) is not None and modeling.choose_packing(full) is None
    with packing(None):
        assert modeling.choose_packing(half) is None
    x = torch.randn(2, 6, 3)
    packed = p.pack(x)
    assert packed.shape == (8, 3) and torch.equal(p.unpack(packed)[half.bool()], x[half.bool()])
    assert not p.unpack(packed)[~half.bool()].any()
    model = build_classifier(BertConfig(**TINY), 2, "SPS").eval()
    with packing(0.0):
        out = model(torch.randint(1, 99, (2, 6)) * half, attention_mask=half,
                    output_all_encoded_layers=True)
    assert out.logits.shape == (2, 2) and len(out.encoded_layers) == 4
    assert all(h.shape == (2, 6, 32) for h in out.encoded_layers)


@pytest.mark.parametrize("model_type", ["Original", "SPS"])
@pytest.mark.parametrize("multiple", [8, 16])
def test_padding_to_a_multiple_gives_the_same_logits(model_type, multiple):
    """CUDA's default (lengths rounded up to a multiple) against today's CPU path (each batch
    at its own length): the masked extra columns change no logit beyond 1e-5 (fp32, CPU)."""
    torch.manual_seed(9)
    model = build_classifier(BertConfig(**TINY), 2, model_type).eval()
    features = tiny_features(seed=9)
    cpu = torch.device("cpu")
    own = collect_outputs(model, features, 5, cpu, contextlib.nullcontext())
    padded = collect_outputs(model, features, 5, cpu, contextlib.nullcontext(),
                             multiple=multiple)
    widths = {features.batch(i, multiple=multiple)["input_ids"].shape[1]
              for i in eval_batches(features.lengths, 5)}
    assert all(w % multiple == 0 or w == MAX_LEN for w in widths) and len(widths) > 1
    for name in ("logits", "pooled"):
        assert (own[name] - padded[name]).abs().max() < 1e-5


def test_padded_training_batch_gives_the_same_loss_and_gradients():
    torch.manual_seed(10)
    config = BertConfig(**TINY, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = build_classifier(config, 2, "SPS").train()
    features = tiny_features(seed=10)
    index = train_batches(len(features), 8, torch.Generator().manual_seed(0))[0]

    def grads(batch):
        model.zero_grad(set_to_none=True)
        out = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
        loss = F.cross_entropy(out.logits, batch["labels"])
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    own, padded = features.batch(index), features.batch(index, multiple=16)
    assert padded["input_ids"].shape[1] > own["input_ids"].shape[1]
    (loss, ref), (loss16, got) = grads(own), grads(padded)
    assert abs(loss - loss16) < 1e-5
    for name in ref:
        assert (got[name] - ref[name]).abs().max() < 1e-5, name


def test_batch_width_rounds_up_to_the_multiple_and_stops_at_max_length():
    features = tiny_features()
    longest = int(features.lengths[:4].max())
    index = torch.arange(4)
    assert features.batch(index)["input_ids"].shape[1] == longest
    assert features.batch(index, multiple=8)["input_ids"].shape[1] == -(-longest // 8) * 8
    assert features.batch(index, multiple=200)["input_ids"].shape[1] == MAX_LEN
    assert features.batch(index, pad_to_max=True, multiple=8)["input_ids"].shape[1] == MAX_LEN
    b = features.batch(index, multiple=16)
    assert (b["attention_mask"].sum(1) == features.lengths[index]).all()


def test_pad_multiple_defaults_per_device_and_checks_the_flag():
    assert pad_multiple(None, torch.device("cpu")) == 1  # the CPU path stays as it was
    assert pad_multiple(None, torch.device("cuda")) == 8
    assert pad_multiple(4, torch.device("cpu")) == 4
    with pytest.raises(PeakdError, match="--pad_to_multiple_of 0 must be >= 1"):
        pad_multiple(0, torch.device("cuda"))


def test_cuda_attention_leaves_cudnn_out_and_cpu_keeps_torch_choice():
    flags = (torch.backends.cuda.cudnn_sdp_enabled, torch.backends.cuda.flash_sdp_enabled,
             torch.backends.cuda.mem_efficient_sdp_enabled, torch.backends.cuda.math_sdp_enabled)
    before = [f() for f in flags]
    with modeling.attention_kernels(torch.device("cuda")):
        assert [f() for f in flags] == [False, True, True, True]
    assert [f() for f in flags] == before
    with modeling.attention_kernels(torch.device("cpu")):
        assert [f() for f in flags] == before


def test_teacher_outputs_with_padding_to_a_multiple_equal_the_default(tiny, mrpc_teacher,
                                                                      tmp_path):
    """--pad_to_multiple_of reaches the scripts' evaluation: the same teacher file within 1e-5."""
    from helpers import load_script
    file = load_script("save_teacher_outputs").main(
        ["--task", "MRPC", "--data_dir", str(tiny.data), "--teacher_dir", str(mrpc_teacher.run),
         "--output_dir", str(tmp_path), "--no_cuda", "--pad_to_multiple_of", "16"])
    got, want = (torch.load(f, weights_only=True)["splits"] for f in (file, mrpc_teacher.file))
    assert set(got) == set(want)
    for split in want:
        for key in ("logits", "pooled", "layer_cls"):
            assert (got[split][key].float() - want[split][key].float()).abs().max() < 1e-3 \
                if key == "layer_cls" else \
                (got[split][key] - want[split][key]).abs().max() < 1e-5, (split, key)


def test_batch_without_padding_drops_the_mask():
    torch.manual_seed(2)
    model = build_classifier(BertConfig(**TINY), 2, "SPS").eval()
    ids = torch.randint(1, 99, (3, 17))
    types = torch.zeros_like(ids)
    with torch.no_grad():
        none = model(ids, types, None).logits
        ones = model(ids, types, torch.ones_like(ids)).logits
        with plain_paths():
            additive = model(ids, types, torch.ones_like(ids)).logits
    assert (none - additive).abs().max() < 1e-6 and (ones - additive).abs().max() < 1e-6


needs_onednn = pytest.mark.skipif(not fast_linear._onednn_usable(),
                                  reason="this torch build has no oneDNN linear")


@needs_onednn
def test_onednn_linear_matches_f_linear_forward_and_backward():
    torch.manual_seed(3)
    x = torch.randn(4, 7, 24, requires_grad=True)
    w = torch.randn(40, 24, requires_grad=True)
    b = torch.randn(40, requires_grad=True)
    y = fast_linear._OneDNNLinear.apply(x, w, b)
    ref = F.linear(x, w, b)
    assert (y - ref).abs().max() < 1e-5
    g = torch.randn(7, 4, 40).transpose(0, 1)       # a non-contiguous incoming gradient
    got = torch.autograd.grad(y, (x, w, b), g)
    want = torch.autograd.grad(ref, (x, w, b), g)
    for a, e in zip(got, want):
        assert a.shape == e.shape and (a - e).abs().max() < 1e-4
    # no bias, and only some inputs needing gradients
    x2 = torch.randn(5, 24)
    y2 = fast_linear._OneDNNLinear.apply(x2, w, None)
    (gw,) = torch.autograd.grad(y2.sum(), (w,))
    assert (gw - torch.ones(5, 40).t() @ x2).abs().max() < 1e-4


@pytest.fixture
def fresh_choice(monkeypatch, tmp_path):
    """No path forced, no auto measurement yet and none kept for the machine, as in a new process
    on a new machine."""
    monkeypatch.setattr(fast_linear, "LINEAR_PATH", None)
    monkeypatch.setattr(fast_linear, "_AUTO", {})
    monkeypatch.delenv(fast_linear.ENV_VAR, raising=False)
    monkeypatch.setenv(fast_linear.CACHE_ENV, str(tmp_path / "cache" / "cpu_linear.json"))
    for cap in fast_linear.ISA_CAPS:
        monkeypatch.delenv(cap, raising=False)
    return monkeypatch


def fake_timings(mkl, onednn, forward_share=1 / 3):
    """time_paths' result with the given total seconds per path, a share of them forward."""
    def split(total):
        rest = total * (1 - forward_share) / 2
        return {"forward": total * forward_share, "grad_input": rest, "grad_weight": rest}
    return {"mkl": split(mkl), "onednn": split(onednn)}


@needs_onednn
@pytest.mark.parametrize("path", ["onednn", "mkl"])
def test_each_linear_path_equals_f_linear_forward_and_backward(path, fresh_choice):
    """Forced either way (PEAKD_LINEAR), a BERT-wide Linear gives F.linear's output and grads."""
    fresh_choice.setenv(fast_linear.ENV_VAR, path)
    calls = []
    apply = fast_linear._OneDNNLinear.apply
    fresh_choice.setattr(fast_linear._OneDNNLinear, "apply",
                         lambda *a: calls.append(1) or apply(*a))
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 9, 256, generator=g, requires_grad=True)
    w = (torch.randn(192, 256, generator=g) / 16).requires_grad_()
    b = torch.randn(192, generator=g, requires_grad=True)
    y = fast_linear.linear(x, w, b)
    ref = F.linear(x, w, b)
    assert (y - ref).abs().max() < 1e-5
    upstream = torch.randn(ref.shape, generator=g)
    for got, want in zip(torch.autograd.grad(y, (x, w, b), upstream),
                         torch.autograd.grad(ref, (x, w, b), upstream)):
        assert (got - want).abs().max() < 1e-5
    assert bool(calls) == (path == "onednn")
    assert fast_linear.chosen_paths()["train"] == path


@needs_onednn
@pytest.mark.parametrize("model_type", ["Original", "SPS"])
def test_tiny_model_gives_the_same_logits_and_gradients_on_both_paths(model_type, fresh_choice):
    torch.manual_seed(8)
    config = BertConfig(**TINY, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = build_classifier(config, 2, model_type).train()
    b = tiny_features(seed=8).batch(torch.arange(7))

    def run(path):
        fresh_choice.setattr(fast_linear, "LINEAR_PATH", path)
        model.zero_grad(set_to_none=True)
        logits = model(b["input_ids"], b["token_type_ids"], b["attention_mask"]).logits
        F.cross_entropy(logits, b["labels"]).backward()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    (logits_d, grads_d), (logits_m, grads_m) = run("onednn"), run("mkl")
    assert (logits_d - logits_m).abs().max() < 1e-5
    for name in grads_m:
        assert (grads_d[name] - grads_m[name]).abs().max() < 1e-5, name


def count_probes(fresh_choice, mkl=3.0):
    """A usable oneDNN whose probe finds it 3x faster (or MKL's seconds as given); returns the
    list each probe appends its rounds to."""
    probes = []
    fresh_choice.setattr(fast_linear, "time_paths", lambda rounds=fast_linear.PROBE_ROUNDS:
                         probes.append(rounds) or fake_timings(mkl=mkl, onednn=1.0))
    fresh_choice.setattr(fast_linear, "_onednn_usable", lambda: True)
    fresh_choice.setattr(fast_linear, "_ONEDNN_OK", None)
    return probes


def test_auto_choice_is_measured_once_and_kept(fresh_choice):
    probes = count_probes(fresh_choice)
    first = fast_linear.chosen_paths()
    for _ in range(3):
        assert fast_linear.chosen_paths() == first
    assert len(probes) == 1 and first["requested"] == "auto"
    assert first["train"] == first["infer"] == "onednn"


def new_process(fresh_choice):
    """Forget this process's choice (what a new process starts from)."""
    fresh_choice.setattr(fast_linear, "_AUTO", {})


def test_a_machine_keeps_its_first_choice_for_every_later_process(fresh_choice):
    """Each process probing anew flipped to oneDNN now and then on the AVX2 machine, and each flip
    changed a run's rounding; so the first probe's choice is kept and later processes read it."""
    probes = count_probes(fresh_choice)
    first = fast_linear.chosen_paths()
    assert probes == [fast_linear.KEPT_PROBE_ROUNDS] and first["train"] == "onednn"
    assert first["source"].startswith("measured, kept in")
    path = fast_linear.cache_path()
    kept = json.loads(path.read_text())
    assert list(kept) == [fast_linear.machine_key()]
    assert kept[fast_linear.machine_key()]["infer"] == "onednn"
    # later processes: a probe would now choose MKL, but the kept choice holds
    probes = count_probes(fresh_choice, mkl=0.5)
    for _ in range(2):
        new_process(fresh_choice)
        later = fast_linear.chosen_paths()
        assert (later["train"], later["infer"]) == ("onednn", "onednn")
        assert later["source"] == f"kept in {path}"
    assert probes == []
    assert not list(path.parent.glob("*.tmp*"))


@needs_onednn
@pytest.mark.skipif(fast_linear.fcntl is None, reason="no file locks here")
def test_processes_that_start_together_take_one_probe(tmp_path):
    """A grid starts stages in parallel: while one process measures, the others wait for its
    choice instead of measuring their own (which could differ)."""
    path = tmp_path / "cpu_linear.json"
    code = ("import sys; sys.path.insert(0, 'src'); "
            "from BERT.pytorch_pretrained_bert import linear; "
            "print(linear.chosen_paths()['source'])")
    env = {**os.environ, fast_linear.CACHE_ENV: str(path), "OMP_NUM_THREADS": "1"}
    env.pop(fast_linear.ENV_VAR, None)
    root = Path(__file__).resolve().parents[1]
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        # hold the lock so both processes reach it before either may measure
        fast_linear.fcntl.flock(lock, fast_linear.fcntl.LOCK_EX)
        procs = [subprocess.Popen([sys.executable, "-c", code], cwd=root, env=env,
                                  stdout=subprocess.PIPE, text=True) for _ in range(2)]
        time.sleep(3)
        fast_linear.fcntl.flock(lock, fast_linear.fcntl.LOCK_UN)
    sources = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert sources == [f"kept in {path}", f"measured, kept in {path}"]


def test_an_isa_cap_is_another_machine(fresh_choice):
    probes = count_probes(fresh_choice)
    fast_linear.chosen_paths()
    fresh_choice.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert "ONEDNN_MAX_CPU_ISA=AVX2" in fast_linear.machine_key()
    probes = count_probes(fresh_choice, mkl=0.5)
    new_process(fresh_choice)
    assert fast_linear.chosen_paths()["train"] == "mkl" and len(probes) == 1
    assert len(json.loads(fast_linear.cache_path().read_text())) == 2


@pytest.mark.parametrize("damage", ["{not json", "[1, 2]", '{"KEY": {"train": "blas"}}'])
def test_a_damaged_cache_is_measured_again_and_rewritten(fresh_choice, damage):
    probes = count_probes(fresh_choice)
    path = fast_linear.cache_path()
    path.parent.mkdir(parents=True)
    path.write_text(damage.replace("KEY", fast_linear.machine_key()))
    assert fast_linear.chosen_paths()["train"] == "onednn" and len(probes) == 1
    assert json.loads(path.read_text())[fast_linear.machine_key()]["train"] == "onednn"


def test_a_choice_kept_by_another_probe_is_measured_again(fresh_choice):
    """A machine's choice kept by the earlier one-shape probe (which missed the feed-forward
    shapes) does not outlive that probe: the first process measures again and rewrites it."""
    probes = count_probes(fresh_choice)
    path = fast_linear.cache_path()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({fast_linear.machine_key(): {
        "train": "mkl", "infer": "mkl", "shape": [256, 768, 768]}}))
    assert fast_linear.chosen_paths()["train"] == "onednn"
    assert probes == [fast_linear.KEPT_PROBE_ROUNDS]
    kept = json.loads(path.read_text())[fast_linear.machine_key()]
    assert kept["shapes"] == [list(s) for s in fast_linear.PROBE_SHAPES]
    new_process(fresh_choice)
    assert fast_linear.chosen_paths()["source"] == f"kept in {path}" and len(probes) == 1


def test_the_probe_times_one_layer_of_each_shape_weighted_by_its_count(monkeypatch):
    """time_paths adds each shape's best seconds times its count: one BERT layer's Linear time
    per op, so the feed-forward shapes weigh in the decision as they do in a step."""
    seen = []

    def fake_shape(m, k, n, rounds, generator, dtype, paths):
        seen.append((m, k, n, rounds))
        return {path: {op: k * n * (2 if path == "onednn" else 1) for op in fast_linear.OPS}
                for path in ("mkl", "onednn")}

    monkeypatch.setattr(fast_linear, "_time_shape", fake_shape)
    best = fast_linear.time_paths(shapes=((8, 3, 5, 4), (8, 5, 7, 1)), rounds=2)
    assert seen == [(8, 3, 5, 2), (8, 5, 7, 2)]
    assert best == {"mkl": dict.fromkeys(fast_linear.OPS, 4 * 15 + 35),
                    "onednn": dict.fromkeys(fast_linear.OPS, 2 * (4 * 15 + 35))}
    assert {k for _, k, n, _ in fast_linear.PROBE_SHAPES} == {768, 3072}


@needs_onednn
@pytest.mark.parametrize("n_out", [24, 40])
def test_onednn_gradients_get_a_row_major_weight_operand(monkeypatch, n_out):
    """oneDNN's kernel for a transposed second operand fell to 18-76 GFLOP/s at 3072 rows
    (MKL 115-212; linear.py): both gradients copy that operand row-major first."""
    calls = []
    matmul = fast_linear._onednn_matmul
    monkeypatch.setattr(fast_linear, "_onednn_matmul",
                        lambda a, w, b: calls.append(w.is_contiguous()) or matmul(a, w, b))
    x = torch.randn(6, 32, requires_grad=True)
    w = torch.randn(n_out, 32, requires_grad=True)
    fast_linear._OneDNNLinear.apply(x, w, None).sum().backward()
    assert calls == [True, True, True]
    assert (w.grad - torch.ones(6, n_out).t() @ x.detach()).abs().max() < 1e-4


def test_without_a_cache_each_process_measures_its_own(fresh_choice, tmp_path):
    fresh_choice.setenv(fast_linear.CACHE_ENV, "off")
    probes = count_probes(fresh_choice)
    for _ in range(2):
        new_process(fresh_choice)
        assert fast_linear.chosen_paths()["source"] == "measured in this process"
    assert probes == [fast_linear.PROBE_ROUNDS] * 2
    # a cache that cannot be written (its folder would be a file): the same, and no error
    (tmp_path / "a_file").write_text("")
    fresh_choice.setenv(fast_linear.CACHE_ENV, str(tmp_path / "a_file" / "cpu_linear.json"))
    new_process(fresh_choice)
    assert fast_linear.chosen_paths()["source"] == "measured in this process"
    assert len(probes) == 3


def test_what_a_run_records_never_starts_the_probe(fresh_choice):
    probes = count_probes(fresh_choice)
    # no layer needed the choice yet: everything took F.linear
    assert fast_linear.used_paths() == {"requested": "auto", "train": "mkl", "infer": "mkl"}
    assert probes == []
    fast_linear.chosen_paths()
    assert fast_linear.used_paths() == {"requested": "auto", "train": "onednn",
                                        "infer": "onednn"}
    assert len(probes) == 1


def test_auto_takes_onednn_only_when_it_wins_by_the_margin():
    assert fast_linear.decide(fake_timings(mkl=2.0, onednn=1.0)) == {"train": "onednn",
                                                                     "infer": "onednn"}
    assert fast_linear.decide(fake_timings(mkl=1.05, onednn=1.0)) == {"train": "mkl",
                                                                      "infer": "mkl"}
    assert fast_linear.decide(fake_timings(mkl=1.0, onednn=2.0)) == {"train": "mkl",
                                                                     "infer": "mkl"}
    # forward faster in oneDNN, the gradients slower: inference and training decide apart
    mixed = {"mkl": {"forward": 2.0, "grad_input": 1.0, "grad_weight": 1.0},
             "onednn": {"forward": 1.0, "grad_input": 2.0, "grad_weight": 2.0}}
    assert fast_linear.decide(mixed) == {"train": "mkl", "infer": "onednn"}


def test_auto_sends_tiny_layers_through_f_linear(fresh_choice):
    fresh_choice.setattr(fast_linear, "_AUTO", {"train": "onednn", "infer": "onednn"})
    fresh_choice.setattr(fast_linear, "_ONEDNN_OK", True)
    fresh_choice.setattr(fast_linear._OneDNNLinear, "apply", None)  # would fail if called
    x, w = torch.randn(3, 32), torch.randn(37, 32)
    assert torch.equal(fast_linear.linear(x, w), F.linear(x, w))


@needs_onednn
def test_the_probe_measures_every_op_of_both_paths_without_touching_the_global_stream():
    threads = torch.get_num_threads()
    state = torch.get_rng_state()
    best = fast_linear.time_paths(shapes=((16, 32, 24, 1), (16, 24, 32, 2)), rounds=1)
    assert torch.equal(torch.get_rng_state(), state) and torch.get_num_threads() == threads
    assert set(best) == {"mkl", "onednn"}
    assert all(set(t) == {"forward", "grad_input", "grad_weight"} for t in best.values())
    assert all(0 < s < 1 for t in best.values() for s in t.values())


def test_the_bf16_probe_times_one_library_in_both_dtypes_without_touching_the_global_stream():
    threads = torch.get_num_threads()
    state = torch.get_rng_state()
    best = fast_linear.time_paths(((16, 32, 24, 1),), 1, torch.bfloat16, ("mkl",))
    assert set(best) == {"mkl"} and set(best["mkl"]) == set(fast_linear.OPS)
    slowdown = fast_linear.bf16_slowdown((16, 32, 24, 1), rounds=1)
    assert 0 < slowdown < math.inf
    assert torch.equal(torch.get_rng_state(), state) and torch.get_num_threads() == threads


@pytest.fixture
def bf16_probe(monkeypatch):
    """utils.device.warn_slow_bf16 with a fake slowdown (set .value), measured anew per test."""
    import utils.device as device
    fake = argparse.Namespace(value=1.0, calls=0)

    def slowdown():
        fake.calls += 1
        return fake.value

    monkeypatch.setattr(device, "bf16_slowdown", slowdown)
    device.warn_slow_bf16.cache_clear()
    yield fake
    device.warn_slow_bf16.cache_clear()


@pytest.mark.parametrize("slowdown, warned", [(17.0, True), (0.4, False)])
def test_bf16_on_a_cpu_whose_bf16_matmuls_are_slow_warns_once_and_stays_on(
        bf16_probe, capsys, slowdown, warned):
    """On an AVX2-only EPYC bf16 Linears took 17x fp32's time (linear.BF16_PROBE_SHAPE): --bf16
    says so in one line, once per process, and still runs in bf16 (an explicit flag wins)."""
    from utils.device import autocast
    bf16_probe.value = slowdown
    args = argparse.Namespace(fp16=False, bf16=True)
    for _ in range(2):
        with autocast(args, torch.device("cpu")):
            assert torch.get_autocast_dtype("cpu") == torch.bfloat16
            assert torch.is_autocast_enabled("cpu")
    lines = capsys.readouterr().err.splitlines()
    assert bf16_probe.calls == 1
    if warned:
        assert len(lines) == 1 and lines[0].startswith("warning: --bf16: bf16 matrix multiplies "
                                                       "take 17x fp32's time on this CPU")
        assert "drop --bf16" in lines[0]
    else:
        assert lines == []


def test_fp32_runs_no_bf16_probe(bf16_probe):
    from utils.device import autocast
    with autocast(argparse.Namespace(fp16=False, bf16=False), torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")
    assert bf16_probe.calls == 0


def test_a_bad_linear_path_is_a_one_line_error(fresh_choice):
    from utils.device import pick_device
    fresh_choice.setenv(fast_linear.ENV_VAR, "blas")
    with pytest.raises(ValueError, match="PEAKD_LINEAR=blas: use one of auto, onednn, mkl"):
        fast_linear.linear(torch.randn(2, 4), torch.randn(3, 4))
    with pytest.raises(PeakdError, match="PEAKD_LINEAR=blas"):
        pick_device(argparse.Namespace(no_cuda=True))


def test_linear_falls_back_outside_fp32_cpu():
    x, w = torch.randn(3, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64)
    assert torch.equal(fast_linear.linear(x, w), F.linear(x, w))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fast_linear.linear(x.float(), w.float())
    assert y.dtype == torch.bfloat16


@pytest.mark.parametrize("max_grad_norm", [1.0, -1])
def test_fused_bert_adam_equals_foreach(max_grad_norm):
    torch.manual_seed(4)
    base = [torch.randn(30, 20), torch.randn(7), torch.randn(64, 3)]

    def run(fused):
        ps = [torch.nn.Parameter(t.clone()) for t in base]
        opt = BertAdam([{"params": ps[:2], "weight_decay": 0.01},
                        {"params": ps[2:], "weight_decay": 0.0}], lr=0.05, warmup=0.2,
                       t_total=10, max_grad_norm=max_grad_norm, fused=fused)
        g = torch.Generator().manual_seed(5)
        for step in range(6):
            for p in ps:   # large gradients (clipped) on even steps, small ones on odd steps
                p.grad = torch.randn(p.shape, generator=g) * (0.01 if step % 2 else 5.0)
            opt.step()
        return ps, opt

    (fused, opt_f), (foreach, opt_e) = run(True), run(False)
    assert opt_f.fused and not opt_e.fused
    for a, b in zip(fused, foreach):
        assert (a - b).abs().max() < 1e-5
        for k in ("next_m", "next_v"):
            assert (opt_f.state[a][k] - opt_e.state[b][k]).abs().max() < 1e-6


def _load_bench(script="throughput"):
    """bench/<script>.py, imported by path (it puts bench/ and so bench/speed on sys.path)."""
    path = Path(__file__).resolve().parents[1] / "bench" / f"{script}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{script}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_sps_twin_in_transformers_is_our_sps_model():
    pytest.importorskip("transformers")
    _load_bench()
    from speed.runners import hf_twin
    torch.manual_seed(6)
    ours = build_classifier(BertConfig(**TINY), 2, "SPS").eval()
    theirs = hf_twin(ours, "SPS", 2).eval()
    assert sum(p.numel() for p in theirs.parameters()) == sum(p.numel() for p in ours.parameters())
    features = tiny_features(seed=6)
    b = features.batch(torch.arange(6))
    with torch.no_grad():
        mine = ours(b["input_ids"], b["token_type_ids"], b["attention_mask"]).logits
        ref = theirs(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"],
                     attention_mask=b["attention_mask"]).logits
    assert (mine - ref).abs().max() < 1e-5


def test_benchmark_helpers():
    bench = _load_bench()
    from speed.machine import LoadMeter
    from speed.measure import _swap_pairs, measurement_list
    from speed.peak import forward_flops
    base = BertConfig(30522)
    # BERT-base forward at 128 tokens: ~2 * 85M weights * 128 + attention = 22.3 GFLOP
    assert forward_flops(base, 12, 128) == pytest.approx(22.3e9, rel=0.01)
    args = bench.build_parser().parse_args(["--quick", "--configs", "student3", "--batch", "4"])
    assert args.quick and args.configs == "student3" and args.batch == 4
    steps = measurement_list(["ours", "hf"], ["kd", "pkd", "live_ckd", "live_tinybert_layer"])
    assert ("train", "mrpc", "hf", "default", None) in steps
    assert ("train", "mrpc", "ours", "dynamic", "pkd") in steps
    assert ("train", "mrpc", "ours", "dynamic", "live_tinybert_layer") in steps
    # a live step is compared with the teacher's forward alone on the same batches
    assert ("teacher_fwd", "mrpc", "teacher", "dynamic", None) in steps
    assert not any(s[0] == "teacher_fwd" for s in measurement_list(["ours"], ["kd"]))
    assert sorted(_swap_pairs(steps), key=str) == sorted(steps, key=str)
    load = LoadMeter().foreign()
    assert load is None or 0.0 <= load <= 1.0


def test_benchmark_workloads_pad_as_the_scripts_do():
    """On CUDA the MRPC batches are rounded up to the scripts' multiple; on the CPU not."""
    _load_bench()
    from speed.workloads import make_workloads
    features = tiny_features(n=40, seed=11)
    plan = {"train_batch": 8, "infer_batch": 8, "k_train": 2, "k_infer": 3}
    config = BertConfig(**{**TINY, "vocab_size_or_config_json_file": 2000})
    for device, multiple in (("cpu", 1), ("cuda", 8)):
        # the batches are built on the CPU; `stage` only moves them, so stub the move
        with mock.patch.object(torch.Tensor, "to", lambda t, *a, **k: t):
            work = make_workloads(features, config, plan, torch.device(device))
        for mode in ("train", "infer"):
            widths = [b["input_ids"].shape[1] for b in work[(mode, "mrpc")]["dynamic"]]
            longest = [int(b["attention_mask"].sum(1).max()) for b in
                       work[(mode, "mrpc")]["dynamic"]]
            assert widths == [-(-n // multiple) * multiple for n in longest]


def test_benchmark_scripts_command_runs_the_users_path(tiny):
    bench = _load_bench()
    from speed.scripts import script_command, summarize
    args = bench.build_parser().parse_args(["--quick", "--bert_model", str(tiny.bert),
                                            "--glue_dir", str(tiny.data)])
    cpu = script_command(args, "fp32", "/tmp/x", cuda=False)
    assert cpu[1].endswith("src/finetune.py") and "--no_cuda" in cpu
    assert cpu[cpu.index("--max_steps") + 1] == "2"
    assert cpu[cpu.index("--student_hidden_layers") + 1] == "4"  # the tiny BERT's depth
    gpu = script_command(args, "fp16", "/tmp/x", cuda=True)
    assert "--fp16" in gpu and "--no_cuda" not in gpu and "--max_steps" not in gpu
    fig = summarize({"wall_seconds": 10.0, "returncode": 0},
                    {"train_samples_per_second": 100.0, "inference_samples_per_second": 400.0,
                     "best_acc": {"acc": 0.75}, "optimizer_steps": 5, "train_seconds": 4.0,
                     "eval_seconds": 1.0})
    assert fig["other_seconds"] == 5.0 and fig["other_share"] == 0.5 and fig["dev_acc"] == 0.75


def test_compile_mode_reaches_torch_compile_and_graph_steps_only_on_cuda(tiny, tmp_path):
    """--compile MODE is torch.compile's mode in the scripts and the benchmark; transformers
    stays eager there. CUDA graphs are not run on the CPU (torch.compile itself is stubbed: this
    checks the plumbing, not what compiling buys)."""
    from helpers import load_script, train_args
    seen = []

    def fake_compile(module, mode=None, **kwargs):
        seen.append(mode)
        return module

    finetune = load_script("finetune")
    with mock.patch.object(torch, "compile", fake_compile):
        for flag, mode in ((["--compile"], "default"),
                           (["--compile", "reduce-overhead"], "reduce-overhead")):
            results = finetune.main(train_args("MRPC", tiny.data, tiny.bert, tmp_path / mode,
                                               *flag, "--max_steps", 1))
            assert seen[-1] == mode and results["optimizer_steps"] == 1
        _load_bench()
        from speed.runners import Ours, Theirs
        model = build_classifier(BertConfig(**TINY), 2, "Original")
        ours = Ours(model, torch.device("cpu"), "fp32", "reduce-overhead")
        assert seen[-1] == "reduce-overhead" and not ours.graphs  # graphs are CUDA's only
        before = len(seen)
        Theirs(model, torch.device("cpu"), "fp32")
        assert len(seen) == before
    assert finetune.build_parser().parse_args(
        train_args("MRPC", tiny.data, tiny.bert, tmp_path)).compile is None


def test_gpu_step_target_is_ours_over_transformers_eager_at_fixed_length():
    _load_bench()
    from speed.measure import key_of
    from speed.report import evaluate_targets
    results = {key_of(mode, w, impl, v, None, "bf16"): {"samples_per_s": rate}
               for mode, w, impl, v, rate in (("train", "fixed128", "ours", "fixed", 500.0),
                                              ("train", "fixed128", "hf", "fixed", 200.0))}
    cfgs = {"student3": {"results": results, "flops": {"fixed128_forward_per_sample": 1e9}}}
    peaks = {"bf16": {"flops_best": 1e15}}
    names = {t["target"]: t for t in evaluate_targets(cfgs, peaks, "bf16", "bf16", gpu=True)[1]}
    gpu = names["student3 train fixed128 ours / hf eager (GPU step)"]
    assert gpu["value"] == 2.5 and gpu["threshold"] == 2.0 and gpu["pass"]
    assert not any("GPU step" in t["target"] for t in evaluate_targets(
        cfgs, peaks, "bf16", "bf16", gpu=False)[1])


def _runs(seconds, samples=32):
    """A measurement's record as bench/speed/measure.py writes it: median rate and each run."""
    return {"samples_per_s": statistics.median(samples / s for s in seconds),
            "runs": [{"seconds": s, "samples": samples} for s in seconds]}


def test_bench_time_budget_cuts_repeats_to_no_fewer_than_an_interval_needs():
    _load_bench()
    from speed.measure import MIN_PAIRS, repeats_within
    assert repeats_within(budget_s=400, warm_s=100, wanted=3) == 3  # 4 x 100 s fit
    assert repeats_within(budget_s=700, warm_s=100, wanted=8) == 6
    # on a slow day the share fits only one repeat: three run (over budget) so pairs exist
    assert repeats_within(budget_s=160, warm_s=58, wanted=3) == MIN_PAIRS == 3
    assert repeats_within(budget_s=10, warm_s=100, wanted=2) == 2  # asked for fewer: kept


def test_bench_ratio_targets_decide_from_paired_repeats(capsys):
    """make bench's ratio targets: a verdict from the repeats' paired interval, "not decided"
    when it holds the threshold; the point value with fewer than 3 repeats."""
    _load_bench()
    from speed.report import paired_target, print_targets
    drift = [1.0, 2.0, 4.0, 1.5]  # the machine slows and speeds up between repeats
    ours = _runs(drift)

    def hf(*factors):  # transformers' seconds in the same repeats: ours' ratio is each factor
        return [d * f for d, f in zip(drift, factors)]

    faster = paired_target("f", ours, _runs(hf(1.10, 1.12, 1.11, 1.10)), 1.0)
    assert faster["verdict"] == "PASS" and faster["pass"] and faster["pairs"] == 4
    assert 1.0 < faster["interval"][0] < faster["value"] < faster["interval"][1] < 1.13
    # the same times paired wrongly (hf's repeats reversed): the drift swamps the ratio
    wrong = paired_target("w", ours, _runs(hf(1.10, 1.12, 1.11, 1.10)[::-1]), 1.0)
    assert wrong["verdict"] == "not decided" and wrong["pass"] is None
    same = paired_target("s", ours, _runs(hf(0.97, 1.03, 1.0, 1.01)), 1.0)
    assert same["verdict"] == "not decided" and same["interval"][0] < 1 < same["interval"][1]
    slower = paired_target("l", ours, _runs(hf(0.8, 0.82, 0.79, 0.8)), 1.0)
    assert slower["verdict"] == "FAIL" and slower["pass"] is False
    # higher=False (a KD step's time over a plain step's): passes when the interval is <= 1.1
    kd = paired_target("kd", ours, _runs(hf(1.0, 1.02, 0.99, 1.01)), 1.1, higher=False)
    assert kd["verdict"] == "PASS" and kd["interval"][1] <= 1.1
    two = paired_target("2", _runs([1.0, 2.0]), _runs([1.2, 2.4]), 1.0)
    assert two["verdict"] == "PASS" and two["interval"] is None
    assert two["value"] == pytest.approx(1.2)
    assert paired_target("n", ours, None, 1.0)["verdict"] == "n/a"
    print_targets([faster, same, two])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["PASS", "f"] and "[1.0" in lines[0]
    assert lines[1].startswith("  not decided s ")
    assert lines[2].split()[:3] == ["PASS", "2", "1.200"]


# A child process: 64 MiB blocks (above glibc's 32 MiB mmap bound) allocated, touched and freed
# 4 times, with or without keep_freed_memory; prints the set flag and the minor page faults of
# the last 3 rounds. Calls the malloc torch's CPU allocator uses, through ctypes, without torch.
_ALLOC_CHILD = """
import ctypes, ctypes.util, resource, sys
sys.path.insert(0, sys.argv[1])
from utils.allocator import keep_freed_memory
done = keep_freed_memory() if sys.argv[2] == "on" else False
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, (ctypes.c_void_p,)
size = 64 << 20
faults = 0
for i in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    libc.free(p)
    faults += (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) if i else 0
print(done, faults)
"""


def _alloc_child(mode, env=None):
    src = str(Path(__file__).resolve().parents[1] / "src")
    out = subprocess.run([sys.executable, "-c", _ALLOC_CHILD, src, mode], capture_output=True,
                         text=True, timeout=60, env={**os.environ, **(env or {})},
                         check=True).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_keep_freed_memory_reuses_large_blocks():
    """glibc maps each 64 MiB block anew (16k page faults a round with 4 KiB pages, 32 with
    transparent huge pages); once keep_freed_memory is set the freed block is reused and later
    rounds take almost none."""
    done, default = _alloc_child("off", {"GLIBC_TUNABLES": ""})
    assert not done and default >= 3 * 32
    done, kept = _alloc_child("on", {"GLIBC_TUNABLES": ""})
    assert done and kept * 10 <= default
    # an explicit malloc tunable wins (this one a no-op): glibc keeps its defaults
    done, tuned = _alloc_child("on", {"GLIBC_TUNABLES": "glibc.malloc.perturb=0"})
    assert not done and tuned * 2 >= default


def test_compiled_batches_take_few_lengths_and_the_warmup_is_measured(tiny, tmp_path,
                                                                        monkeypatch):
    """With --compile each training batch is padded to the next bucket length, so at most
    2 shapes per bucket occur (full and short batches); the first step of each is timed as the
    warm-up and reported. torch.compile is replaced by the module itself here (compiling takes
    minutes on a CPU): what is tested is the padding and the bookkeeping."""
    import utils.device as device
    from helpers import load_script, train_args

    monkeypatch.setattr(torch, "compile", lambda module, **kw: module)
    monkeypatch.setenv(device.COMPILE_CACHE_ENV, str(tmp_path / "cache"))
    widths = []
    real = Features.batch

    def recording(self, index, *a, **k):
        out = real(self, index, *a, **k)
        if a and len(a) > 2 and a[2]:  # a training batch with buckets
            widths.append(out["input_ids"].shape[1])
        return out

    monkeypatch.setattr(Features, "batch", recording)
    results = load_script("finetune").main(train_args(
        "MRPC", tiny.data, tiny.bert, tmp_path / "run", "--compile", "--num_train_epochs", 2,
        "--max_steps", 100, "--train_batch_size", 3))
    assert widths and set(widths) <= set(device.COMPILE_BUCKETS) | {32}
    assert results["compile"]["shapes"] <= 2 * len(set(widths))
    assert results["compile"]["warmup_seconds"] > 0
    assert (tmp_path / "cache").is_dir()


def test_bucket_length():
    from utils.device import COMPILE_BUCKETS
    from utils.features import bucket_length
    assert [bucket_length(n, 128, COMPILE_BUCKETS) for n in (1, 16, 17, 33, 49, 65, 97, 128)] \
        == [16, 16, 32, 48, 64, 96, 128, 128]
    assert bucket_length(100, 100, COMPILE_BUCKETS) == 100
    assert bucket_length(600, 512, COMPILE_BUCKETS) == 512


def test_the_training_loop_reads_no_device_value_per_step(tiny, mrpc_teacher, tmp_path,
                                                         monkeypatch):
    """A GPU step that reads a tensor's value (item, float, bool, tolist) or makes a tensor whose
    shape depends on values (nonzero, masked_select, `x[bool_mask]`, unique) makes the host wait.
    Counted here on the CPU, at the aten level: such ops whose innermost frame of ours is the
    loop, the objectives, the losses or BertAdam (not the host-side batching, nor modeling.py's
    packing, a CPU-only path a GPU skips) while training steps run. The running loss is read once
    per logging interval, by log_loss; nothing else syncs per step, for plain, KD, PKD and every
    method with its teacher alongside."""
    import traceback

    from torch.utils._python_dispatch import TorchDispatchMode

    from helpers import load_script, train_args

    watched = ("utils/train.py", "utils/distill.py", "utils/losses.py",
               "pytorch_pretrained_bert/optimization.py", "utils/checkpoints.py")
    syncing = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2",
               "unique_consecutive", "repeat_interleave"}
    reads = []

    class Syncs(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            bool_index = name == "index" and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] or ())
            if name in syncing or bool_index:
                frames = [f for f in traceback.extract_stack()[:-1] if "/src/" in f.filename]
                if frames and frames[-1].filename.endswith(watched):
                    in_step = any(f.name in ("micro_step", "optimizer_step") for f in frames)
                    logging = any(f.name in ("log_loss", "evaluate_dev", "save_state")
                                  for f in frames)
                    if in_step and not logging:
                        where = frames[-1].filename.split("/src/")[1]
                        reads.append(f"{name} at {where}:{frames[-1].lineno}")
            return func(*args, **(kwargs or {}))

    finetune = load_script("finetune")
    runs = [("kd", "--teacher_prediction", mrpc_teacher.file),
            ("pkd", "--teacher_prediction", mrpc_teacher.file)]
    runs += [(kind, "--teacher_dir", mrpc_teacher.run)
             for kind in ("tinybert_layer", "minilm_layer", "ckd", "distil_cos")]
    with Syncs():
        finetune.main(train_args("MRPC", tiny.data, tiny.bert, tmp_path / "ft", "--max_steps", 6,
                                 "--logging_steps", 3, "--student_hidden_layers", 2))
        for kind, flag, value in runs:
            finetune.main(train_args("MRPC", tiny.data, tiny.bert, tmp_path / kind, "--train_type",
                                     kind, flag, value, "--max_steps", 6, "--logging_steps", 3,
                                     "--student_hidden_layers", 2))
    assert reads == []


def test_the_mfu_bar_is_per_config_on_a_gpu_and_0_8_on_the_cpu():
    _load_bench()
    from speed.report import CUDA_MFU_TARGETS, TARGETS, mfu_target
    assert mfu_target("student3", gpu=True) == CUDA_MFU_TARGETS["student3"] == 0.10
    assert mfu_target("base", gpu=True) is None  # not measured compiled: printed, not judged
    assert mfu_target("base", gpu=False) == TARGETS["mfu"] == 0.8


def test_evaluation_casts_the_weights_once_per_pass(tiny):
    """collect_outputs enters the autocast region once for all its batches (autocast keeps each
    weight's bf16 copy until the region ends: one cast per weight per pass, not per batch), and
    gives the logits of a region per batch exactly."""
    from utils.evaluation import collect_outputs
    from utils.glue import get_task
    from utils.modeling import load_tokenizer
    from utils.pipeline import load_splits

    task = get_task("MRPC")
    features = load_splits(task, tiny.data, ("dev",), load_tokenizer(tiny.bert), 32)["dev"][1]
    model = modeling.BertForSequenceClassification.from_pretrained(tiny.bert, num_labels=2)
    entered = []

    class Counting:
        def __init__(self):
            self.region = torch.autocast("cpu", dtype=torch.bfloat16)

        def __enter__(self):
            entered.append(1)
            return self.region.__enter__()

        def __exit__(self, *exc):
            return self.region.__exit__(*exc)

    cpu = torch.device("cpu")
    once = collect_outputs(model, features, 2, cpu, Counting())["logits"]
    assert len(features) > 2 and len(entered) == 1
    forward = model.forward

    def per_batch(*a, **k):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return forward(*a, **k)

    model.forward = per_batch
    assert torch.equal(collect_outputs(model, features, 2, cpu, contextlib.nullcontext())["logits"],
                       once)
