"""The one exception type for bad input; scripts turn it into a one-line error and exit 1."""


class PeakdError(Exception):
    """A user-facing error: the message names the file, flag or value and what to do."""
