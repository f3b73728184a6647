"""The methods Pea-KD is compared with: each loss against values worked out by hand on tiny
tensors, the layer pairings, and each --train_type run end to end on a plain and an SPS student
with its teacher running alongside (docs/baselines.md)."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import load_script, train_args
from utils import losses
from utils.losses import (attention_scores, ckd_layer_relation_loss, ckd_word_relation_loss,
                          cosine_hidden_loss, minilm_relation_loss, skip_layer_map,
                          soft_cross_entropy, tinybert_attention_loss, tinybert_hidden_loss)

FINETUNE = load_script("finetune")


def test_attention_scores_are_qk_over_root_d_plus_the_position_bias():
    q = torch.tensor([[[[1.0, 0.0, 0.0, 0.0]]]])  # (1, 1, 1, 4)
    k = torch.tensor([[[[2.0, 0.0, 0.0, 0.0], [0.0, 3.0, 0.0, 0.0]]]])  # (1, 1, 2, 4)
    assert attention_scores(q, k).tolist() == [[[[1.0, 0.0]]]]  # 2 / sqrt(4), 0
    bias = torch.tensor([[[[0.5, -1.0]]]])
    assert attention_scores(q, k, bias).tolist() == [[[[1.5, -1.0]]]]


def test_tinybert_attention_loss_zeroes_pairs_with_padding():
    # B 1, h 1, S 2, the second token padding: only the (0, 0) entry counts, divided by 4 entries
    s = torch.tensor([[[[1.0, 7.0], [5.0, 9.0]]]])
    t = torch.tensor([[[[3.0, -4.0], [0.0, 2.0]]]])
    mask = torch.tensor([[1, 0]])
    assert tinybert_attention_loss(s, t, mask).item() == pytest.approx((1 - 3) ** 2 / 4)


def test_tinybert_hidden_loss_fits_the_student_and_skips_padding():
    fit = torch.nn.Linear(1, 2)
    fit.weight.data = torch.tensor([[2.0], [0.0]])
    fit.bias.data = torch.tensor([0.0, 1.0])
    s = torch.tensor([[[1.0], [100.0]]])  # (1, 2, 1); token 2 is padding
    t = torch.tensor([[[2.0, 3.0], [0.0, 0.0]]])
    # fit(s_0) = (2, 1); errors (0, -2): mean over 1 token x 2 features = 4 / 2
    assert tinybert_hidden_loss(s, t, torch.tensor([[1, 0]]), fit).item() == pytest.approx(2.0)


def test_soft_cross_entropy_by_hand():
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[0.0, math.log(3.0)]])  # p_t = (1/4, 3/4)
    assert soft_cross_entropy(s, t).item() == pytest.approx(math.log(2.0))
    # T 2: p_t = softmax(0, ln3 / 2) = (1, sqrt 3) / (1 + sqrt 3); student still uniform
    assert soft_cross_entropy(s, t, 2.0).item() == pytest.approx(math.log(2.0))
    s = torch.tensor([[math.log(3.0), 0.0]])  # p_s = (3/4, 1/4)
    want = -(0.25 * math.log(0.75) + 0.75 * math.log(0.25))
    assert soft_cross_entropy(s, t).item() == pytest.approx(want)


def test_minilm_relation_loss_by_hand():
    """One head, d 1, tokens 2 and 3 real then one padding. Student: every score 0, so each row
    is uniform over the 2 real keys; teacher q = k = v = (0, ln 3): attention row of token 1 is
    softmax(0, 0) = uniform, of token 2 softmax(0, (ln 3)^2); the value relation is the same
    matrix (v v^T). KL(uniform || uniform) = 0."""
    z = torch.zeros(1, 1, 3, 1)
    x = torch.tensor([0.0, math.log(3.0), 5.0]).view(1, 1, 3, 1)
    mask = torch.tensor([[1, 1, 0]])
    a = math.log(3.0) ** 2
    p = torch.softmax(torch.tensor([0.0, a]), 0)
    kl_row2 = float((p * (p.log() - math.log(0.5))).sum())
    # per relation: (0 + kl_row2) / (1 head x 2 real queries); attention + value relation
    want = 2 * kl_row2 / 2
    got = minilm_relation_loss((z, z, z), (x, x, x), mask)
    assert got.item() == pytest.approx(want, rel=1e-6)
    with pytest.raises(Exception, match="same number of heads"):
        minilm_relation_loss((z, z, z), (torch.zeros(1, 2, 3, 1),) * 3, mask)


def test_ckd_word_relation_by_hand():
    """One layer, three real tokens at right angles but the third equal to the first: the
    teacher's cosines (off the diagonal) are row 1 (0, 1), row 2 (0, 0), row 3 (1, 0); the
    student's are all 0 (three orthogonal vectors), so its rows are uniform. Rows 1 and 3 give
    KL(softmax(0, 1) || uniform), row 2 gives 0; divided by the 9 real pairs."""
    teacher = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])
    student = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    p = torch.softmax(torch.tensor([0.0, 1.0]), 0)
    kl = float((p * (p.log() - math.log(0.5))).sum())
    got = ckd_word_relation_loss([student], [teacher], torch.ones(1, 3))
    assert got.item() == pytest.approx(2 * kl / 9, rel=1e-6)
    # a padding token changes nothing when its vectors are anything at all
    pad_t = torch.cat([teacher, torch.randn(1, 1, 2)], 1)
    pad_s = torch.cat([student, torch.randn(1, 1, 3)], 1)
    again = ckd_word_relation_loss([pad_s], [pad_t], torch.tensor([[1, 1, 1, 0]]))
    assert again.item() == pytest.approx(got.item(), rel=1e-6)


def test_ckd_layer_relation_by_hand():
    """One real token over three layers: the teacher's layer vectors are e1, e2, e1 (cosines as
    in the word case), the student's e1, e2, e3: 2 KL terms over 1 token x 3^2."""
    t = [torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[0.0, 1.0]]]), torch.tensor([[[1.0, 0.0]]])]
    s = [torch.eye(3)[i].view(1, 1, 3) for i in range(3)]
    p = torch.softmax(torch.tensor([0.0, 1.0]), 0)
    kl = float((p * (p.log() - math.log(0.5))).sum())
    assert ckd_layer_relation_loss(s, t, torch.ones(1, 1)).item() == pytest.approx(2 * kl / 9,
                                                                                   rel=1e-6)


