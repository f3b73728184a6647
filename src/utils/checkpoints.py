"""Atomic writes and safe reads of the `.pkl` checkpoints and json files runs leave behind.

A write goes to a temporary file in the same folder and is renamed over the target, so a crash
mid-save leaves the previous file intact. A read uses `torch.load(weights_only=True)`: a file that
would run code when unpickled is refused, never executed.
"""
import json
from pathlib import Path

import torch

from BERT.pytorch_pretrained_bert import atomic_link, atomic_write

from .errors import PeakdError

CHECKPOINT_PARTS = ("encoder", "cls")


def atomic_torch_save(obj, path):
    """torch.save to a temporary file in the same folder, then rename over `path`."""
    atomic_write(path, lambda f: torch.save(obj, f))


def write_json(path, obj):
    """Atomic json write (sorted keys, indented)."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def safe_torch_load(path, what="file", mmap=False):
    """torch.load(weights_only=True) with one-line errors for missing, unsafe or broken files.

    `mmap` maps the tensors instead of reading them (a cheap look at a large file's fields).
    """
    path = Path(path)
    if path.is_dir():
        raise PeakdError(f"{what} {path} is a folder, expected a file")
    if not path.is_file():
        raise PeakdError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except PeakdError:
        raise
    except Exception as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        # torch names the global it blocked ("Unsupported global: ...", or "Trying to load
        # unsupported GLOBAL ..." for blocked modules); anything else is a broken file
        unsafe = [line for line in lines if "unsupported global" in line.lower()]
        if unsafe:
            raise PeakdError(f"refused to load {what} {path}: it holds objects other than "
                             f"tensors and plain data, which could run code ({unsafe[0]})"
                             ) from None
        reason = f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
        raise PeakdError(f"{what} {path} is corrupted or truncated ({reason}); delete it and "
                         "rerun the step that wrote it") from None


def checkpoint_path(run_dir, prefix, part, criterion):
    """`<run_dir>/<prefix>.<part>_<criterion>.pkl`, e.g. `run-1/BERT.encoder_loss.pkl`."""
    if part not in CHECKPOINT_PARTS:
        raise ValueError(f"part must be one of {CHECKPOINT_PARTS}, not {part!r}")
    return Path(run_dir) / f"{prefix}.{part}_{criterion}.pkl"


def save_model_checkpoint(model, run_dir, prefix, criterion, same_as=None):
    """Writes the encoder (BertModel keys, no `bert.` prefix) and the classifier separately.

    same_as: the criterion whose checkpoint was just written from this same model state (an
    evaluation that is the best by both); its files are hard-linked under this criterion's
    names instead of written again (a BERT-base encoder is 440 MB), or written where the file
    system has no hard links."""
    for part, module in (("encoder", model.bert), ("cls", model.classifier)):
        path = checkpoint_path(run_dir, prefix, part, criterion)
        if same_as is None or not atomic_link(checkpoint_path(run_dir, prefix, part, same_as),
                                              path):
            atomic_torch_save(module.state_dict(), path)
