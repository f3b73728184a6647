"""A grid's records: the small files of its finished stages (results, settings, train logs; no
weights), kept in a folder that outlives the machine (one kept in git, say) and restored from
there into a new work folder. A study then spans machines that lose their disks between
sessions: only the runs not yet finished are run again.

Layout: RECORDS/<stage label>/ holds each .json and .csv file of the stage's folder, and
RECORDS/teacher_outputs/ the teacher file's record and the digest of its predictions.

A restored run brings its results, not its weights. So a stage is restored only where every
stage that needs it is finished or restored too: the students, and a PTP run whose students
all are. The teacher is trained again for the runs still to do, and nothing is restored or
kept until its outputs are there and have the digest the kept runs were made with: otherwise
the grid stops, before two teachers' runs meet in one folder.

`--report_only` reads a kept stage in place instead (`kept_view`): tables need no weights, so a
study's tables come from its records on a machine that has trained nothing.
"""
from dataclasses import replace
from pathlib import Path

from BERT.pytorch_pretrained_bert import atomic_write
from utils.teacher_outputs import predictions_digest

from .plan import GridError, differences

SUFFIXES = (".json", ".csv")
DIGEST = "sha256"


def small_files(stage):
    """The files of a finished stage worth keeping: its record, results and logs."""
    if stage.kind == "teacher_outputs":  # its folder is the work folder; the .pkl is the weight
        return [stage.record]
    folder = stage.record.parent
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in SUFFIXES)


def copy(source, target):
    target.parent.mkdir(parents=True, exist_ok=True)
    data = source.read_bytes()
    atomic_write(target, lambda f: f.write(data))


def keep(stage, records):
    """Copies a finished stage's small files to records/<label>/ (each write atomic). For the
    teacher outputs it records the digest of the teacher's predictions, and stops, in one line,
    when a digest recorded earlier (the file the kept runs were made with) differs."""
    folder = Path(records) / stage.label
    if stage.kind == "teacher_outputs":
        here, kept = predictions_digest(stage.done), folder / DIGEST
        there = kept.read_text(encoding="utf-8").strip() if kept.is_file() else here
        if here != there:
            raise GridError(f"--records_dir {records}: the teacher outputs made here "
                            f"({stage.done.name}, predictions sha256 {here[:12]}) differ from "
                            f"those its runs were made with ({there[:12]}); the runs would mix "
                            "two teachers: give a new --records_dir, or the teacher settings "
                            "and machine of the kept runs")
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(kept, lambda f: f.write((here + "\n").encode("utf-8")))
    for path in small_files(stage):
        copy(path, folder / path.name)


def check_kept(stage, records, work):
    """Refuses, in one line naming the flags that differ, a kept stage (`stage.record` in
    `records`) made with other settings than the plan's."""
    problem = differences(stage, work)
    if problem:
        raise GridError(f"--records_dir {records}: its {stage.label} was made with other "
                        f"settings ({problem}); give the grid's flags of those runs, or a new "
                        "--records_dir")


def restorable(stages, records, work):
    """The stages not finished in `work` whose kept files are in `records` and whose dependants
    are all finished or restorable too, in plan order (`check_kept` refuses any made
    otherwise)."""
    records = Path(records)
    dependants = {s.label: [d.label for d in stages if s.label in d.needs] for s in stages}
    finished = {s.label for s in stages if s.done.exists()}
    chosen = []
    # plan order puts a stage before the stages that need it, so walk it backwards
    for stage in reversed(stages):
        kept = records / stage.label
        if (stage.label in finished or not (kept / stage.done.name).is_file()
                or not set(dependants[stage.label]) <= finished):
            continue
        check_kept(replace(stage, record=kept / stage.record.name), records, work)
        finished.add(stage.label)
        chosen.append(stage)
    return chosen[::-1]


def sync(stages, records, work):
    """Levels `work` and `records` once this grid's teacher outputs exist (nothing is kept or
    restored before): checks their digest against the kept one (a mismatch stops the grid),
    restores the restorable runs, then keeps every finished stage. Returns the labels
    restored."""
    outputs = next(s for s in stages if s.kind == "teacher_outputs")
    if not outputs.done.exists():
        return []
    keep(outputs, records)
    chosen = restorable(stages, records, work)
    for stage in chosen:
        kept = sorted((Path(records) / stage.label).iterdir(),
                      key=lambda p: p.name == stage.done.name)
        for path in kept:  # the results file last: a stage half restored is not finished
            if path.suffix in SUFFIXES:
                copy(path, stage.record.parent / path.name)
    for stage in stages:
        if stage is not outputs and stage.done.exists():
            keep(stage, records)
    return [s.label for s in chosen]


def kept_view(stages, records, work):
    """The stages as --report_only reads them beside --records_dir: a stage not finished in
    `work` but kept in `records` points at its kept files (the teacher outputs at their kept
    digest, their .pkl being a weight), so a study's tables come from its records alone, on a
    machine that has trained nothing (`check_kept` refuses any made otherwise)."""
    records = Path(records)
    moved, view = {}, []
    for stage in stages:
        kept = records / stage.label
        done = kept / (DIGEST if stage.kind == "teacher_outputs" else stage.done.name)
        if stage.done.exists() or not done.is_file():
            view.append(stage)
            continue
        record = kept / stage.record.name
        check_kept(replace(stage, record=record), records, work)
        if stage.kind != "teacher_outputs":  # the work folder itself: nothing moves with it
            moved[stage.done.parent] = kept
        view.append(replace(stage, done=done, record=record))
    # a student reads its PTP run's label counts from wherever that run is read
    return [replace(s, ptp_dir=moved.get(s.ptp_dir, s.ptp_dir)) for s in view]
