"""BERT encoder and sequence classifier with the parameter names of the 2019 package.

Written from the public description of BERT (Devlin et al., 2019). Names such as
`bert.encoder.layer.N.attention.self.query.weight` match the published checkpoints, so they load
one to one. The same classes run MPNet (Song et al., 2020) when the config says
`model_type: mpnet`: its attention, feed-forward and LayerNorm placement are BERT's, and it
differs in four places, each a config switch here: no token-type embeddings; position ids
that start at `pad_token_id + 1`; a relative position bias (T5's bidirectional log buckets, one
table for all layers, computed once per forward) added to every layer's attention scores; and
LayerNorm eps 1e-5 (a config field). Its checkpoints' names (`attention.attn.q`, ...) are mapped
onto BERT's when loaded (`normalize_state_dict`). The encoder runs its layers in a `schedule` of (layer index, swap Q/K) pairs: the plain
schedule runs each layer once; a schedule that repeats layers with the swap set is SPS (the
project's `utils/modeling.py` builds it). The model holds no training code, and each `forward`
always returns the same named tuple.

Speed (measured by `bench/throughput.py`, see `bench/README.md`): on the CPU, the encoder's fp32
Linear layers run their three matrix multiplies (forward, input and weight gradient) through
oneDNN or MKL, whichever a once-per-process probe finds faster on the CPU at hand (linear.py,
`PEAKD_LINEAR`); the attention mask is dropped when a CPU batch has no padding; and a CPU batch
with padding runs every per-token operation on its real tokens only (`Packing`). The switches
below turn these off.
"""
import contextlib
import copy
import json
import math
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .linear import Linear
from .serialization import load_state_dict_file

# Speed switch (module-level so that a benchmark can measure it; results agree within 1e-5);
# linear.LINEAR_PATH is the other one.
SKIP_FULL_MASK = True     # no attention mask for a CPU batch without padding
# A CPU batch whose padding is at least this share of its (B, S) positions runs its Linears,
# LayerNorms, GELUs and residuals on the real tokens only (`Packing`), so their cost follows the
# real tokens. bench/packing.py on an AVX2 AMD EPYC, 1 thread, 3-layer MiniLM student: MRPC's
# shuffled training batches (32% padding) train 1.42x and infer 1.29x faster packed; batches
# with 5-9% padding gain nothing (0.95-1.06x), hence 10%. 0 packs every padded batch, None never.
PACK_MIN_PADDING = 0.1

# The attention kernels SDPA may pick on CUDA: cuDNN attention is left out. For fp16/bf16 on
# Hopper SDPA prefers it, and it builds a new cuDNN graph for every new sequence length, which
# batches padded to their own length hit almost every step. Measured on one H100 (torch 2.11,
# CUDA 13; issue 11): 54 MRPC batches of new lengths took 6.2 s (fp16) and 4.8 s (bf16) the
# first time and 0.25 / 0.15 s the second with cuDNN; without it 0.36 / 0.30 s and
# 0.17 / 0.13 s. With cuDNN, finetune.py --fp16 trained at 474 samples/s against fp32's 1,597
# and evaluated at 223 against 8,468. cuDNN attention has no fp32 kernel, so fp32 is unchanged.
CUDA_SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]

CONFIG_NAMES = ("config.json", "bert_config.json")
# config.json's `model_type` values these classes run; a config without one is BERT
MODEL_FAMILIES = ("bert", "mpnet")
WEIGHTS_NAMES = ("model.safetensors", "pytorch_model.bin")


