"""Default paths of the project; each one can be overridden by an environment variable.

Nothing here touches the disk: the paths are only built.
"""
import os
from pathlib import Path

SRC_DIR = Path(__file__).resolve().parent


def _env(name, default):
    """$name as a path; set but empty (or blank) counts as unset, never as the current folder."""
    value = os.environ.get(name, "").strip()
    return Path(value) if value else Path(default)


DATA_DIR = _env("PEAKD_DATA_DIR", SRC_DIR / "data")
GLUE_DIR = _env("PEAKD_GLUE_DIR", DATA_DIR / "data_raw" / "glue_data")
PRETRAINED_DIR = _env("PEAKD_PRETRAINED_DIR", DATA_DIR / "models" / "pretrained")
OUTPUT_DIR = _env("PEAKD_OUTPUT_DIR", DATA_DIR / "outputs" / "KD")
