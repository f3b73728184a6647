"""Shared test set-up: src/ is the import root; real GLUE files come from ../shared/glue_data.

Set PEAKD_SHARED_GLUE to read the genuine GLUE files from elsewhere. The tiny task folders, BERT
and teacher below are built once per session (builders in helpers.py); tests that change them
work on copies.
"""
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

# The test models are tiny: a second intra-op thread only adds overhead, and beside another busy
# process on a small machine the threads thrash (a 1 ms step becomes a 1 s one).
torch.set_num_threads(1)

SHARED_GLUE = Path(os.environ.get("PEAKD_SHARED_GLUE", ROOT.parent / "shared" / "glue_data"))
# all-mpnet-base-v2 as `bash preprocess.sh --with_mpnet` installs it (PEAKD_MPNET_DIR elsewhere)
MPNET_DIR = Path(os.environ.get("PEAKD_MPNET_DIR", ROOT / "src" / "data" / "models" / "pretrained"
                                / "all-mpnet-base-v2"))


@pytest.fixture(scope="session", autouse=True)
def linear_choice_cache(tmp_path_factory):
    """The CPU Linear path's machine-wide choice (linear.py) is kept in a file of the session, not
    in the user's ~/.cache: a test never reads a choice measured outside it."""
    from BERT.pytorch_pretrained_bert.linear import CACHE_ENV

    old = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("linear_cache") / "cpu_linear.json")
    yield os.environ[CACHE_ENV]
    if old is None:
        del os.environ[CACHE_ENV]
    else:
        os.environ[CACHE_ENV] = old


@pytest.fixture(scope="session")
def shared_glue():
    """Folder with the genuine GLUE MRPC, SST-2 and CoLA files (never copied into the project)."""
    if not (SHARED_GLUE / "MRPC" / "dev.tsv").is_file():
        pytest.skip(f"genuine GLUE files not found at {SHARED_GLUE}; set PEAKD_SHARED_GLUE")
    return SHARED_GLUE


@pytest.fixture(scope="session")
def mpnet_dir():
    """The real MPNet-base folder (never needed by CI: the tests that read it are skipped)."""
    if not (MPNET_DIR / "model.safetensors").is_file():
        pytest.skip(f"all-mpnet-base-v2 not found at {MPNET_DIR}; `bash preprocess.sh "
                    "--with_mpnet` installs it (or set PEAKD_MPNET_DIR)")
    return MPNET_DIR


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Tiny SST-2, MRPC and STS-B folders (`data`) and a 4-layer random BERT (`bert`)."""
    from helpers import make_glue, make_tiny_bert

    root = tmp_path_factory.mktemp("tiny")
    data = make_glue(root / "glue")
    return SimpleNamespace(root=root, data=data, bert=make_tiny_bert(root / "bert", data))


@pytest.fixture(scope="session")
def mrpc_teacher(tiny):
    """A 4-layer MRPC teacher run (`run`) and its patient teacher-outputs file (`file`)."""
    from helpers import load_script, train_args

    run = tiny.root / "teacher"
    load_script("finetune").main(train_args("MRPC", tiny.data, tiny.bert, run,
                                            "--student_hidden_layers", 4, "--max_steps", 2))
    file = load_script("save_teacher_outputs").main(
        ["--task", "MRPC", "--data_dir", str(tiny.data), "--teacher_dir", str(run),
         "--output_dir", str(tiny.root), "--no_cuda"])
    return SimpleNamespace(run=run, file=file)