class BertConfig:
    """Hyperparameters of a BERT model; reads and writes the 2019 and today's json layouts."""

    FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
              "intermediate_size", "hidden_act", "hidden_dropout_prob",
              "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
              "initializer_range", "layer_norm_eps", "model_type",
              "relative_attention_num_buckets", "pad_token_id")
    # fields every config.json must have (the rest have BERT-base's defaults)
    REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size")

    def __init__(self, vocab_size_or_config_json_file=30522, hidden_size=768, num_hidden_layers=12,
                 num_attention_heads=12, intermediate_size=3072, hidden_act="gelu",
                 hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                 max_position_embeddings=512, type_vocab_size=2, initializer_range=0.02,
                 layer_norm_eps=1e-12, model_type="bert", relative_attention_num_buckets=0,
                 pad_token_id=0):
        if isinstance(vocab_size_or_config_json_file, (str, Path)):
            loaded = BertConfig.from_json_file(vocab_size_or_config_json_file)
            self.__dict__.update(loaded.__dict__)
            return
        self.vocab_size = int(vocab_size_or_config_json_file)
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        # MPNet: no token types, positions from pad_token_id + 1, a relative position bias
        self.model_type = model_type
        self.relative_attention_num_buckets = relative_attention_num_buckets
        self.pad_token_id = pad_token_id
        if model_type not in MODEL_FAMILIES:
            raise ValueError(f"model_type {model_type!r} is not one of {', '.join(MODEL_FAMILIES)}")
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of "
                             f"num_attention_heads {num_attention_heads}")

    # fields that must be positive whole numbers, whole numbers >= 0, and numbers in [0, 1)
    SIZES = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
             "intermediate_size", "max_position_embeddings", "type_vocab_size")
    COUNTS = ("relative_attention_num_buckets", "pad_token_id")
    PROBABILITIES = ("hidden_dropout_prob", "attention_probs_dropout_prob")

    @property
    def position_offset(self):
        """The first position id (MPNet counts from pad_token_id + 1, as RoBERTa does)."""
        return self.pad_token_id + 1 if self.model_type == "mpnet" else 0

    @property
    def max_positions(self):
        """The longest input the position table holds."""
        return self.max_position_embeddings - self.position_offset

    @classmethod
    def from_dict(cls, data):
        """Builds a config from a dict; keys other than the hyperparameters are ignored.

        A missing required field, or a value of the wrong type or range, is a ValueError naming
        the field, so a malformed config.json fails here and not deep inside the model (or, worse,
        runs with BERT-base's default). An MPNet config (`model_type: mpnet`) has no token types.
        """
        if not isinstance(data, dict):
            raise ValueError(f"config is a JSON {type(data).__name__}, not an object")
        known = {k: data[k] for k in cls.FIELDS if k in data}
        missing = [k for k in cls.REQUIRED if k not in known]
        if missing:
            raise ValueError(f"config has no {', '.join(missing)}")
        family = known.setdefault("model_type", "bert")
        if family not in MODEL_FAMILIES:
            raise ValueError(f"config model_type {family!r} is not supported; these classes run "
                             f"{', '.join(MODEL_FAMILIES)}")
        if family == "mpnet":
            known["type_vocab_size"] = 1  # unused: MPNet has no token-type embeddings
            known.setdefault("pad_token_id", 1)
            known.setdefault("relative_attention_num_buckets", 32)
        else:
            known["relative_attention_num_buckets"] = 0
        for k in cls.SIZES:
            v = known.get(k, 1)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"config field {k} is {v!r}, expected a positive integer")
        for k in cls.COUNTS:
            v = known.get(k, 0)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"config field {k} is {v!r}, expected an integer >= 0")
        for k in cls.PROBABILITIES:
            v = known.get(k, 0.0)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
                raise ValueError(f"config field {k} is {v!r}, expected a number in [0, 1)")
        known["vocab_size_or_config_json_file"] = known.pop("vocab_size")
        return cls(**known)

    @classmethod
    def from_json_file(cls, path):
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def to_dict(self):
        return {k: getattr(self, k) for k in self.FIELDS}

    def to_json_string(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, path):
        Path(path).write_text(self.to_json_string(), encoding="utf-8")

    def copy(self, **changes):
        """A copy with some fields changed (e.g. a student's `num_hidden_layers`)."""
        new = copy.deepcopy(self)
        for k, v in changes.items():
            if k not in self.FIELDS:
                raise ValueError(f"unknown BertConfig field {k!r}")
            setattr(new, k, v)
        return new

    def __eq__(self, other):
        return isinstance(other, BertConfig) and self.to_dict() == other.to_dict()

    def __repr__(self):
        return f"BertConfig({self.to_dict()})"


