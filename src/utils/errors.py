"""The exceptions for what a user caused, and warnings for values accepted but suspicious.

Scripts (utils.pipeline.run_cli) turn a PeakdError into one `error: ...` line and exit 1, and an
Interrupted run (Ctrl-C) into one line that says how to continue it, with exit 130.
"""
import sys


class PeakdError(Exception):
    """A user-facing error: the message names the file, flag or value and what to do."""


class Interrupted(Exception):
    """Ctrl-C during training, at optimizer step `step`; `resumable` says whether the run folder
    holds a resume state that `--resume` continues from."""

    def __init__(self, step, resumable):
        super().__init__(f"interrupted at optimizer step {step}")
        self.step, self.resumable = step, resumable


def warn(message):
    """One `warning: ...` line on stderr for a value that is accepted but likely a mistake."""
    print(f"warning: {message}", file=sys.stderr, flush=True)
