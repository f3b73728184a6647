"""Shared test set-up: src/ is the import root; real GLUE files come from ../shared/glue_data.

Set PEAKD_SHARED_GLUE to read the genuine GLUE files from elsewhere.
"""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SHARED_GLUE = Path(os.environ.get("PEAKD_SHARED_GLUE", ROOT.parent / "shared" / "glue_data"))


@pytest.fixture(scope="session")
def shared_glue():
    """Folder with the genuine GLUE MRPC, SST-2 and CoLA files (never copied into the project)."""
    if not (SHARED_GLUE / "MRPC" / "dev.tsv").is_file():
        pytest.skip(f"genuine GLUE files not found at {SHARED_GLUE}; set PEAKD_SHARED_GLUE")
    return SHARED_GLUE