def gelu_tanh(x):
    return F.gelu(x, approximate="tanh")


ACT2FN = {"gelu": F.gelu, "relu": F.relu, "gelu_new": gelu_tanh, "gelu_pytorch_tanh": gelu_tanh,
          "tanh": torch.tanh}


class BertEmbeddings(nn.Module):
    """Word + position + token type embeddings, then LayerNorm and dropout.

    MPNet has no token-type table, and its positions count from `config.position_offset`
    (pad_token_id + 1): inputs are left-aligned, so position j of every row is j + offset.
    """

    def __init__(self, config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = (nn.Embedding(config.type_vocab_size, config.hidden_size)
                                      if config.model_type == "bert" else None)
        self.position_offset = config.position_offset
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids):
        # input_ids, token_type_ids: (B, S) -> (B, S, H)
        positions = torch.arange(self.position_offset, self.position_offset + input_ids.shape[1],
                                 device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        if self.token_type_embeddings is not None:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


def relative_position_bucket(relative_position, num_buckets, max_distance=128):
    """T5's bidirectional bucket of each relative position (key index - query index).

    Half of the buckets hold keys after the query, half keys at or before it. In each half the
    first half of the buckets are exact distances 0..n/4-1 (n = num_buckets); longer distances
    share buckets spaced by their logarithm up to `max_distance`, and anything farther goes to
    the half's last bucket. relative_position: int64 of any shape -> bucket ids of that shape.
    """
    half = num_buckets // 2
    distance = -relative_position  # > 0: the key lies before the query
    bucket = (distance < 0).long() * half
    distance = distance.abs()
    exact = half // 2
    far = exact + (torch.log(distance.float().clamp(min=1) / exact)
                   / math.log(max_distance / exact) * (half - exact)).long()
    far = far.clamp(max=half - 1)
    return bucket + torch.where(distance < exact, distance, far)


class Packing(NamedTuple):
    """Where the real tokens of a padded (B, S) batch are, so that per-token work skips padding.

    index: (N,) positions of the real tokens in the flattened (B * S) batch, in row order.
    Packed hidden states are (N, H); attention, which mixes tokens, runs on (B, S, H) again.
    """
    index: torch.Tensor
    batch: int
    length: int

    @classmethod
    def from_mask(cls, attention_mask):
        """From a (B, S) mask of 1 (token) / 0 (padding)."""
        b, s = attention_mask.shape
        return cls(attention_mask.reshape(-1).nonzero().squeeze(1), b, s)

    def pack(self, x):
        """(B, S, D) -> (N, D)."""
        return x.reshape(self.batch * self.length, -1).index_select(0, self.index)

    def unpack(self, x):
        """(N, D) -> (B, S, D), zeros at the padding."""
        out = x.new_zeros(self.batch * self.length, x.shape[-1])
        return out.index_copy(0, self.index, x).view(self.batch, self.length, -1)

    def dropout(self, x, module):
        """`module` (an nn.Dropout) applied to packed x (N, D).

        The mask is drawn for the padded (B, S, D) shape and its real rows taken, so the random
        stream and every real token's mask are those of the padded batch: packing changes no
        result beyond float rounding, and a seed means the same run either way.
        """
        if not module.training or module.p == 0:
            return x
        keep = F.dropout(x.new_ones(self.batch * self.length, x.shape[-1]), module.p, True)
        return x * keep.index_select(0, self.index)


def drop(module, x, packing):
    """Dropout `module` on x: (B, S, D) unpacked, or (N, D) with `packing`."""
    return packing.dropout(x, module) if packing is not None else module(x)


class BertSelfAttention(nn.Module):
    """Multi-head scaled dot-product attention; `swap_qk` exchanges the Query and Key Linears."""

    def __init__(self, config):
        super().__init__()
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.query = Linear(config.hidden_size, config.hidden_size)
        self.key = Linear(config.hidden_size, config.hidden_size)
        self.value = Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def _heads(self, x):
        # (B, S, H) -> (B, heads, S, H / heads)
        b, s, _ = x.shape
        return x.view(b, s, self.num_attention_heads, self.attention_head_size).transpose(1, 2)

    def forward(self, hidden_states, attention_mask, swap_qk=False, packing=None, qkv=None):
        # hidden_states: (B, S, H), or (N, H) with `packing`; attention_mask: additive (B, 1, 1,
        # S) or (B, heads, S, S) (0 or a large negative, plus MPNet's position bias) or None.
        # Returns the same layout. `qkv`, a list, receives (q, k, v), each (B, heads, S, d).
        q_proj, k_proj = (self.key, self.query) if swap_qk else (self.query, self.key)

        def heads(linear):
            y = linear(hidden_states)
            return self._heads(packing.unpack(y) if packing is not None else y)

        q, k, v = heads(q_proj), heads(k_proj), heads(self.value)
        if qkv is not None:
            qkv.append((q, k, v))
        context = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attention_mask, dropout_p=self.dropout_p if self.training else 0.0)
        b, _, s, _ = context.shape
        context = context.transpose(1, 2).reshape(b, s, -1)
        return packing.pack(context) if packing is not None else context


