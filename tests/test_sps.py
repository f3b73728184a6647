"""SPS as README.md describes it: same parameters as the plain k-layer student, forward equal to an
unrolled 2k-layer BERT with Query/Key swapped in the upper copy, gradients from both passes."""
import copy

import pytest
import torch

from BERT.pytorch_pretrained_bert import BertConfig, BertForSequenceClassification
from utils.modeling import build_classifier, sps_schedule

K = 3
CONFIG = BertConfig(101, hidden_size=32, num_hidden_layers=K, num_attention_heads=4,
                    intermediate_size=48, max_position_embeddings=40, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0)


def inputs():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 101, (4, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[3, 4:] = 0
    return ids * mask, torch.zeros_like(ids), mask


def unrolled(student, swap):
    """A plain 2k-layer BERT: the k layers copied twice, Q/K swapped in the upper copy."""
    plain = BertForSequenceClassification(CONFIG.copy(num_hidden_layers=2 * K), num_labels=2)
    state = {}
    for key, value in student.state_dict().items():
        if not key.startswith("bert.encoder.layer."):
            state[key] = value
            continue
        index, rest = key[len("bert.encoder.layer."):].split(".", 1)
        state[f"bert.encoder.layer.{index}.{rest}"] = value
        upper = rest
        if swap and ".self.query." in rest:
            upper = rest.replace(".self.query.", ".self.key.")
        elif swap and ".self.key." in rest:
            upper = rest.replace(".self.key.", ".self.query.")
        state[f"bert.encoder.layer.{int(index) + K}.{upper}"] = value
    plain.load_state_dict(state)
    return plain.eval()


def test_sps_has_the_plain_students_parameters_and_names():
    torch.manual_seed(0)
    plain = build_classifier(CONFIG, 2, "Original")
    sps = build_classifier(CONFIG, 2, "SPS")
    assert list(sps.state_dict()) == list(plain.state_dict())
    assert sum(p.numel() for p in sps.parameters()) == sum(p.numel() for p in plain.parameters())
    assert sps.bert.encoder.schedule == tuple((i, False) for i in range(K)) + \
        tuple((i, True) for i in range(K))
    sps.load_state_dict(plain.state_dict())  # checkpoints are interchangeable


@pytest.mark.parametrize("model_type,swap", [("SPS", True), ("SPS_no_shuffle", False)])
def test_sps_forward_equals_unrolled_2k_layer_bert(model_type, swap):
    torch.manual_seed(1)
    sps = build_classifier(CONFIG, 2, model_type).eval()
    reference = unrolled(sps, swap)
    ids, types, mask = inputs()
    with torch.no_grad():
        ours = sps(ids, types, mask, output_all_encoded_layers=True)
        theirs = reference(ids, types, mask, output_all_encoded_layers=True)
    assert len(ours.encoded_layers) == 2 * K
    assert (ours.logits - theirs.logits).abs().max() < 1e-6
    for mine, want in zip(ours.encoded_layers, theirs.encoded_layers):
        assert (mine - want).abs().max() < 1e-6


def test_swap_changes_the_output():
    torch.manual_seed(2)
    sps = build_classifier(CONFIG, 2, "SPS").eval()
    # small random Q/K make attention nearly uniform, whatever the order: sharpen it
    with torch.no_grad():
        for layer in sps.bert.encoder.layer:
            layer.attention.self.query.weight.mul_(20)
            layer.attention.self.key.weight.mul_(20)
    no_shuffle = build_classifier(CONFIG, 2, "SPS_no_shuffle").eval()
    no_shuffle.load_state_dict(sps.state_dict())
    ids, types, mask = inputs()
    with torch.no_grad():
        a = sps(ids, types, mask, output_all_encoded_layers=True).encoded_layers[-1]
        b = no_shuffle(ids, types, mask, output_all_encoded_layers=True).encoded_layers[-1]
    assert (a - b).abs().max() > 1e-2


def test_shared_modules_get_gradients_from_both_passes():
    torch.manual_seed(3)
    sps = build_classifier(CONFIG, 2, "SPS").eval()
    reference = unrolled(sps, swap=True)
    ids, types, mask = inputs()
    sps(ids, types, mask).logits.sum().backward()
    reference(ids, types, mask).logits.sum().backward()
    grads = dict(reference.named_parameters())
    for i in range(K):
        ours = dict(sps.bert.encoder.layer[i].named_parameters())
        low = f"bert.encoder.layer.{i}."
        up = f"bert.encoder.layer.{i + K}."
        value = "attention.self.value.weight"
        want = grads[low + value].grad + grads[up + value].grad
        assert torch.allclose(ours[value].grad, want, atol=1e-6)
        assert grads[up + value].grad.abs().sum() > 0  # the second pass really contributes
        # the query Linear serves as query below and as key above
        query, key = "attention.self.query.weight", "attention.self.key.weight"
        want = grads[low + query].grad + grads[up + key].grad
        assert torch.allclose(ours[query].grad, want, atol=1e-6)


def test_second_pass_subset_for_finetune_er():
    schedule = sps_schedule(6, "SPS", second_pass=[3, 4, 5])
    assert schedule == tuple((i, False) for i in range(6)) + ((3, True), (4, True), (5, True))
    with pytest.raises(Exception, match="model_type"):
        sps_schedule(3, "SPS2")


def test_random_swap_flips_only_in_training():
    torch.manual_seed(4)
    sps = build_classifier(CONFIG, 2, "SPS", swap_flip_prob=1.0)
    flipped = build_classifier(CONFIG, 2, "Original")
    flipped.load_state_dict(sps.state_dict())
    # flipping every flag: first pass swapped, second pass plain
    flipped.bert.encoder.set_schedule(tuple((i, True) for i in range(K)) +
                                      tuple((i, False) for i in range(K)))
    deterministic = copy.deepcopy(sps)
    deterministic.bert.encoder.set_schedule(sps.bert.encoder.schedule, 0.0)
    ids, types, mask = inputs()
    with torch.no_grad():
        sps.train()  # dropout is 0 in CONFIG, so train mode only turns on the flips
        assert torch.allclose(sps(ids, types, mask).logits, flipped.eval()(ids, types, mask).logits,
                              atol=1e-6)
        sps.eval()
        assert torch.allclose(sps(ids, types, mask).logits,
                              deterministic.eval()(ids, types, mask).logits, atol=1e-6)
