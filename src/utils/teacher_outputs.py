"""The teacher-outputs file: the one owner of its path and schema, for writer and readers.

`<TASK>_patient_kd_teacher_<L>layer_result_summary.pkl` (`_normal_` without per-layer features),
in the task's output folder, written by save_teacher_outputs.py and read by finetune.py (kd, pkd)
and PTP.py. Layout (schema version 1), all plain data and tensors so `weights_only` loads it:

    {"schema_version": 1, "task": "MRPC", "teacher_layers": L, "max_seq_length": S,
     "patient": bool, "teacher_dir": str,
     "splits": {"train" | "dev" | ...: {
         "num_examples": N, "fingerprint": sha256 of the examples,
         "logits": (N, C) float32, "pooled": (N, H) float32,
         "layer_cls": (N, L, H) float16 [CLS] vector of every layer (patient files only),
         "labels": (N,) gold or None (test), "correct": (N,) bool or None,
         "input_ids": (N, S) int32, "lengths": (N,) int32, "metrics": {name: float}}}}
"""
import hashlib
from pathlib import Path

import envs

from .checkpoints import atomic_torch_save, safe_torch_load
from .errors import PeakdError

SCHEMA_VERSION = 1
SPLIT_KEYS = ("num_examples", "fingerprint", "logits", "pooled", "labels", "correct",
              "input_ids", "lengths", "metrics")


def file_name(task_name, teacher_layers, patient=True):
    kind = "patient" if patient else "normal"
    return f"{task_name}_{kind}_kd_teacher_{teacher_layers}layer_result_summary.pkl"


def default_path(task_name, teacher_layers, patient=True, folder=None):
    """Where save_teacher_outputs.py writes by default: the task's output folder."""
    folder = Path(folder) if folder is not None else envs.OUTPUT_DIR / task_name
    return folder / file_name(task_name, teacher_layers, patient)


def find_default(task_name, need_patient=False):
    """The teacher file of `task_name` in its output folder (a patient file first)."""
    folder = envs.OUTPUT_DIR / task_name
    patient = sorted(folder.glob(f"{task_name}_patient_kd_teacher_*layer_result_summary.pkl"))
    normal = sorted(folder.glob(f"{task_name}_normal_kd_teacher_*layer_result_summary.pkl"))
    found = patient or ([] if need_patient else normal)
    if not found:
        kind = "patient " if need_patient else ""
        raise PeakdError(f"no {kind}teacher outputs for {task_name} in {folder}; run "
                         "save_teacher_outputs.py first or pass --teacher_prediction")
    if len(found) > 1:
        raise PeakdError(f"several teacher files in {folder} ({', '.join(p.name for p in found)}); "
                         "pass --teacher_prediction to pick one")
    return found[0]


def make_split(examples_fingerprint, logits, pooled, layer_cls, labels, input_ids, lengths,
               metrics):
    """One split's entry; `layer_cls` None for a `_normal_` file, `labels` None for test."""
    regression = logits.shape[1] == 1
    correct = None if labels is None or regression else logits.argmax(-1) == labels
    entry = {"num_examples": logits.shape[0], "fingerprint": examples_fingerprint,
             "logits": logits.float(), "pooled": pooled.float(), "labels": labels,
             "correct": correct, "input_ids": input_ids.int(), "lengths": lengths.int(),
             "metrics": metrics}
    if layer_cls is not None:
        entry["layer_cls"] = layer_cls.half()  # half the disk; targets of a normalised MSE
    return entry


def check_owner(path, teacher_dir):
    """Refuses to replace a teacher file at `path` that another teacher run wrote; rewriting the
    same teacher's file is fine."""
    path = Path(path)
    if path.is_dir():
        raise PeakdError(f"{path} is a folder, expected the teacher outputs file; remove it or "
                         "pass another --output_dir")
    if not path.exists():
        return
    record = safe_torch_load(path, "teacher outputs file", mmap=True)
    owner = record.get("teacher_dir") if isinstance(record, dict) else None
    if owner is None or Path(owner).resolve() != Path(teacher_dir).resolve():
        raise PeakdError(f"{path} holds the outputs of another teacher ({owner}); delete it or "
                         "pass another --output_dir, so that it is not replaced")


def save(path, task_name, teacher_layers, max_seq_length, teacher_dir, splits):
    """Writes the file atomically; `splits` maps split names to `make_split` entries."""
    patient = all("layer_cls" in s for s in splits.values())
    record = {"schema_version": SCHEMA_VERSION, "task": task_name,
              "teacher_layers": teacher_layers, "max_seq_length": max_seq_length,
              "patient": patient, "teacher_dir": str(teacher_dir), "splits": splits}
    atomic_torch_save(record, path)
    return record


def predictions_digest(path):
    """sha256 over what the teacher predicted: every split's example fingerprint and its logits,
    pooled and layer_cls tensors (name, shape, dtype, bytes), in sorted order. Not the file's
    bytes, which also hold the teacher's folder: the same teacher trained again in another
    folder has the same digest."""
    record = safe_torch_load(path, "teacher outputs file", mmap=True)
    sha = hashlib.sha256()
    for split in sorted(record["splits"]):
        entry = record["splits"][split]
        sha.update(f"{split}:{entry['fingerprint']}".encode())
        for key in ("logits", "pooled", "layer_cls"):
            tensor = entry.get(key)
            if tensor is not None:
                sha.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
                sha.update(tensor.contiguous().numpy().tobytes())
    return sha.hexdigest()


def load(path, task_name, expected, max_seq_length, need_patient=False):
    """Reads and checks a teacher file against the reader's data.

    expected: {split: (num_examples, fingerprint)} of the examples the reader will use; any
    mismatch in task, schema version, example count, fingerprint or max_seq_length is an error.
    """
    record = safe_torch_load(path, "teacher outputs file")
    where = f"teacher outputs file {path}"
    if not isinstance(record, dict) or record.get("schema_version") != SCHEMA_VERSION:
        version = record.get("schema_version") if isinstance(record, dict) else None
        raise PeakdError(f"{where} has schema version {version}, this code reads "
                         f"{SCHEMA_VERSION}; rerun save_teacher_outputs.py")
    if record["task"] != task_name:
        raise PeakdError(f"{where} is for task {record['task']}, not {task_name}; pass the "
                         "right --teacher_prediction")
    if record["max_seq_length"] != max_seq_length:
        raise PeakdError(f"{where} was made with --max_seq_length {record['max_seq_length']}, "
                         f"this run uses {max_seq_length}; use the same value or rerun "
                         "save_teacher_outputs.py")
    if need_patient and not record["patient"]:
        raise PeakdError(f"{where} has no per-layer features, which --train_type pkd needs; "
                         "rerun save_teacher_outputs.py without --no_layer_features")
    for split, (count, fingerprint) in expected.items():
        entry = record["splits"].get(split)
        if entry is None:
            raise PeakdError(f"{where} has no {split} split; rerun save_teacher_outputs.py")
        if entry["num_examples"] != count:
            raise PeakdError(f"{where} has {entry['num_examples']} {split} examples, the data "
                             f"has {count}; rerun save_teacher_outputs.py on this data")
        if entry["fingerprint"] != fingerprint:
            raise PeakdError(f"{where} was made from other {split} examples (fingerprint "
                             "differs); rerun save_teacher_outputs.py on this data")
    return record