class BertSelfOutput(nn.Module):
    def __init__(self, config, in_size):
        super().__init__()
        self.dense = Linear(in_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, input_tensor, packing=None):
        # residual connection, then post-LayerNorm as in the original BERT
        return self.LayerNorm(drop(self.dropout, self.dense(hidden_states), packing)
                              + input_tensor)


class BertAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config, config.hidden_size)

    def forward(self, hidden_states, attention_mask, swap_qk=False, packing=None, qkv=None):
        return self.output(self.self(hidden_states, attention_mask, swap_qk, packing, qkv),
                           hidden_states, packing)


class BertIntermediate(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.intermediate_size)
        if config.hidden_act not in ACT2FN:
            raise ValueError(f"hidden_act {config.hidden_act!r} is not one of {sorted(ACT2FN)}")
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states):
        return self.intermediate_act_fn(self.dense(hidden_states))


class BertOutput(BertSelfOutput):
    """Feed-forward output projection (intermediate -> hidden) with residual and LayerNorm."""

    def __init__(self, config):
        super().__init__(config, config.intermediate_size)


class BertLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, hidden_states, attention_mask, swap_qk=False, packing=None, qkv=None):
        # (B, S, H), or (N, H) with `packing`, in and out
        attention_output = self.attention(hidden_states, attention_mask, swap_qk, packing, qkv)
        return self.output(self.intermediate(attention_output), attention_output, packing)


def plain_schedule(num_layers):
    """Each physical layer once, without the Q/K swap."""
    return tuple((i, False) for i in range(num_layers))


