"""Runs the planned stages as processes, up to `jobs` at once, each after the stages it
needs (teacher -> teacher_outputs -> PTP runs -> their students; the other students need only
the teacher outputs).

Threads: on a CPU the N processes get cores // N threads each (OMP_NUM_THREADS, which torch
reads at start), so together they fill the machine without oversubscribing it. Two grids on
one machine each take a share (--cores): two 1-job grids on 2 cores, each left at 2 threads,
ran their stages 3-6x slower than at 1 thread each (2026-12-04, bench/README.md). GPUs: several
processes share one GPU; with several GPUs each process slot gets its own
(CUDA_VISIBLE_DEVICES), so N slots spread over the GPUs.

Start-up: each stage is a process of its own, by default forked from one server process that
has imported torch once (utils/launch.py).
"""
import os
import time

from utils.launch import launch
from utils.runs import RESULTS_FILE, RESUME_FILE

from .plan import SRC, GridError, write_record


def cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def gpu_ids():
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries ([] without CUDA)."""
    import torch
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [v.strip() for v in visible.split(",") if v.strip()][:count]
    return [str(i) for i in range(count)]


def slot_env(slot, jobs, base=None, n_cores=None, gpus=None, share=None):
    """The environment of the process in `slot` (0..jobs-1). `share` (--cores): the cores this
    grid's stages share, default all `n_cores` (this process's). Each of `jobs` slots gets
    share // jobs threads; one job with no `share` keeps the caller's environment. One GPU per
    slot when there are several GPUs."""
    env = dict(os.environ if base is None else base)
    if jobs == 1 and share is None:
        return env
    threads = max(1, (share or n_cores or cores()) // jobs)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    gpus = gpu_ids() if gpus is None else gpus
    if len(gpus) > 1:
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    return env


def resume_flag(stage):
    """["--resume"] when an interrupted run of this stage left its resume state (written at
    every end-of-epoch evaluation) where its results go: a 7-epoch stage killed in epoch 6
    goes on from epoch 5 instead of from scratch. The script refuses the resume, and the
    stage fails naming the flags, when the run was started with other settings."""
    if not stage.done.name.endswith(RESULTS_FILE):
        return []
    state = stage.done.with_name(stage.done.name[:-len(RESULTS_FILE)] + RESUME_FILE)
    return ["--resume"] if state.is_file() else []


def start(stage, env, logs, forkserver=True):
    log = logs / f"{stage.label}.log"
    # the record is replaced only when the stage finishes: an interrupted stage keeps none
    stage.record.unlink(missing_ok=True)
    resume = resume_flag(stage)
    if not resume:
        log.write_text("")  # a fresh run's log starts empty; a resumed one continues it
    return launch(SRC / stage.script, [*stage.argv, *resume], env, log, forkserver), log


def stage_cost(stage):
    """A stage's work in layer-epochs: epochs x effective layers (an SPS student runs its layers
    twice); 1 for a stage that does not train (the teacher outputs)."""
    flags = dict(zip(stage.argv, stage.argv[1:]))
    if "--num_train_epochs" not in flags:
        return 1.0
    layers = float(flags.get("--student_hidden_layers", 1))
    if flags.get("--model_type", "Original").startswith("SPS"):
        layers *= 2
    return float(flags["--num_train_epochs"]) * layers


def chain_priority(stages):
    """{label: the cost of the stage and of its costliest chain of dependants}: the runner
    starts the ready stage with the most work behind it first (longest chain first), across
    seeds, so the grid's last stage to finish is not a long chain started late."""
    priority = {}
    for stage in reversed(stages):  # plan order puts a stage before the stages that need it
        after = [priority[s.label] for s in stages if stage.label in s.needs]
        priority[stage.label] = stage_cost(stage) + max(after, default=0.0)
    return priority


# --order's choices, the default first
ORDERS = ("chain", "seed")


