"""Run folders: refusing to clobber a finished run, recording the resolved arguments, CSV logs,
and the checks before `--resume` continues an interrupted run."""
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

from .args import DISTILL_FLAGS
from .checkpoints import write_json
from .errors import PeakdError

RESULTS_FILE = "eval_results.json"
ARGS_FILE = "args.json"
RESUME_FILE = "resume_state.pkl"
# flags a resumed run may change: they locate the run, or change how the remaining steps run but
# not which (evaluation batch, save cadence, device, compilation; a changed device or compilation
# draws other dropout masks from then on, as another machine would)
RESUME_MAY_CHANGE = frozenset({"resume", "argv", "output_dir", "overwrite_output_dir",
                               "eval_batch_size", "no_cuda", "compile", "save_steps"})


def run_file(run_dir, name, prefix="BERT"):
    """A run-level file: `name` for BERT runs (README: The pipeline), `<prefix>.<name>` else.

    PTP.py writes into the teacher's run folder (`run-1/PTP.*`), so its args, logs, config
    and results carry the prefix instead of overwriting the teacher's.
    """
    return Path(run_dir) / (name if prefix == "BERT" else f"{prefix}.{name}")


def run_marker(path):
    """The first file in folder `path` that a training run or a teacher-output dump wrote
    (args.json, eval_results.json, `*.pkl`, prefixed ones too), or None: such a folder is
    another step's and is never written over by an export."""
    path = Path(path)
    if not path.is_dir():
        return None
    for f in sorted(path.iterdir()):
        if f.suffix == ".pkl" or f.name.endswith((ARGS_FILE, RESULTS_FILE)):
            return f
    return None


# an overwritten run's files wait here until the new run has started (its args and config
# written); `.tmp` while they are being moved
PREVIOUS = ".peakd-previous"


def own_files(path, prefix="BERT"):
    """The files of the run with `prefix` in folder `path`: `<prefix>.*` and, for BERT runs,
    the unprefixed run files (README: The pipeline). A PTP run in a teacher's folder and the
    teacher's run do not share a file."""
    path = Path(path)
    if not path.is_dir():
        return []
    unprefixed = {ARGS_FILE, RESULTS_FILE, RESUME_FILE, "train_log.csv", "eval_log.csv",
                  "config.json", "vocab.txt", "tokenizer_config.json", "test_predictions.json"}
    return sorted(p for p in path.iterdir() if p.is_file() and (
        p.name.startswith(f"{prefix}.") or (prefix == "BERT" and p.name in unprefixed)))


def _move_all(files, folder):
    folder.mkdir(exist_ok=True)
    for f in files:
        f.replace(folder / f.name)


def recover(path, prefix="BERT"):
    """Ends an overwrite that was interrupted: before the new run started, the old run's files
    go back (the old run whole); after, they are dropped (the new run stays, unfinished)."""
    path = Path(path)
    moving, aside = path / (PREVIOUS + ".tmp"), path / PREVIOUS
    for folder in (moving, aside):
        if not folder.is_dir():
            continue
        started = folder is aside and run_file(path, ARGS_FILE, prefix).exists()
        if not started:
            _move_all(sorted(folder.iterdir()), path)
        shutil.rmtree(folder)


def set_aside(path, prefix="BERT"):
    """Moves the run's files into PREVIOUS (through PREVIOUS.tmp, so an interruption part-way is
    undone by `recover`); `finish_overwrite` deletes them once the new run has started."""
    path = Path(path)
    files = own_files(path, prefix)
    if files:
        _move_all(files, path / (PREVIOUS + ".tmp"))
        (path / (PREVIOUS + ".tmp")).rename(path / PREVIOUS)


def finish_overwrite(path):
    """The new run has started: the overwritten run's files go."""
    shutil.rmtree(Path(path) / PREVIOUS, ignore_errors=True)


def prepare_output_dir(path, overwrite=False, prefix="BERT", resume=False):
    """Creates the run folder (run under its lock: utils/locks.py). Refuses one that holds a
    finished run, or an interrupted one that --resume would continue, unless `overwrite`, which
    sets the old run aside until the new one has started (`finish_overwrite`).

    With `resume` the folder must instead hold an unfinished run that left a resume state.
    """
    path = Path(path)
    recover(path, prefix)
    results, state = run_file(path, RESULTS_FILE, prefix), run_file(path, RESUME_FILE, prefix)
    if resume:
        check_resumable(path, results, overwrite, prefix)
        return path
    if results.exists() and not overwrite:
        raise PeakdError(f"--output_dir {path} already holds a finished run ({results.name}); "
                         "pass --overwrite_output_dir or choose another folder")
    if state.exists() and not overwrite:
        raise PeakdError(f"--output_dir {path} holds an interrupted run ({state.name}); continue "
                         "it with the same command and --resume, or pass "
                         "--overwrite_output_dir to discard it")
    path.mkdir(parents=True, exist_ok=True)
    if overwrite:
        set_aside(path, prefix)
    return path