class BertEncoder(nn.Module):
    """Runs the physical layers in `schedule` order: a tuple of (layer index, swap Q/K) pairs.

    `swap_flip_prob` > 0 flips each effective layer's swap flag at random, in training only.
    """

    def __init__(self, config):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))
        self.schedule = plain_schedule(config.num_hidden_layers)
        self.swap_flip_prob = 0.0
        # MPNet: (buckets, heads), one table shared by every layer
        self.relative_attention_bias = (
            nn.Embedding(config.relative_attention_num_buckets, config.num_attention_heads)
            if config.relative_attention_num_buckets else None)

    def position_bias(self, length, device):
        """MPNet's relative position bias (1, heads, S, S) for inputs of `length`, or None."""
        if self.relative_attention_bias is None:
            return None
        positions = torch.arange(length, device=device)
        buckets = relative_position_bucket(positions[None, :] - positions[:, None],
                                           self.relative_attention_bias.num_embeddings)
        return self.relative_attention_bias(buckets).permute(2, 0, 1).unsqueeze(0)

    def set_schedule(self, schedule, swap_flip_prob=0.0):
        schedule = tuple((int(i), bool(s)) for i, s in schedule)
        bad = [i for i, _ in schedule if not 0 <= i < len(self.layer)]
        if not schedule or bad:
            raise ValueError(f"schedule {schedule} names layers outside 0..{len(self.layer) - 1}")
        if not 0.0 <= swap_flip_prob <= 1.0:
            raise ValueError(f"swap_flip_prob {swap_flip_prob} is not in [0, 1]")
        self.schedule = schedule
        self.swap_flip_prob = float(swap_flip_prob)

    def forward(self, hidden_states, attention_mask, output_all_encoded_layers=False,
                packing=None, qkv=None):
        """Returns (last hidden state (B, S, H), each effective layer's output or ()).

        hidden_states: (B, S, H); with `packing` the layers run on its real tokens and the
        outputs are unpacked, zeros at the padding. `qkv`, a list, receives each effective
        layer's (q, k, v).
        """
        schedule = self.schedule
        if self.training and self.swap_flip_prob > 0:
            flips = (torch.rand(len(schedule)) < self.swap_flip_prob).tolist()
            schedule = tuple((i, s != f) for (i, s), f in zip(schedule, flips))
        unpack = packing.unpack if packing is not None else (lambda x: x)
        if packing is not None:
            hidden_states = packing.pack(hidden_states)
        all_layers = []
        for index, swap_qk in schedule:
            hidden_states = self.layer[index](hidden_states, attention_mask, swap_qk, packing,
                                              qkv)
            if output_all_encoded_layers:
                all_layers.append(unpack(hidden_states))
        last = all_layers[-1] if all_layers else unpack(hidden_states)
        return last, tuple(all_layers)


class BertPooler(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states):
        # the [CLS] token's vector of the last layer: (B, S, H) -> (B, H)
        return self.activation(self.dense(hidden_states[:, 0]))


class EncoderOutput(NamedTuple):
    # At padding positions the (B, S, H) tensors hold no defined value: the padded path computes
    # something there that nothing reads, the packed path (CPU) leaves zeros.
    sequence_output: torch.Tensor   # (B, S, H): last effective layer
    pooled_output: torch.Tensor     # (B, H)
    encoded_layers: tuple           # each effective layer's (B, S, H), or () unless asked for
    embedding_output: torch.Tensor  # (B, S, H): the embeddings' output, the encoder's input
    # each effective layer's (q, k, v), each (B, heads, S, d), or () unless asked for
    # (output_qkv): what distillation losses on attention read (TinyBERT, MiniLM)
    attention_qkv: tuple
    position_bias: torch.Tensor     # MPNet's (1, heads, S, S) added to the scores; None for BERT


class ClassifierOutput(NamedTuple):
    logits: torch.Tensor            # (B, num_labels)
    pooled_output: torch.Tensor     # (B, H)
    encoded_layers: tuple           # as in EncoderOutput, and the fields below
    embedding_output: torch.Tensor
    attention_qkv: tuple
    position_bias: torch.Tensor
    sequence_output: torch.Tensor


def _no_padding(attention_mask):
    """True when a CPU batch's (B, S) mask has no padding, so attention can run without a mask.

    Only checked on the CPU: on a GPU the check would cost a host-device sync per step.
    """
    return (SKIP_FULL_MASK and attention_mask.device.type == "cpu"
            and not torch.compiler.is_compiling() and bool(attention_mask.all()))


