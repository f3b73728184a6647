"""Putting a downloaded model folder in place, shared by the model downloaders.

The files are staged in a temporary folder beside the final one and checked as the scripts will
read them (the config parses, the vocabulary holds the model family's special tokens, the
weights load strictly into the model the config describes); only then is the folder renamed into
place. A failure or Ctrl-C leaves nothing half-written, and a folder already there is replaced
only by a checked one.
"""
import shutil
import sys
import tempfile
from pathlib import Path

from http_fetch import FetchError

# src/, the import root of the project's model code
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from BERT.pytorch_pretrained_bert import BertModel  # noqa: E402
from utils.errors import PeakdError  # noqa: E402
from utils.modeling import load_pretrained_encoder, load_tokenizer, read_config  # noqa: E402
from utils.summary import print_summary  # noqa: E402
from BERT.pytorch_pretrained_bert.modeling import CONFIG_NAMES, find_model_file  # noqa: E402


def check_model_folder(folder):
    """Raises FetchError naming what is wrong unless `folder` holds a model the scripts can use:
    a valid config, a vocabulary with the family's special tokens and ids that fit the config,
    and weights that load strictly into that model."""
    try:
        try:
            config_file = find_model_file(folder, CONFIG_NAMES, "config")
        except FileNotFoundError as e:
            raise PeakdError(str(e)) from None
        config = read_config(config_file, "config")
        load_tokenizer(folder, config, "the downloaded model")
        model = BertModel(config)
        try:
            model.load_state_dict_strict(load_pretrained_encoder(folder))
        except ValueError as e:
            raise PeakdError(f"its weights do not fit its config: {str(e)[:160]}") from None
    except PeakdError as e:
        raise FetchError(f"the downloaded files are not a usable model: {e}") from None


def install_folder(output_dir, name, fill):
    """Calls fill(staged) to write the model's files into a temporary folder in `output_dir`,
    checks them (check_model_folder), then renames the folder to output_dir/<name>, replacing
    a folder already there only now."""
    final = output_dir / name
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=output_dir))
    except OSError as exc:
        raise FetchError(f"cannot write under {output_dir}: {exc.strerror or exc}")
    try:
        staged = work / name
        staged.mkdir()
        fill(staged, work)
        check_model_folder(staged)
        if final.exists():
            # Moved aside rather than deleted first, so it can be put back if the swap fails.
            previous = work / "previous"
            final.rename(previous)
            try:
                staged.rename(final)
            except OSError:
                previous.rename(final)
                raise
        else:
            staged.rename(final)
    except OSError as exc:
        raise FetchError(f"cannot write under {output_dir}: {exc.strerror or exc}")
    finally:
        # Also runs on Ctrl-C, so an interrupted download leaves no partial files.
        shutil.rmtree(work, ignore_errors=True)
    return final


def run_install(name, output_dir, install, done, verb="downloading"):
    """A downloader's end: refuses an --output_dir that is a file, runs install() (which writes
    output_dir/<name> through install_folder), and turns Ctrl-C and a FetchError into one
    `error:` line and exit 130 / 1; otherwise prints `done` and the model folder."""
    if output_dir.exists() and not output_dir.is_dir():
        print(f"error: --output_dir {output_dir} is a file, expected a folder; choose another "
              "path", file=sys.stderr)
        sys.exit(1)
    try:
        install()
    except KeyboardInterrupt:
        print(f"error: interrupted while {verb} {name}; nothing of it was kept: rerun the "
              "same command", file=sys.stderr)
        sys.exit(130)
    except FetchError as exc:
        print(f"error: model {name}: {exc}", file=sys.stderr)
        sys.exit(1)
    print_summary([done, f"model folder: {(output_dir / name).resolve()}"])
