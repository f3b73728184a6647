"""Checks of the paths a user passes: the right kind (file or folder) and writable, each failure
a PeakdError that says what the path is and what was expected."""
import os
from pathlib import Path

from .errors import PeakdError


def check_dir(path, flag, hint):
    """`path` must be an existing folder; returns it as a Path."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PeakdError(f"{flag} {path} is a file, expected a folder; {hint}")
    if not path.is_dir():
        raise PeakdError(f"{flag} {path} does not exist; {hint}")
    return path


def check_file(path, flag, hint):
    """`path` must be an existing file; returns it as a Path."""
    path = Path(path)
    if path.is_dir():
        raise PeakdError(f"{flag} {path} is a folder, expected a file; {hint}")
    if not path.is_file():
        raise PeakdError(f"{flag} {path} does not exist; {hint}")
    return path


def check_writable_dir(path, flag):
    """`path` must be a folder this process can create or write into, checked before any work.

    The nearest existing ancestor decides: a file there means the folder cannot be made, a
    folder without write permission that nothing can be written into it.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PeakdError(f"{flag} {path} is a file, expected a folder; choose another path")
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise PeakdError(f"{flag} {path} cannot be created: {ancestor} is a file; choose "
                         "another path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PeakdError(f"{flag} {path} cannot be written: no write permission in {ancestor}; "
                         "choose another path or fix its permissions")
    return path


def check_not_an_input(out, flag, inputs):
    """Refuses, before anything is written, an output folder that is one of the run's input
    folders: a run writes config.json, vocab.txt, logs and checkpoints, which would replace or
    mix with a pretrained model's files, a data folder's or another run's.

    inputs: {description: folder} (None values skipped); compared after resolving links.
    """
    target = Path(out).expanduser().resolve()
    for what, folder in inputs.items():
        if folder is not None and Path(folder).expanduser().resolve() == target:
            raise PeakdError(f"{flag} {out} is the folder of {what}; a run there would write "
                             "over or among its files: choose another folder")