def choose_packing(attention_mask):
    """A Packing for a CPU batch whose padding reaches PACK_MIN_PADDING, else None.

    Only on the CPU: finding the tokens (`nonzero`) would cost a GPU a host-device sync per step.
    """
    if (PACK_MIN_PADDING is None or attention_mask.device.type != "cpu"
            or torch.compiler.is_compiling()):
        return None
    padding = 1.0 - float(attention_mask.sum()) / attention_mask.numel()
    return Packing.from_mask(attention_mask) if padding >= max(PACK_MIN_PADDING, 1e-9) else None


def attention_kernels(device):
    """The context SDPA runs in: CUDA_SDPA_BACKENDS on CUDA, torch's own choice elsewhere."""
    if device.type == "cuda":
        return sdpa_kernel(CUDA_SDPA_BACKENDS)
    return contextlib.nullcontext()


def extended_attention_mask(attention_mask, dtype):
    """(B, S) of 1 (token) / 0 (padding) -> additive (B, 1, 1, S) mask for the attention scores."""
    mask = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - mask) * torch.finfo(dtype).min


class BertPreTrainedModel(nn.Module):
    """Weight initialisation and loading from a pretrained directory."""

    def __init__(self, config):
        super().__init__()
        if not isinstance(config, BertConfig):
            raise ValueError(f"config must be a BertConfig, not {type(config).__name__}")
        self.config = config

    def init_bert_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=self.config.initializer_range)
        elif isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
        if isinstance(module, (nn.Linear, nn.LayerNorm)) and module.bias is not None:
            module.bias.data.zero_()

    def load_state_dict_strict(self, state_dict, expected_missing=(), ignored_unexpected=()):
        """Loads `state_dict`; any missing or unexpected key not declared is an error listing them.

        `expected_missing` / `ignored_unexpected` are key prefixes the caller declares (a new
        head, a pretraining head it drops).
        """
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict and not k.startswith(tuple(expected_missing))]
        unexpected = [k for k in state_dict
                      if k not in own and not k.startswith(tuple(ignored_unexpected))]
        wrong_shape = [f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}"
                       for k, v in state_dict.items() if k in own and v.shape != own[k].shape]
        if missing or unexpected or wrong_shape:
            raise ValueError(f"state dict does not fit {type(self).__name__}: "
                             f"missing keys {_some(missing)}, unexpected keys "
                             f"{_some(unexpected)}, wrong shapes {_some(wrong_shape)}")
        self.load_state_dict({k: v for k, v in state_dict.items() if k in own}, strict=False)

    @classmethod
    def from_pretrained(cls, directory, config=None, expected_missing=(), ignored_unexpected=(),
                        **kwargs):
        """Builds the model from a pretrained directory (2019 or today's layout), strictly.

        Pretraining heads (`cls.*`) and the `position_ids` buffer of some checkpoints are dropped;
        every other key must fit. `config` overrides the directory's config.
        """
        config = config or load_config(directory)
        model = cls(config, **kwargs)
        state = normalize_state_dict(load_pretrained_weights(directory), cls.bert_prefix)
        model.load_state_dict_strict(state, expected_missing=expected_missing,
                                     ignored_unexpected=ignored_unexpected)
        return model


def _some(keys, shown=2):
    """A key list for a one-line message: the first few and how many more."""
    if len(keys) <= shown:
        return "[" + ", ".join(keys) + "]"
    return "[" + ", ".join(keys[:shown]) + f", ... {len(keys) - shown} more]"


class BertModel(BertPreTrainedModel):
    """Embeddings, encoder and pooler; `forward` returns an `EncoderOutput`."""

    bert_prefix = ""

    def __init__(self, config):
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config)
        self.apply(self.init_bert_weights)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None,
                output_all_encoded_layers=False, output_qkv=False):
        # input_ids, token_type_ids, attention_mask: (B, S)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        embedding_output = self.embeddings(input_ids, token_type_ids)
        mask = packing = None
        if attention_mask is not None and not _no_padding(attention_mask):
            mask = extended_attention_mask(attention_mask, embedding_output.dtype)
            packing = choose_packing(attention_mask)
        bias = self.encoder.position_bias(input_ids.shape[1], input_ids.device)
        if bias is not None:
            # MPNet: (1, heads, S, S) + (B, 1, 1, S) -> one additive (B, heads, S, S) mask
            mask = bias if mask is None else bias + mask
        qkv = [] if output_qkv else None
        with attention_kernels(embedding_output.device):
            sequence_output, encoded_layers = self.encoder(embedding_output, mask,
                                                           output_all_encoded_layers, packing,
                                                           qkv)
        return EncoderOutput(sequence_output, self.pooler(sequence_output), encoded_layers,
                             embedding_output, tuple(qkv or ()), bias)