def test_relation_losses_have_finite_gradients_with_padding():
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    s = [torch.randn(2, 5, 4, requires_grad=True) for _ in range(3)]
    t = [torch.randn(2, 5, 6) for _ in range(3)]
    loss = ckd_word_relation_loss(s, t, mask) + ckd_layer_relation_loss(s, t, mask)
    q = torch.randn(2, 2, 5, 3, requires_grad=True)
    loss = loss + minilm_relation_loss((q, q, q), (torch.randn(2, 2, 5, 3),) * 3, mask)
    loss.backward()
    assert all(torch.isfinite(x.grad).all() for x in s + [q])


def test_relation_losses_run_in_fp32_under_autocast():
    """CKD's cosines and the attention scores are taken in fp32 whatever the autocast (bf16
    would round them to 3 digits); the cosines equal the normalise-first form of CKD's code."""
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    s = [torch.randn(2, 5, 8) * 3 for _ in range(3)]
    t = [torch.randn(2, 5, 8) for _ in range(3)]
    plain = (ckd_word_relation_loss(s, t, mask), ckd_layer_relation_loss(s, t, mask))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = (ckd_word_relation_loss(s, t, mask), ckd_layer_relation_loss(s, t, mask))
    assert [x.dtype for x in cast] == [torch.float32] * 2
    assert [x.item() for x in cast] == pytest.approx([x.item() for x in plain], rel=1e-6)
    unit = F.normalize(s[0], dim=-1)
    assert losses._cosine_matrix(s[0]) == pytest.approx(unit @ unit.transpose(-1, -2), abs=1e-6)
    # the attention scores TinyBERT and MiniLM compare, likewise
    q, k = torch.randn(2, 3, 5, 16), torch.randn(2, 3, 5, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = attention_scores(q, k)
    assert cast.dtype == torch.float32
    assert cast == pytest.approx(q @ k.transpose(-1, -2) / 4, abs=1e-5)


def test_cosine_hidden_loss_by_hand():
    s = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [9.0, 9.0]]])
    t = torch.tensor([[[0.0, 1.0], [2.0, 2.0], [-1.0, 0.0]]])
    # 1 - cos: 1 and 0 on the two real tokens, the third is padding
    assert cosine_hidden_loss(s, t, torch.tensor([[1, 1, 0]])).item() == pytest.approx(0.5)


