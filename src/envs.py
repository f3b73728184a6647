"""Default paths of the project; each one can be overridden by an environment variable.

Nothing here touches the disk: the paths are only built.
"""
import os
from pathlib import Path

SRC_DIR = Path(__file__).resolve().parent
DATA_DIR = Path(os.environ.get("PEAKD_DATA_DIR", SRC_DIR / "data"))
GLUE_DIR = Path(os.environ.get("PEAKD_GLUE_DIR", DATA_DIR / "data_raw" / "glue_data"))
PRETRAINED_DIR = Path(os.environ.get("PEAKD_PRETRAINED_DIR", DATA_DIR / "models" / "pretrained"))
OUTPUT_DIR = Path(os.environ.get("PEAKD_OUTPUT_DIR", DATA_DIR / "outputs" / "KD"))