def check_resumable(path, results, overwrite, prefix):
    if overwrite:
        raise PeakdError("--resume continues the run in --output_dir and --overwrite_output_dir "
                         "starts it afresh; pass only one of them")
    if results.exists():
        raise PeakdError(f"--resume: {path} holds a finished run ({results.name}); there is "
                         "nothing to resume")
    state = run_file(path, RESUME_FILE, prefix)
    if not state.is_file():
        raise PeakdError(f"--resume: {path} has no {state.name} (a run writes it at its first "
                         "evaluation or --save_steps); start the run without --resume")


def check_resume_args(run_dir, args, prefix="BERT"):
    """Refuses --resume when flags that shape training differ from the interrupted run's."""
    path = run_file(run_dir, ARGS_FILE, prefix)
    if not path.is_file():
        raise PeakdError(f"--resume: {run_dir} has no {path.name} to compare the flags with; "
                         "start the run without --resume")
    saved = json.loads(path.read_text(encoding="utf-8"))
    # the same json round trip as write_args, so tuples, paths and inf compare as written
    now = json.loads(json.dumps(recorded_args(args), default=str))
    changed = sorted(k for k in saved.keys() | now.keys()
                     if k not in RESUME_MAY_CHANGE and saved.get(k) != now.get(k))
    if changed:
        listing = ", ".join(f"--{k} {now.get(k)} (was {saved.get(k)})" for k in changed)
        raise PeakdError(f"--resume must repeat the interrupted run's flags; these differ from "
                         f"its {path.name}: {listing}")


def code_version():
    """The git commit of the code that ran, with '+dirty' when tracked files differ from it;
    None outside a git checkout. Recorded in eval_results.json, so a table that pools runs can
    show which code made each."""
    root = Path(__file__).resolve().parents[2]

    def git(*argv):
        return subprocess.run(["git", "-C", str(root), *argv], capture_output=True, text=True,
                              timeout=30)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode:
            return None
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def recorded_args(args):
    """The resolved arguments a run records: every flag, less the distillation flags its
    --train_type does not read (args.TRAIN_TYPE_FLAGS; they are None after apply_presets)."""
    return {k: v for k, v in vars(args).items() if not (k in DISTILL_FLAGS and v is None)}


def write_args(path, args, prefix="BERT"):
    """Writes the resolved arguments (after presets) and the command line beside the outputs."""
    write_json(run_file(path, ARGS_FILE, prefix), {**recorded_args(args), "argv": sys.argv})


def read_args(run_dir):
    """The args.json of an earlier run, with a clear error when it is missing."""
    path = Path(run_dir) / ARGS_FILE
    if not path.is_file():
        raise PeakdError(f"{run_dir} is not a run folder: it has no {ARGS_FILE}; pass the "
                         "--output_dir of a finished finetune.py run")
    try:
        args = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise PeakdError(f"{path} is not valid JSON ({str(e)[:80]}); the run folder is damaged: "
                         "train the run again") from None
    if not isinstance(args, dict):
        raise PeakdError(f"{path} is not a JSON object; the run folder is damaged: train the run "
                         "again")
    return args


class CsvLog:
    """Appends dict rows to a CSV file; the header comes from the first row's keys.

    A new log replaces the file. `keep_bytes` continues a resumed run's log instead: the file is
    cut back to its size when the resume state was saved, because the rows written after that
    are written again by the resumed run.
    """

    def __init__(self, path, keep_bytes=None):
        self.path = Path(path)
        self.fields = None
        if not keep_bytes:
            self.path.unlink(missing_ok=True)
            return
        if self.size() < keep_bytes:
            raise PeakdError(f"{self.path} is shorter than when the resume state was saved, so "
                             "the log cannot be continued; start the run without --resume")
        with open(self.path, "r+b") as f:
            f.truncate(keep_bytes)
        with open(self.path, newline="", encoding="utf-8") as f:
            self.fields = next(csv.reader(f))

    def size(self):
        return self.path.stat().st_size if self.path.exists() else 0

    def write(self, row):
        new = self.fields is None
        if new:
            self.fields = list(row)
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
