"""Ours and transformers' BERT classifier, each stepped as its users step it.

Transformers' step is what its Trainer does by default: global grad-norm clipping at 1.0 and
fused AdamW. Ours is what src/utils/train.py does: BertAdam (per-tensor clipping, no bias
correction). The transformers SPS model is its 3-layer model plus three layers that share the
first three's modules with Query and Key swapped: our SPS student's function and parameters
(measure.py checks every pair before timing).
"""
import argparse
import contextlib
import copy

import torch
import torch.nn.functional as F

import BERT.pytorch_pretrained_bert.linear as fast_linear
import BERT.pytorch_pretrained_bert.modeling as modeling
from BERT.pytorch_pretrained_bert import BertAdam
from utils.allocator import keep_freed_memory
from utils.args import DISTILL_FLAGS, apply_presets
from utils.distill import LIVE_TEACHER, RunningTeacher, build_objective
from utils.distill import live_objective as distill_live_objective
from utils.glue import get_task
from utils.device import compile_forward

TEACHER_LAYERS = 12  # the depth of the teacher whose outputs KD and PKD steps read


def hf_config(config, num_labels):
    import transformers
    return transformers.BertConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size, hidden_act=config.hidden_act,
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size, layer_norm_eps=config.layer_norm_eps,
        num_labels=num_labels)


def hf_twin(ours, model_type, num_labels):
    """transformers' BertForSequenceClassification with our weights; SPS: shared swapped layers."""
    import transformers
    theirs = transformers.BertForSequenceClassification(hf_config(ours.config, num_labels))
    result = theirs.load_state_dict(ours.state_dict(), strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(("position_ids", "token_type_ids"))]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"transformers twin: missing {missing}, "
                           f"unexpected {result.unexpected_keys}")
    if model_type == "SPS":
        first = list(theirs.bert.encoder.layer)
        second = []
        for layer in first:
            twin, attention, self_attn = (copy.copy(m) for m in
                                          (layer, layer.attention, layer.attention.self))
            for m, src in ((twin, layer), (attention, layer.attention),
                           (self_attn, layer.attention.self)):
                m._modules = dict(src._modules)  # its own child table, the same child modules
            self_attn.query, self_attn.key = layer.attention.self.key, layer.attention.self.query
            attention.self = self_attn
            twin.attention = attention
            second.append(twin)
        theirs.bert.encoder.layer = torch.nn.ModuleList(first + second)
        theirs.config.num_hidden_layers = len(first) + len(second)
    elif model_type != "Original":
        raise ValueError(f"no transformers twin for model type {model_type}")
    return theirs


# the benchmark's --amp names and the dtypes they run in
AMP_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device, amp):
    if amp == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


def optimizer_step(scaler, opt, loss, clip=None):
    """Backward, an optimizer step through the fp16 grad scaler, and zeroed gradients; `clip`:
    parameters whose global gradient norm is clipped to 1.0 first (transformers' Trainer; BertAdam
    clips inside its own step)."""
    scaler.scale(loss).backward()
    if clip is not None:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(clip, 1.0)
    scaler.step(opt)
    scaler.update()
    opt.zero_grad(set_to_none=True)


