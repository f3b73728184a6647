"""Run folders: refusing to clobber a finished run, recording the resolved arguments, CSV logs."""
import csv
import json
import sys
from pathlib import Path

from .checkpoints import write_json
from .errors import PeakdError

RESULTS_FILE = "eval_results.json"
ARGS_FILE = "args.json"


def prepare_output_dir(path, overwrite=False):
    """Creates the run folder; refuses one that holds a finished run unless `overwrite`."""
    path = Path(path)
    if (path / RESULTS_FILE).exists() and not overwrite:
        raise PeakdError(f"--output_dir {path} already holds a finished run ({RESULTS_FILE}); "
                         "pass --overwrite_output_dir or choose another folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_args(path, args):
    """Writes the resolved arguments (after presets) and the command line beside the outputs."""
    write_json(Path(path) / ARGS_FILE, {**vars(args), "argv": sys.argv})


def read_args(run_dir):
    """The args.json of an earlier run, with a clear error when it is missing."""
    path = Path(run_dir) / ARGS_FILE
    if not path.is_file():
        raise PeakdError(f"{run_dir} is not a run folder: it has no {ARGS_FILE}; pass the "
                         "--output_dir of a finished finetune.py run")
    return json.loads(path.read_text(encoding="utf-8"))


class CsvLog:
    """Appends dict rows to a CSV file; the header comes from the first row's keys."""

    def __init__(self, path):
        self.path = Path(path)
        self.fields = None
        self.path.unlink(missing_ok=True)

    def write(self, row):
        new = self.fields is None
        if new:
            self.fields = list(row)
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
