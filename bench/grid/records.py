"""A grid's records: the small files of its finished stages (results, settings, train logs; no
weights), kept in a folder that outlives the machine (one kept in git, say) and restored from
there into a new work folder. A study then spans machines that lose their disks between
sessions: only the runs not yet finished are run again.

Layout: RECORDS/<stage label>/ holds each .json and .csv file of the stage's folder, and
RECORDS/teacher_outputs/ the teacher file's record and the digest of its predictions.

A restored run brings its results, not its weights. So a stage is restored only where every
stage that needs it is finished or restored too: the students, and a PTP run whose students
all are. The teacher is trained again for the runs still to do, and its outputs must have the
digest the kept runs were made with, or the grid stops before mixing two teachers.
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


def check_teacher(stages, records):
    """Stops when the teacher's predictions in the work folder differ from those recorded (the
    file the kept runs were made with)."""
    outputs = next(s for s in stages if s.kind == "teacher_outputs")
    kept = Path(records) / outputs.label / DIGEST
    if not (kept.is_file() and outputs.done.exists()):
        return
    here, there = predictions_digest(outputs.done), kept.read_text(encoding="utf-8").strip()
    if here != there:
        raise GridError(f"--records_dir {records}: the teacher outputs made here "
                        f"({outputs.done.name}, predictions sha256 {here[:12]}) differ from those its runs "
                        f"were made with ({there[:12]}); the runs would mix two teachers: give "
                        "a new --records_dir, or the teacher settings and machine of the kept "
                        "runs")


def keep(stage, stages, records):
    """Copies a finished stage's small files to records/<label>/ (each write atomic); for the
    teacher outputs, checks them against the recorded digest first, then records it."""
    folder = Path(records) / stage.label
    if stage.kind == "teacher_outputs":
        check_teacher(stages, records)
        data = (predictions_digest(stage.done) + "\n").encode("utf-8")
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / DIGEST, lambda f: f.write(data))
    for path in small_files(stage):
        copy(path, folder / path.name)


def restore(stages, records, work):
    """Copies into `work` the kept files of every stage not finished there whose dependants
    are all finished or restored, checking each one's recorded settings against the plan
    first (a one-line refusal names the flags that differ). Returns the labels restored."""
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
        problem = differences(replace(stage, record=kept / stage.record.name), work)
        if problem:
            raise GridError(f"--records_dir {records}: its {stage.label} was made with other "
                            f"settings ({problem}); give the grid's flags of those runs, or a "
                            "new --records_dir")
        finished.add(stage.label)
        chosen.append(stage)
    for stage in chosen:
        folder = stage.record.parent
        files = sorted((records / stage.label).iterdir(), key=lambda p: p.name == stage.done.name)
        for path in files:  # the results file last: a stage half restored is not finished
            if path.suffix in SUFFIXES:
                copy(path, folder / path.name)
    return [s.label for s in reversed(chosen)]