class Ours:
    """Our model, stepped as src/utils/train.py steps it (BertAdam, zero_grad to None).

    compile_mode: None (eager) or a torch.compile mode, as the scripts' --compile MODE.
    """

    def __init__(self, model, device, amp, compile_mode=None, fused_adam=None):
        self.model, self.device, self.amp = model, device, amp
        if device.type == "cpu":
            # as the scripts' pick_device; for the whole process, so transformers' steps too
            keep_freed_memory()
        self.forward, self.graphs = compile_forward(model, compile_mode, device)
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
        self.opt = BertAdam([{"params": decay, "weight_decay": 0.01},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-5, warmup=0.1, t_total=10 ** 6, fused=fused_adam)
        self.optimizer_name = f"BertAdam ({'fused kernel' if self.opt.fused else 'foreach'})"
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    def train_step(self, batch, objective=None):
        outputs = {} if objective is None else objective.outputs
        if self.graphs:  # as utils/train.py: the last step's outputs are no longer read
            torch.compiler.cudagraph_mark_step_begin()
        with autocast(self.device, self.amp):
            out = self.forward(batch["input_ids"], batch["token_type_ids"],
                               batch["attention_mask"], **outputs)
            if objective is None:
                loss = F.cross_entropy(out.logits.float(), batch["labels"])
            else:
                loss = objective(out, batch)
        optimizer_step(self.scaler, self.opt, loss)

    @torch.inference_mode()
    def logits(self, batch):
        if self.graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with autocast(self.device, self.amp):
            out = self.forward(batch["input_ids"], batch["token_type_ids"],
                               batch["attention_mask"]).logits
        # a CUDA graph's output lives in memory its next replay overwrites
        return out.clone() if self.graphs else out


class Theirs:
    """transformers' model, stepped as its Trainer does (clip global norm 1.0, fused AdamW).

    Always eager: the baseline issue 11 names for a compiled or graphed step of ours.
    """

    def __init__(self, model, device, amp):
        self.model, self.device, self.amp = model, device, amp
        self.forward = model
        params = list(model.parameters())
        try:
            self.opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01, fused=True)
            self.optimizer_name = "AdamW (fused)"
        except (RuntimeError, ValueError):
            self.opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01)
            self.optimizer_name = "AdamW (foreach)"
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    def _call(self, batch, **extra):
        return self.forward(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                            attention_mask=batch["attention_mask"], **extra)

    def train_step(self, batch, objective=None):
        with autocast(self.device, self.amp):
            loss = self._call(batch, labels=batch["labels"]).loss
        optimizer_step(self.scaler, self.opt, loss, clip=self.model.parameters())

    @torch.inference_mode()
    def logits(self, batch):
        with autocast(self.device, self.amp):
            return self._call(batch).logits


def distill_objective(kind, model, num_examples, device, seed=0):
    """The project's own KD or PKD objective (utils.distill, preset hyperparameters) on random
    stand-ins for the teacher file: (N, C) logits and (N, L_T, H) [CLS] vectors."""
    g = torch.Generator().manual_seed(seed)
    teacher = {"logits": torch.randn(num_examples, 2, generator=g),
               "layer_cls": torch.randn(num_examples, TEACHER_LAYERS, model.config.hidden_size,
                                        generator=g)}
    args = apply_presets(argparse.Namespace(train_type=kind, task="MRPC", alpha=None, T=None,
                                            beta=None, fc_layer_idx=None,
                                            normalize_patience=None))
    return build_objective(args, get_task("MRPC"), model, teacher, device)


def live_objective(kind, model, teacher_model, device, dtype=None):
    """The objective of live method `kind` (a LIVE_TEACHER key: tinybert_layer, minilm_layer,
    ckd, distil_cos; utils.distill, MRPC presets) with `teacher_model` running beside the student
    on every batch: the cost of the compared methods' steps (docs/baselines.md). `dtype`: the
    autocast precision (None in fp32), to which the teacher's Linears are cast once, as in
    training; the teacher's forward alone (Frozen) then runs on the same weights. TinyBERT's
    fit_dense (hidden x hidden) gets its gradient here but no optimizer update (Ours steps the
    student's parameters only): a 0.6M-parameter BertAdam step left out of its time."""
    args = apply_presets(argparse.Namespace(train_type=kind, task="MRPC",
                                            **dict.fromkeys(DISTILL_FLAGS)))
    teacher = RunningTeacher(teacher_model, device, LIVE_TEACHER[kind], dtype)
    return distill_live_objective(args, kind, model, False, teacher)


class Frozen:
    """A model that only runs forward (the teacher beside a live objective), timed as Ours'
    inference is."""

    def __init__(self, model, device, amp):
        self.model, self.device, self.amp = model, device, amp

    @torch.inference_mode()
    def logits(self, batch):
        with autocast(self.device, self.amp):
            return self.model(batch["input_ids"], batch["token_type_ids"],
                              batch["attention_mask"]).logits


@contextlib.contextmanager
def switches(**values):
    """Temporarily sets the BERT package's speed switches (for --ablate)."""
    owners = {k: fast_linear if hasattr(fast_linear, k) else modeling for k in values}
    old = {k: getattr(owners[k], k) for k in values}
    for k, v in values.items():
        setattr(owners[k], k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(owners[k], k, v)


def run_one(impl, mode, batches, clock, objective=None, context=contextlib.nullcontext):
    """Seconds for all `batches` (train: one optimizer step each; infer: one forward each)."""
    with context():
        start = clock()
        for batch in batches:
            if mode == "train":
                impl.train_step(batch, objective)
            else:
                impl.logits(batch)
        return clock() - start
