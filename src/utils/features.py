"""GLUE examples -> token id tensors, and batches padded only to their own longest sequence.

Every split is tokenized once into (N, max_seq_length) tensors; a batch is an index tensor whose
rows are gathered and cut to the longest sequence among them, so padding costs nothing beyond the
batch and no per-example Python runs in the training loop.
"""
import hashlib
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional

import torch

from .checkpoints import atomic_torch_save, safe_torch_load
from .errors import PeakdError

# the environment variable that turns the features cache on: a folder (bench/reproduce.py sets
# <work>/cache, so the stages of a grid tokenise each split once)
FEATURE_CACHE_ENV = "PEAKD_FEATURE_CACHE"
# part of every cache key: bump it when convert_examples_to_features changes what it produces
FEATURES_VERSION = 1


@dataclass
class Features:
    """One tokenized split, rows in file order.

    input_ids, token_type_ids: (N, S) int64, zero-padded; lengths: (N,) real tokens per row;
    labels: (N,) int64 class ids, (N,) float32 scores, or None for a split without labels.
    """
    input_ids: torch.Tensor
    token_type_ids: torch.Tensor
    lengths: torch.Tensor
    labels: Optional[torch.Tensor]

    def __len__(self):
        return self.input_ids.shape[0]

    def batch(self, index, pad_to_max=False, multiple=1, buckets=None):
        """The rows `index` (B,) as a dict of (B, S_b) tensors.

        S_b is their longest length rounded up to a multiple of `multiple`, or to the next of
        `buckets` (a sorted tuple of lengths), at most S; S with `pad_to_max`. The attention mask
        hides the extra columns, so logits do not change.
        """
        width = self.input_ids.shape[1]
        if not pad_to_max:
            longest = int(self.lengths[index].max())
            if buckets:
                width = bucket_length(longest, width, buckets)
            else:
                width = min(width, -(-longest // multiple) * multiple)
        ids = self.input_ids[index, :width]
        out = {"index": index, "input_ids": ids, "token_type_ids": self.token_type_ids[index, :width],
               "attention_mask": (torch.arange(width) < self.lengths[index, None]).long()}
        if self.labels is not None:
            out["labels"] = self.labels[index]
        return out


def bucket_length(length, max_length, buckets):
    """The smallest of the sorted `buckets` >= length, at most max_length."""
    return min(next((b for b in buckets if b >= length), max_length), max_length)


def truncate_pair(tokens_a, tokens_b, max_length):
    """Drops tokens from the end of the longer list until both fit `max_length` together."""
    while len(tokens_a) + len(tokens_b) > max_length:
        longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        longer.pop()


def convert_examples_to_features(examples, tokenizer, max_seq_length, task):
    """Token ids laid out by the tokenizer (`build_inputs`: BERT's `[CLS] A [SEP] B [SEP]` with
    segment ids 0/1, MPNet's `<s> A </s></s> B </s>` with one segment), longest-first truncation.

    task: the TaskSpec (its labels map label strings to ids; regression keeps float scores).
    """
    pair = any(ex.text_b is not None for ex in examples)
    specials = tokenizer.num_special_tokens(pair)
    if max_seq_length <= specials:
        raise PeakdError(f"--max_seq_length {max_seq_length} is too small: it must be at least "
                         f"{specials + 1}")
    n = len(examples)
    input_ids = torch.zeros(n, max_seq_length, dtype=torch.long)
    token_type_ids = torch.zeros(n, max_seq_length, dtype=torch.long)
    lengths = torch.zeros(n, dtype=torch.long)
    for row, ex in enumerate(examples):
        tokens_a = tokenizer.tokenize(ex.text_a)
        tokens_b = tokenizer.tokenize(ex.text_b) if ex.text_b is not None else None
        truncate_pair(tokens_a, tokens_b or [],
                      max_seq_length - tokenizer.num_special_tokens(tokens_b is not None))
        tokens, types = tokenizer.build_inputs(tokens_a, tokens_b)
        ids = tokenizer.convert_tokens_to_ids(tokens)
        input_ids[row, :len(ids)] = torch.tensor(ids)
        token_type_ids[row, :len(types)] = torch.tensor(types)
        lengths[row] = len(ids)
    return Features(input_ids, token_type_ids, lengths, encode_labels(examples, task))


def encode_labels(examples, task):
    """(N,) label tensor, or None when the split has no labels (a GLUE test file)."""
    if any(ex.label is None for ex in examples):
        return None
    if task.output_mode == "regression":
        return torch.tensor([float(ex.label) for ex in examples], dtype=torch.float32)
    label_ids = {label: i for i, label in enumerate(task.labels)}
    return torch.tensor([label_ids[ex.label] for ex in examples], dtype=torch.long)


def examples_fingerprint(examples):
    """sha256 over every example's id, texts and label: ties a teacher file to its data."""
    digest = hashlib.sha256()
    for ex in examples:
        digest.update(repr((ex.guid, ex.text_a, ex.text_b, ex.label)).encode("utf-8"))
    return digest.hexdigest()


def train_batches(n, batch_size, generator):
    """Shuffled index batches (the last one may be short) from a seeded torch.Generator."""
    return list(torch.randperm(n, generator=generator).split(batch_size))


def eval_batches(lengths, batch_size):
    """Index batches grouped by length, so each batch pads little; callers restore file order."""
    return list(torch.argsort(lengths, stable=True).split(batch_size))


def tokenizer_fingerprint(tokenizer):
    """sha256 over what decides a tokenizer's ids: its vocabulary (tokens in id order), casing
    and basic-tokenization settings."""
    digest = hashlib.sha256()
    settings = (type(tokenizer).__name__, getattr(tokenizer, "do_lower_case", None),
                getattr(tokenizer, "do_basic_tokenize", None),
                sorted(getattr(getattr(tokenizer, "basic_tokenizer", None), "never_split", ())))
    digest.update(repr(settings).encode("utf-8"))
    for token, index in sorted(tokenizer.vocab.items(), key=lambda kv: kv[1]):
        digest.update(f"{index}\t{token}\n".encode("utf-8"))
    return digest.hexdigest()


def features_cache_key(examples, tokenizer, max_seq_length, task):
    """The cache key of one split's features: the examples' content (examples_fingerprint, so a
    changed data file gives another key), the tokenizer, the length, the task's labels and
    FEATURES_VERSION."""
    digest = hashlib.sha256()
    for part in (FEATURES_VERSION, task.name, task.output_mode, tuple(task.labels or ()),
                 max_seq_length, examples_fingerprint(examples),
                 tokenizer_fingerprint(tokenizer)):
        digest.update(repr(part).encode("utf-8") + b"\0")
    return digest.hexdigest()


def cached_features(examples, tokenizer, max_seq_length, task, cache_dir=None):
    """convert_examples_to_features, read from / written to a cache folder when one is given
    (default: the PEAKD_FEATURE_CACHE environment variable; unset: no cache).

    A file `<task>-<key>.pt` per split holds the Features' tensors; it is written atomically
    (several processes may write the same key at once: the last rename wins, with the same
    content) and read with weights_only loading. An unreadable file is rebuilt.
    """
    cache_dir = cache_dir if cache_dir is not None else os.environ.get(FEATURE_CACHE_ENV)
    if not cache_dir:
        return convert_examples_to_features(examples, tokenizer, max_seq_length, task)
    key = features_cache_key(examples, tokenizer, max_seq_length, task)
    path = Path(cache_dir) / f"{task.name}-{key[:32]}.pt"
    if path.is_file():
        try:
            saved = safe_torch_load(path, "features cache file")
            features = Features(**{f.name: saved.get(f.name) for f in fields(Features)})
            if len(features) == len(examples):
                return features
        except (PeakdError, TypeError, AttributeError):
            pass  # a broken or foreign file: rebuilt below
    features = convert_examples_to_features(examples, tokenizer, max_seq_length, task)
    atomic_torch_save({f.name: getattr(features, f.name) for f in fields(Features)}, path)
    return features
