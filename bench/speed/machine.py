"""The machine the benchmark runs on: how busy other processes keep it, and the clocks.

Timings on a machine that other jobs load are not throughput figures: LoadMeter measures the
share of all CPUs others use during each measurement, check_machine refuses to start on a busy
machine, and Clock("cpu") times this process's CPU seconds (meaningful with one thread) for a
comparison of ours and theirs that load barely moves.
"""
import contextlib
import os
import sys
import time
from pathlib import Path

import torch


def _proc_stat():
    """(busy jiffies, all jiffies) summed over the CPUs, from /proc/stat; None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    v = [int(x) for x in fields[:8]]
    busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]  # user nice system irq softirq steal
    return busy, busy + v[3] + v[4]                   # + idle iowait


def _own_cpu_seconds():
    t = os.times()
    return t.user + t.system


class LoadMeter:
    """How busy *other* processes keep the machine: (all busy time - ours) / capacity."""

    def __init__(self):
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.start()

    def start(self):
        self.stat, self.own = _proc_stat(), _own_cpu_seconds()

    def foreign(self):
        """Fraction of all CPUs used by other processes since start() (None when unknown)."""
        now, own = _proc_stat(), _own_cpu_seconds()
        if now is None or self.stat is None or now[1] <= self.stat[1]:
            return None
        busy = (now[0] - self.stat[0]) / self.hz - (own - self.own)
        return min(1.0, max(0.0, busy / ((now[1] - self.stat[1]) / self.hz)))


def _top_processes(seconds=1.0, n=4):
    """The processes that used the most CPU over `seconds` (Linux), as 'pid name: cpu' lines."""
    def snap():
        out = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    raw = (d / "stat").read_text()
                    name = raw[raw.index("(") + 1:raw.rindex(")")]
                    f = raw[raw.rindex(")") + 2:].split()
                    out[d.name] = (name, int(f[11]) + int(f[12]))  # utime + stime
                except (OSError, ValueError, IndexError):
                    pass
        return out

    a = snap()
    time.sleep(seconds)
    b = snap()
    hz = os.sysconf("SC_CLK_TCK")
    used = sorted(((b[p][1] - a[p][1]) / hz / seconds, p, b[p][0]) for p in b if p in a)[::-1]
    return [f"pid {p} {name}: {100 * c:.0f}% of a core" for c, p, name in used[:n] if c > 0.02]


def check_machine(args):
    """Samples the machine for a second; refuses when it is busy (warns with --force/--quick)."""
    meter = LoadMeter()
    top = _top_processes(1.0) if Path("/proc/stat").exists() else []
    busy = meter.foreign()
    loadavg = None
    with contextlib.suppress(OSError):
        loadavg = [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    info = {"foreign_busy_fraction": busy, "loadavg": loadavg, "top_processes": top,
            "cpu_count": os.cpu_count()}
    if busy is not None and busy > args.max_load:
        lines = ["", "!" * 78,
                 f"!!  THE MACHINE IS BUSY: other processes use {100 * busy:.0f}% of its "
                 f"{os.cpu_count()} CPUs (limit {100 * args.max_load:.0f}%)",
                 *[f"!!    {t}" for t in top],
                 "!!  timings taken now are not comparable with a quiet machine's.", "!" * 78]
        print("\n".join(lines), file=sys.stderr)
        if not (args.force or args.quick):
            sys.exit("refusing to benchmark a busy machine: wait until it is quiet, or pass "
                     "--force (the results are then marked contaminated)")
    return info



def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


class Clock:
    """Wall time, or (--clock cpu, meaningful with --threads 1 only) this process's CPU time."""

    def __init__(self, kind, device):
        self.kind, self.device = kind, device

    def __call__(self):
        sync(self.device)
        return time.process_time() if self.kind == "cpu" else time.perf_counter()