@pytest.mark.parametrize("student, teacher, attention, hidden", [
    (3, 12, [3, 7, 11], [0, 4, 8, 12]),
    (6, 12, [1, 3, 5, 7, 9, 11], [0, 2, 4, 6, 8, 10, 12]),  # an SPS 3-layer student
    (3, 6, [1, 3, 5], [0, 2, 4, 6]),
    (6, 6, [0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5, 6]),
    (5, 12, [1, 3, 5, 7, 9], [0, 2, 4, 6, 8, 10]),  # 12 / 5 is not whole: k = 2
])
def test_skip_layer_map(student, teacher, attention, hidden):
    assert skip_layer_map(student, teacher) == (attention, hidden)


def test_a_student_deeper_than_its_teacher_is_refused():
    with pytest.raises(Exception, match="deeper than its 4-layer teacher"):
        skip_layer_map(8, 4)


@pytest.mark.parametrize("model_type", ["Original", "SPS"])
@pytest.mark.parametrize("train_type", ["tinybert_layer", "minilm_layer", "ckd", "distil_cos"])
def test_each_method_trains_with_its_teacher_alongside(train_type, model_type, tiny,
                                                       mrpc_teacher, tmp_path):
    out = tmp_path / "run"
    results = FINETUNE.main(train_args("MRPC", tiny.data, tiny.bert, out, "--train_type",
                                       train_type, "--model_type", model_type,
                                       "--student_hidden_layers", 2, "--teacher_dir",
                                       mrpc_teacher.run))
    assert results["optimizer_steps"] == 3 and results["teacher_forwards"] == 3
    assert 0 < results["teacher_forward_seconds"] < results["train_seconds"]
    recorded = json.loads((out / "args.json").read_text())
    assert recorded["train_type"] == train_type and "beta" not in recorded
    losses = [float(row.split(",")[2]) for row in (out / "train_log.csv").read_text()
              .splitlines()[1:]]
    assert all(math.isfinite(x) and x > 0 for x in losses)
    assert (out / "BERT.encoder_final.pkl").is_file() == train_type.endswith("_layer")


def test_tinybert_two_stages_chain(tiny, mrpc_teacher, tmp_path):
    """The prediction stage starts from the intermediate stage's final encoder and learns the
    teacher's soft labels from the teacher file (no gold-label term)."""
    first = tmp_path / "layer"
    FINETUNE.main(train_args("MRPC", tiny.data, tiny.bert, first, "--train_type",
                             "tinybert_layer", "--student_hidden_layers", 2, "--teacher_dir",
                             mrpc_teacher.run))
    results = FINETUNE.main(train_args("MRPC", tiny.data, tiny.bert, tmp_path / "pred",
                                       "--train_type", "tinybert_pred",
                                       "--student_hidden_layers", 2, "--teacher_prediction",
                                       mrpc_teacher.file, "--load_model_dir",
                                       first / "BERT.encoder_final.pkl"))
    assert results["best_acc"] is not None and "teacher_forwards" not in results