def start_priority(stages, order=ORDERS[0]):
    """{label: sort key, the largest starts first} among ready stages.

    chain: chain_priority, across seeds (the shortest grid). seed: the seeds in plan order, the
    longest chain first within a seed, so an interrupted grid leaves whole seeds behind; a
    stage of a later seed starts only when no earlier seed's stage is ready. Stages without a
    seed (the teacher) come first either way."""
    if order not in ORDERS:
        raise GridError(f"--order {order!r} must be one of {', '.join(ORDERS)}")
    chain = chain_priority(stages)
    if order == "chain":
        return chain
    rank = {}
    for stage in stages:
        if stage.seed is not None:
            rank.setdefault(stage.seed, len(rank))
    return {s.label: (-rank.get(s.seed, -1), chain[s.label]) for s in stages}


def run_stages(stages, work, logs, jobs=1, env_extra=None, on_done=None, forkserver=True,
               share=None, order=ORDERS[0]):
    """Runs every stage whose results file is missing, the ready one first by `order`
    (start_priority; plan order between equals), as far as `needs` and `jobs` allow; prints
    [run i/n] / [done i/n] / [skip i/n]. A failed stage stops new starts; the running ones
    finish, then GridError names the failed stage's log. on_done(stage) is called in the
    parent for each stage finished here; forkserver: see utils.launch.launch; share: the cores
    the stages share (slot_env)."""
    env_extra = env_extra or {}
    total = len(stages)
    position = {s.label: i for i, s in enumerate(stages, 1)}
    finished = set()
    pending = []

    def skip(stage):
        print(f"[skip {position[stage.label]}/{total}] {stage.label}: {stage.done} exists",
              flush=True)
        finished.add(stage.label)

    for stage in stages:
        if stage.done.exists():
            skip(stage)
        else:
            pending.append(stage)
    priority = start_priority(stages, order)
    running, free, failures = {}, list(range(jobs)), []
    gpus = gpu_ids() if jobs > 1 else []
    envs = [{**slot_env(slot, jobs, gpus=gpus, share=share), **env_extra}
            for slot in range(jobs)]
    try:
        while pending or running:
            while free and not failures:
                ready = max((s for s in pending if set(s.needs) <= finished),
                            key=lambda s: priority[s.label], default=None)
                if ready is None:
                    break
                pending.remove(ready)
                if ready.done.exists():  # finished meanwhile: restored from --records_dir
                    skip(ready)
                    continue
                slot = free.pop(0)
                resuming = " (resuming its last saved epoch)" if resume_flag(ready) else ""
                proc, log = start(ready, envs[slot], logs, forkserver)
                running[proc] = (ready, slot, time.perf_counter(), log, bool(resuming))
                print(f"[run  {position[ready.label]}/{total}] {ready.label}{resuming} ... "
                      f"(progress: tail -f {log})", flush=True)
            if not running:
                if failures or not pending:  # not pending: the last ones were restored
                    break
                raise GridError("stages wait on stages that are not planned: "
                                f"{[s.label for s in pending]}")
            time.sleep(0.2)
            for proc in [p for p in running if p.poll() is not None]:
                stage, slot, began, log, resumed = running.pop(proc)
                free.append(slot)
                tag = f"{position[stage.label]}/{total}"
                if proc.returncode or not stage.done.exists():
                    tail = log.read_text(errors="replace").strip().splitlines()[-1:]
                    failures.append(f"{stage.label} failed (exit {proc.returncode}); see {log}: "
                                    f"{' '.join(tail)}")
                    print(f"[fail {tag}] {stage.label}", flush=True)
                    continue
                wall = time.perf_counter() - began
                # a resumed stage's earlier attempts ran in processes this grid did not time,
                # so its wall time is unknown (its train_seconds does cover every attempt)
                write_record(stage, work, None if resumed else round(wall, 2))
                finished.add(stage.label)
                print(f"[done {tag}] {stage.label} in {wall:.0f} s"
                      + (" (this attempt; resumed)" if resumed else ""), flush=True)
                if on_done:
                    on_done(stage)
    except BaseException:
        # Ctrl-C or a crash here: stop the stages this grid started (next time they resume
        # from their last end-of-epoch state; a finished stage is never touched)
        for proc in running:
            proc.terminate()
        for proc in running:
            proc.wait()
        raise
    if failures:
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise GridError(failures[0] + more)
