"""Downloading one URL to a file with checks, shared by the two download scripts.

The scripts run as `python src/data/data_raw/<script>.py`, so this folder is on their import path.
"""
import math
import sys
from pathlib import Path

import requests

CHUNK = 1 << 20


class FetchError(Exception):
    """A download failed; the message says which URL and why, in one line."""


def root_cause(exc):
    """The innermost OS-level reason of a requests error, which says more than the wrapper chain."""
    seen = set()
    stack = [exc]
    while stack:
        cur = stack.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.strerror:
            return cur.strerror
        stack.extend([cur.__cause__, cur.__context__, getattr(cur, "reason", None)])
        stack.extend(arg for arg in getattr(cur, "args", ()) if isinstance(arg, BaseException))
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def fetch(url, dest, timeout):
    """Download `url` into `dest`, checking status, size against Content-Length and non-emptiness."""
    received = 0
    expected = None
    try:
        # Identity encoding keeps Content-Length comparable with the bytes we write.
        with requests.get(url, stream=True, timeout=timeout, headers={"Accept-Encoding": "identity"}) as resp:
            if resp.status_code != 200:
                raise FetchError(f"download of {url} failed: HTTP {resp.status_code}")
            length = resp.headers.get("Content-Length")
            if length is not None and length.isdigit() and not resp.headers.get("Content-Encoding"):
                expected = int(length)
            with open(dest, "wb") as out:
                for chunk in resp.iter_content(CHUNK):
                    out.write(chunk)
                    received += len(chunk)
    except requests.exceptions.ChunkedEncodingError:
        total = f" of {expected}" if expected is not None else ""
        raise FetchError(f"download of {url} failed: truncated (connection closed after {received}{total} bytes)")
    except requests.exceptions.Timeout:
        raise FetchError(f"download of {url} failed: timed out after {timeout:g} s")
    except requests.exceptions.RequestException as exc:
        raise FetchError(f"download of {url} failed: {root_cause(exc)}")
    if expected is not None and received != expected:
        raise FetchError(f"download of {url} failed: truncated ({received} of {expected} bytes)")
    if received == 0:
        raise FetchError(f"download of {url} failed: the server sent an empty file")


def checked_args(timeout, folder, flag, default):
    """(timeout, folder) of a downloader's command line, or one `error:` line and exit 2:
    the timeout a number of seconds > 0; the folder given (not empty: '' is never the current
    folder) or `default()`."""
    if not (math.isfinite(timeout) and timeout > 0):
        print(f"error: --timeout {timeout} must be a number of seconds > 0", file=sys.stderr)
        sys.exit(2)
    if folder is None:
        return timeout, default()
    if not str(folder).strip():
        print(f"error: {flag} is empty; pass a folder or leave the flag out", file=sys.stderr)
        sys.exit(2)
    return timeout, Path(folder)
