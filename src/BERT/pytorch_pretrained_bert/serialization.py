"""Reading and writing weight files: safetensors (through the `safetensors` package) and torch
pickles, and the one atomic file write of the project.

Torch files are read with `weights_only=True`, so loading never runs code from the file.
"""
import os
from pathlib import Path

import safetensors.torch
import torch
from safetensors import SafetensorError


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _temporary(path):
    """(prefix, this process's temporary file) beside `path`: `.<name>.tmp<pid>`."""
    prefix = f".{path.name}.tmp"
    return prefix, path.with_name(f"{prefix}{os.getpid()}")


def atomic_write(path, write):
    """Calls write(f) on a temporary file beside `path`, fsyncs it and renames it over `path`,
    so a crash mid-write leaves the previous file intact. Temporary files of this target that
    a killed process left behind (`.<name>.tmp<pid>`, pid no longer running) are removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix, tmp = _temporary(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    for stale in path.parent.glob(f"{prefix}*"):
        pid = stale.name[len(prefix):]
        if pid.isdigit() and not _process_alive(int(pid)):
            stale.unlink(missing_ok=True)


def atomic_link(source, path):
    """Makes `path` a hard link to the finished file `source` (no second write), replacing
    `path` atomically. False, with nothing changed, where the file system has no hard links.
    A later atomic_write of either name gives it a new file and leaves the other intact."""
    path = Path(path)
    _, tmp = _temporary(path)
    try:
        os.link(source, tmp)
    except OSError:
        return False
    os.replace(tmp, path)
    return True


def load_safetensors(path):
    """{name: tensor} from a .safetensors file, read by the `safetensors` package.

    A file the package cannot parse (bad header, offsets past the end, a truncated download)
    is a ValueError that names the file, so callers report it in one line.
    """
    try:
        return safetensors.torch.load_file(path, device="cpu")
    except SafetensorError as e:
        raise ValueError(f"{path} is corrupted or truncated (safetensors: {e}); download or "
                         "write it again") from None


def save_safetensors(state_dict, path, metadata=None):
    """Writes {name: tensor} as .safetensors with the `safetensors` package, atomically
    (into atomic_write's temporary file, then renamed over `path`).

    The package refuses tensors that share memory; an unrolled SPS student names each physical
    layer's tensors twice, so a repeat is written as a copy.
    """
    tensors, seen = {}, set()
    for name, t in state_dict.items():
        t = t.detach().contiguous().cpu()
        storage = t.untyped_storage().data_ptr()
        tensors[name] = t.clone() if storage in seen else t
        seen.add(storage)
    meta = {str(k): str(v) for k, v in metadata.items()} if metadata else None
    atomic_write(path, lambda f: safetensors.torch.save_file(tensors, f.name, metadata=meta))


def load_state_dict_file(path):
    """{name: tensor} from a .safetensors or a torch file (`weights_only=True`)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state
