"""One writer at a time per run folder and per grid work folder.

An OS file lock (the `filelock` package: flock on POSIX, so the kernel releases it when its
process dies) is held while a run writes; the holder's pid sits beside it, so that a writer that
is refused can name it, and one that finds the pid of a process that is gone says it takes over.
"""
import contextlib
import os
from pathlib import Path

from filelock import FileLock, Timeout

from .errors import PeakdError, warn

LOCK_NAME = ".peakd.lock"
PID_NAME = ".peakd.lock.pid"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _holder(folder):
    try:
        return int((Path(folder) / PID_NAME).read_text().strip())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def folder_lock(folder, what):
    """Holds the write lock of `folder` (made if missing) while the block runs; a second
    writer fails at once with a PeakdError naming `what` (the flag, e.g. --output_dir) and the
    holder's pid."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / LOCK_NAME, thread_local=False, is_singleton=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = _holder(folder)
        who = f"process {holder}" if holder else "another process"
        raise PeakdError(f"{what} {folder} is being written by {who}; wait for it to finish, or "
                         "choose another folder") from None
    pid_file = folder / PID_NAME
    try:
        previous = _holder(folder)
        if previous and previous != os.getpid() and not _alive(previous):
            warn(f"{what} {folder}: taking over the lock of process {previous}, which is gone "
                 "(it was interrupted)")
        pid_file.write_text(f"{os.getpid()}\n")
        yield
    finally:
        with contextlib.suppress(OSError):
            pid_file.unlink()
        lock.release()