class BertForSequenceClassification(BertPreTrainedModel):
    """BERT + dropout + a linear classifier on the pooled output; regression when num_labels=1."""

    bert_prefix = "bert."

    def __init__(self, config, num_labels=2):
        super().__init__(config)
        self.num_labels = num_labels
        self.bert = BertModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        self.classifier.apply(self.init_bert_weights)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None,
                output_all_encoded_layers=False, output_qkv=False):
        out = self.bert(input_ids, token_type_ids, attention_mask, output_all_encoded_layers,
                        output_qkv)
        logits = self.classifier(self.dropout(out.pooled_output))
        return ClassifierOutput(logits, *out[1:], out.sequence_output)

    @classmethod
    def from_pretrained(cls, directory, config=None, expected_missing=("classifier.",),
                        ignored_unexpected=(), **kwargs):
        """As BertPreTrainedModel.from_pretrained; the classifier is new unless the file has one."""
        return super().from_pretrained(directory, config, expected_missing, ignored_unexpected,
                                       **kwargs)


def find_model_file(directory, names, what):
    """The first of `names` present in `directory`; FileNotFoundError naming them all."""
    directory = Path(directory)
    for name in names:
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"pretrained model directory {directory} has no {what} "
                            f"(looked for {', '.join(names)})")


def load_config(directory):
    """The BertConfig of a pretrained directory (`config.json` or `bert_config.json`)."""
    return BertConfig.from_json_file(find_model_file(directory, CONFIG_NAMES, "config"))


def load_pretrained_weights(directory):
    """The raw state dict of a pretrained directory (safetensors or pytorch_model.bin)."""
    return load_state_dict_file(find_model_file(directory, WEIGHTS_NAMES, "weights"))


# MPNet's names inside a layer -> BERT's (transformers' MPNetModel layout)
MPNET_NAMES = (("attention.attn.q.", "attention.self.query."),
               ("attention.attn.k.", "attention.self.key."),
               ("attention.attn.v.", "attention.self.value."),
               ("attention.attn.o.", "attention.output.dense."),
               ("attention.LayerNorm.", "attention.output.LayerNorm."))


def normalize_state_dict(state_dict, bert_prefix):
    """Maps any published BERT or MPNet key layout onto ours.

    TF-style LayerNorm `gamma`/`beta` become `weight`/`bias`; MPNet's attention names
    (`attention.attn.q`, ...) become BERT's (MPNET_NAMES); the encoder's keys get exactly
    `bert_prefix` ("bert." for a classifier, "" for a bare BertModel) whether or not the file
    had one (`bert.` or `mpnet.`); pretraining heads (`cls.`, `lm_head.`) and `position_ids`
    buffers are dropped.
    """
    out = {}
    for key, value in state_dict.items():
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta",
                                                                         "LayerNorm.bias")
        for theirs, ours in MPNET_NAMES:
            key = key.replace(theirs, ours)
        if key.startswith(("cls.", "lm_head.")) or key.endswith("position_ids"):
            continue
        for prefix in ("bert.", "mpnet."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        is_head = not key.startswith(("embeddings.", "encoder.", "pooler."))
        out[key if is_head else bert_prefix + key] = value
    return out


def count_parameters(module):
    """Number of distinct parameters (shared tensors counted once)."""
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())