def test_tinybert_fit_dense_is_trained_and_resumed(tiny, mrpc_teacher, tmp_path, monkeypatch):
    """fit_dense is in the optimizer (its weights move) and in the resume state: an interrupted
    intermediate stage resumed ends with the same encoder as an uninterrupted one."""
    from utils import train as train_module

    base = ["--train_type", "tinybert_layer", "--student_hidden_layers", 2, "--teacher_dir",
            mrpc_teacher.run, "--max_steps", 4, "--eval_steps", 2]
    whole = tmp_path / "whole"
    FINETUNE.main(train_args("MRPC", tiny.data, tiny.bert, whole, *base))
    cut = tmp_path / "cut"
    original = train_module._TrainingRun.optimizer_step
    fits = []

    def stop_at_step_3(self, *args):
        fits.append(self.extra.weight.detach().clone())
        if self.pos.step == 2:
            raise KeyboardInterrupt
        original(self, *args)

    monkeypatch.setattr(train_module._TrainingRun, "optimizer_step", stop_at_step_3)
    with pytest.raises(SystemExit):
        FINETUNE.main(train_args("MRPC", tiny.data, tiny.bert, cut, *base))
    assert not torch.equal(fits[0], fits[-1])  # the fit moved
    monkeypatch.setattr(train_module._TrainingRun, "optimizer_step", original)
    FINETUNE.main(train_args("MRPC", tiny.data, tiny.bert, cut, *base, "--resume"))
    a = torch.load(whole / "BERT.encoder_final.pkl", weights_only=True)
    b = torch.load(cut / "BERT.encoder_final.pkl", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_flags_a_train_type_does_not_read_are_refused(tiny, mrpc_teacher, tmp_path, capsys):
    from helpers import expect_error

    for train_type, flag, value in (("ft", "--alpha", 0.5), ("ft", "--teacher_prediction",
                                                            mrpc_teacher.file),
                                    ("ckd", "--beta", 1), ("distil_cos", "--alpha", 0.5),
                                    ("kd", "--relation_weights", "1,1")):
        expect_error(FINETUNE.main, train_args("MRPC", tiny.data, tiny.bert, tmp_path / "r",
                                               "--train_type", train_type, flag, value,
                                               "--teacher_dir", mrpc_teacher.run)
                     if train_type in ("ckd", "distil_cos") else
                     train_args("MRPC", tiny.data, tiny.bert, tmp_path / "r", "--train_type",
                                train_type, flag, value),
                     capsys, [f"{flag} is not read by --train_type {train_type}", "drop it"],
                     watched=(tmp_path,))


def test_ckd_takes_its_per_task_alpha_and_temperature(tiny, mrpc_teacher, tmp_path):
    FINETUNE.main(train_args("MRPC", tiny.data, tiny.bert, tmp_path / "mrpc", "--train_type",
                             "ckd", "--teacher_dir", mrpc_teacher.run))
    recorded = json.loads((tmp_path / "mrpc" / "args.json").read_text())
    assert (recorded["alpha"], recorded["T"], recorded["relation_weights"]) == (0.7, 4.0, "1,1")
    FINETUNE.main(train_args("MRPC", tiny.data, tiny.bert, tmp_path / "given", "--train_type",
                             "ckd", "--teacher_dir", mrpc_teacher.run, "--T", 2))
    assert json.loads((tmp_path / "given" / "args.json").read_text())["T"] == 2.0


def test_a_teacher_cast_once_gives_what_autocast_gives_each_step(mrpc_teacher, tiny):
    """RunningTeacher with the student's bf16 casts the teacher's Linears once; under autocast
    its outputs (logits, every layer, q/k/v) equal those of the fp32 teacher bit for bit, and
    its embeddings and LayerNorms stay fp32."""
    from utils.distill import LIVE_TEACHER, RunningTeacher

    cpu = torch.device("cpu")
    outputs = {**LIVE_TEACHER["tinybert_layer"], **LIVE_TEACHER["minilm_layer"]}
    plain = RunningTeacher.from_run(mrpc_teacher.run, cpu, outputs)
    cast = RunningTeacher.from_run(mrpc_teacher.run, cpu, outputs, torch.bfloat16)
    linears = [m for m in cast.model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.weight.dtype == torch.bfloat16 for m in linears)
    assert cast.model.bert.embeddings.word_embeddings.weight.dtype == torch.float32
    ids = torch.randint(5, 40, (3, 9), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "token_type_ids": torch.zeros_like(ids),
             "attention_mask": torch.ones_like(ids)}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, got = plain(batch), cast(batch)
    assert torch.equal(want.logits, got.logits)
    for a, b in zip(want.encoded_layers, got.encoded_layers, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(want.attention_qkv, got.attention_qkv, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
