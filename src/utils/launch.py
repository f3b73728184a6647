"""Starting a pipeline script as its own process, as `python script.py ...` would, but forked
from one server process that has imported torch once (multiprocessing's forkserver), so each
process skips torch's import (0.8 s on the CPU build) and dynamo's, which torch.optim's first
call imports (0.8 s more); both measured with `python -X importtime src/finetune.py` on an Intel
Xeon (bench/README.md, "The stage server"). The grid (bench/grid/run.py) and the demo
(src/demo.py) start their stages with `launch`.

The project's own modules are not preloaded: each process imports them, so it runs the checkout
as it is when it starts (and its results' `code` record stays true).
"""
import multiprocessing
import os
import runpy
import subprocess
import sys

# what the server imports once for every process forked from it
PRELOAD = ("torch", "torch._dynamo")
# whether a process forked from the server can use the GPU (None: not checked yet); see
# `_forking_works`
_FORK_OK = None


def forkserver_available():
    return "forkserver" in multiprocessing.get_all_start_methods()


def _probe_device():
    """The GPU a forked process must be able to use: "cuda" where torch sees one, else None
    (this process may touch CUDA: the server is a new interpreter, not a fork of it)."""
    import torch
    return "cuda" if torch.cuda.is_available() else None


def _device_probe(device):
    """Run in a forked process: fails (exit 1) when no tensor can be made on `device`."""
    import torch
    torch.zeros(1, device=device)


def _forking_works(context):
    """Whether processes forked from the server can use the GPU (`_probe_device`; no GPU:
    always), checked once per process.

    A process forked after CUDA was initialised cannot use CUDA; the server only imports
    PRELOAD, which does not initialise it, but were a torch build to do so the first stage
    would fail: one forked probe checks it, and otherwise each process starts in a new
    interpreter, with a warning."""
    global _FORK_OK
    if _FORK_OK is None:
        _FORK_OK = True
        device = _probe_device()
        if device is not None:
            probe = context.Process(target=_device_probe, args=(device,))
            probe.start()
            probe.join()
            _FORK_OK = probe.exitcode == 0
            if not _FORK_OK:
                print(f"warning: a process forked from the stage server could not use {device}; "
                      "each step starts in a new interpreter instead (utils/launch.py)",
                      file=sys.stderr, flush=True)
    return _FORK_OK


def _run_script(script, argv, env, log):
    """The forked process: what `python script *argv` does in a new process with `env`, its
    output appended to `log` (None: the caller's). Exits with the script's status (an uncaught
    error: 1)."""
    os.environ.clear()
    os.environ.update(env)
    threads = env.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        # the server read the thread count when it imported torch: set this process's own
        # (a value torch would not take is left to torch, as in a new interpreter)
        import torch
        torch.set_num_threads(int(threads))
    if log is not None:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    sys.argv = [script, *argv]
    sys.path.insert(0, os.path.dirname(script))  # as `python script` puts its folder first
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


class _Forked:
    """A forked process, with the part of subprocess.Popen that callers use."""

    def __init__(self, process):
        self.process = process

    @property
    def returncode(self):
        return self.process.exitcode

    def poll(self):
        return self.process.exitcode

    def terminate(self):
        self.process.terminate()

    def wait(self):
        self.process.join()
        return self.process.exitcode


def launch(script, argv, env, log=None, forkserver=True):
    """Starts `python script *argv` with environment `env`, stdout and stderr appended to
    `log` (None: the caller's); returns a Popen-like handle (poll, returncode, terminate, wait).

    forkserver: fork it from the server (started at the first call, with PRELOAD imported)
    instead of starting a new interpreter. Each process still starts from the server's state,
    not from the caller's, so its results are the same either way (tests compare them). Where
    there is no forkserver (not on POSIX), or a forked process could not use the GPU, it starts
    a new interpreter.
    """
    if forkserver and forkserver_available():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(PRELOAD))
        if _forking_works(context):
            process = context.Process(target=_run_script, args=(
                str(script), list(argv), env, None if log is None else str(log)))
            process.start()
            return _Forked(process)
    command = [sys.executable, str(script), *argv]
    if log is None:
        return subprocess.Popen(command, env=env)
    with open(log, "a") as f:
        return subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, env=env)
