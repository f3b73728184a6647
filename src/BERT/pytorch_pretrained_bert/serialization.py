"""Reading and writing weight files: safetensors (format written out here) and torch pickles.

A safetensors file is an 8-byte little-endian header length, a JSON header mapping each tensor
name to its dtype, shape and byte range, then the raw little-endian bytes. Torch files are read
with `weights_only=True`, so loading never runs code from the file.
"""
import json
import os
import struct
from pathlib import Path

import torch

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
           "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
           "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
_NAMES = {v: k for k, v in _DTYPES.items()}


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def atomic_write(path, write):
    """Calls write(f) on a temporary file beside `path`, fsyncs it and renames it over `path`,
    so a crash mid-write leaves the previous file intact. Temporary files of this target that
    a killed process left behind (`.<name>.tmp<pid>`, pid no longer running) are removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.tmp"
    tmp = path.with_name(f"{prefix}{os.getpid()}")
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


def load_safetensors(path):
    """{name: tensor} from a .safetensors file (tensors own their memory)."""
    data = Path(path).read_bytes()
    if len(data) < 8:
        raise ValueError(f"{path} is not a safetensors file (too short)")
    (header_len,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8:8 + header_len])
    except ValueError as e:
        raise ValueError(f"{path} has a corrupt safetensors header: {e}") from None
    base = 8 + header_len
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        if base + end > len(data):
            raise ValueError(f"{path} is truncated: tensor {name} ends past the end of the file")
        dtype = _DTYPES[info["dtype"]]
        flat = torch.frombuffer(bytearray(data[base + start:base + end]), dtype=dtype)
        out[name] = flat.reshape(info["shape"])
    return out


def save_safetensors(state_dict, path, metadata=None):
    """Writes {name: tensor} as .safetensors, atomically (temporary file, then rename)."""
    header, chunks, offset = {}, [], 0
    for name in sorted(state_dict):
        t = state_dict[name].detach().contiguous().cpu()
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # tensor data starts 8-byte aligned

    def write(f):
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for raw in chunks:
            f.write(raw)

    atomic_write(path, write)


def load_state_dict_file(path):
    """{name: tensor} from a .safetensors or a torch file (`weights_only=True`)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state
