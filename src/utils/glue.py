"""GLUE data: reading the 2019 GLUE TSVs, one processor per task, and the task table."""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from utils.errors import PeakdError, warn

BINARY = ("0", "1")
ENTAILMENT = ("entailment", "not_entailment")
NLI3 = ("contradiction", "entailment", "neutral")


@dataclass(frozen=True)
class InputExample:
    """One text (pair) and its gold label; label is None on test splits."""

    guid: str
    text_a: str
    text_b: str | None
    label: str | float | None


def read_tsv(path: str | Path) -> list[tuple[int, list[str]]]:
    """The rows of a TSV file, each with its 1-based line number; blank lines are left out."""
    path = Path(path)
    rows = []
    try:
        # GLUE texts hold unbalanced quotes (MRPC, SST-2): quote characters are plain text here,
        # which also keeps one row per physical line, so csv's line_num is the file's line number.
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            try:
                for row in reader:
                    if row:
                        rows.append((reader.line_num, row))
            except csv.Error as e:
                raise row_error(path, reader.line_num, str(e)) from None
    except FileNotFoundError:
        raise PeakdError(
            f"GLUE file not found: {path}; run `bash preprocess.sh` or pass --data_dir"
        ) from None
    except IsADirectoryError:
        raise PeakdError(f"{path} is a folder, expected a GLUE TSV file; pass the --data_dir "
                         "that holds the task's files") from None
    except NotADirectoryError:
        raise PeakdError(f"{path.parent} is a file, expected the task's folder; pass the "
                         "--data_dir that holds the task's folder") from None
    except UnicodeDecodeError as e:
        raise PeakdError(f"{path} is not UTF-8 text ({e.reason}); re-download it with "
                         "`bash preprocess.sh`") from None
    return rows


def row_error(path: Path, line_no: int, problem: str) -> PeakdError:
    """A PeakdError pointing at one line of a data file."""
    return PeakdError(f"{path}:{line_no}: {problem}; fix the line or re-download the data "
                      "with `bash preprocess.sh`")


@dataclass(frozen=True)
class Columns:
    """Where a split's fields sit in a TSV row; -1 is the last column, None is absent."""

    text_a: int
    text_b: int | None = None
    label: int | None = None
    header: bool = True

    @property
    def min_width(self) -> int:
        """The fewest columns a row may have."""
        used = [i for i in (self.text_a, self.text_b, self.label) if i is not None and i >= 0]
        # a label in the last column must come after every text column
        return max(used) + 1 + (1 if self.label == -1 else 0)


class GlueProcessor:
    """Reads one task's TSVs; a task's subclass only sets the class attributes below."""

    labels: ClassVar[tuple[str, ...] | None] = BINARY  # None: regression, the label is a float
    train: ClassVar[Columns]  # layout of the labelled splits (train and dev)
    test: ClassVar[Columns]  # layout of the test splits, whose labels are never read
    splits: ClassVar[dict[str, str]] = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
    skip_labels: ClassVar[frozenset[str]] = frozenset()  # gold labels whose rows are dropped
    score_range: ClassVar[tuple[float, float]] = (-math.inf, math.inf)  # regression scores

    def get_examples(self, data_dir: str | Path, split: str) -> list[InputExample]:
        """The examples of `split` from the task's folder `data_dir`, in file order."""
        if split not in self.splits:
            raise PeakdError(f"unknown split {split!r} for {type(self).__name__}; "
                             f"use one of {', '.join(self.splits)}")
        path = Path(data_dir) / self.splits[split]
        columns = self.test if split.startswith("test") else self.train
        rows = read_tsv(path)
        if columns.header and rows and self.looks_like_data(rows[0][1], columns):
            # a header line's label column holds a name ("Quality", "label"), never a label
            warn(f"{path}: the first line looks like an example, not the header this task's "
                 "files have; it is read as an example")
        elif columns.header:
            rows = rows[1:]
        examples = []
        for line_no, row in rows:
            if len(row) < columns.min_width:
                raise row_error(path, line_no, f"{len(row)} tab-separated columns, "
                                               f"expected at least {columns.min_width}")
            raw = None if columns.label is None else row[columns.label]
            if raw in self.skip_labels:
                continue
            examples.append(InputExample(
                guid=f"{split}-{len(examples)}",
                text_a=row[columns.text_a],
                text_b=None if columns.text_b is None else row[columns.text_b],
                label=None if raw is None else self.parse_label(raw, path, line_no),
            ))
        empty = sum(not ex.text_a.strip() or (ex.text_b is not None and not ex.text_b.strip())
                    for ex in examples)
        if empty:
            warn(f"{path}: {empty} of {len(examples)} examples have an empty text; they are "
                 "kept (their input is the special tokens alone)")
        return examples

    def looks_like_data(self, row: list[str], columns: Columns) -> bool:
        """Whether a first line that should be a header is an example (its label is valid)."""
        if columns.label is None or len(row) < columns.min_width:
            return False
        raw = row[columns.label]
        if self.labels is not None:
            return raw in self.labels
        try:
            return math.isfinite(float(raw))
        except ValueError:
            return False

    def parse_label(self, raw: str, path: Path, line_no: int) -> str | float:
        """The label string checked against `labels`, or the float score for regression."""
        if self.labels is None:
            try:
                score = float(raw)
            except ValueError:
                score = math.nan
            if not math.isfinite(score):
                raise row_error(path, line_no, f"score {raw!r} is not a finite number")
            low, high = self.score_range
            if not low <= score <= high:
                raise row_error(path, line_no, f"score {raw!r} is outside the task's range "
                                               f"{low:g}..{high:g}")
            return score
        if raw not in self.labels:
            raise row_error(path, line_no, f"label {raw!r} is not one of {', '.join(self.labels)}")
        return raw


class ColaProcessor(GlueProcessor):
    """CoLA: train/dev `source, label, original label, sentence` without header."""

    train = Columns(text_a=3, label=1, header=False)
    test = Columns(text_a=1)


class Sst2Processor(GlueProcessor):
    """SST-2: `sentence, label`; test `index, sentence`."""

    train = Columns(text_a=0, label=1)
    test = Columns(text_a=1)


class MrpcProcessor(GlueProcessor):
    """MRPC: `Quality, #1 ID, #2 ID, #1 String, #2 String`; test has an index for Quality."""

    train = Columns(text_a=3, text_b=4, label=0)
    test = Columns(text_a=3, text_b=4)


class QqpProcessor(GlueProcessor):
    """QQP: `id, qid1, qid2, question1, question2, is_duplicate`; test `id, question1, question2`."""

    train = Columns(text_a=3, text_b=4, label=5)
    test = Columns(text_a=1, text_b=2)


class StsbProcessor(GlueProcessor):
    """STS-B: sentences in columns 7/8 and a 0-5 similarity score last; test has no score."""

    labels = None
    train = Columns(text_a=7, text_b=8, label=-1)
    test = Columns(text_a=7, text_b=8)
    score_range = (0.0, 5.0)


class MnliProcessor(GlueProcessor):
    """MNLI: sentences in columns 8/9, gold label last; matched and mismatched dev and test."""

    labels = NLI3
    train = Columns(text_a=8, text_b=9, label=-1)
    test = Columns(text_a=8, text_b=9)
    splits = {"train": "train.tsv",
              "dev": "dev_matched.tsv", "dev_mismatched": "dev_mismatched.tsv",
              "test": "test_matched.tsv", "test_mismatched": "test_mismatched.tsv"}


class SnliProcessor(GlueProcessor):
    """SNLI: sentences in columns 7/8, gold label last; rows without annotator consensus are dropped."""

    labels = NLI3
    train = Columns(text_a=7, text_b=8, label=-1)
    test = Columns(text_a=7, text_b=8)
    # SNLI marks pairs whose annotators did not agree with gold label "-": they have no label
    skip_labels = frozenset({"-"})


class PairProcessor(GlueProcessor):
    """RTE, QNLI, WNLI: `index, text a, text b, label`; test `index, text a, text b`."""

    train = Columns(text_a=1, text_b=2, label=-1)
    test = Columns(text_a=1, text_b=2)


class RteProcessor(PairProcessor):
    """RTE: entailment / not_entailment."""

    labels = ENTAILMENT


class QnliProcessor(PairProcessor):
    """QNLI: entailment / not_entailment."""

    labels = ENTAILMENT


class WnliProcessor(PairProcessor):
    """WNLI: 0 / 1."""


@dataclass(frozen=True)
class TaskSpec:
    """Every per-task constant: data, labels, metrics and PTP thresholds."""

    name: str  # canonical spelling, e.g. "SST-2"
    dir_name: str  # folder under glue_data/
    processor: GlueProcessor
    output_mode: str  # "classification" or "regression"
    labels: tuple[str, ...] | None  # label strings in class-id order; None for regression
    main_metric: str  # the metric that picks the best checkpoint
    metric_names: tuple[str, ...]  # what compute_metrics reports, parts before their mean
    dev_splits: tuple[str, ...]  # splits evaluated during training
    ptp_thresholds: tuple[float, float] | None  # PTP (t1, t2); None: the median rule

    @property
    def num_labels(self) -> int:
        """Width of the task head: 1 for regression."""
        return 1 if self.labels is None else len(self.labels)

    def get_examples(self, glue_dir: str | Path, split: str) -> list[InputExample]:
        """The examples of `split` from `glue_dir/<dir_name>/`."""
        return self.processor.get_examples(Path(glue_dir) / self.dir_name, split)


def _task(name: str, processor: type[GlueProcessor], *, main_metric: str = "acc",
          metric_names: tuple[str, ...] = ("acc",), dev_splits: tuple[str, ...] = ("dev",),
          ptp_thresholds: tuple[float, float] | None = None) -> TaskSpec:
    # labels and output mode come from the processor so they are written down once
    return TaskSpec(name=name, dir_name=name, processor=processor(),
                    output_mode="classification" if processor.labels is not None else "regression",
                    labels=processor.labels, main_metric=main_metric, metric_names=metric_names,
                    dev_splits=dev_splits, ptp_thresholds=ptp_thresholds)


_ACC_F1 = ("acc", "f1", "acc_and_f1")

TASKS: dict[str, TaskSpec] = {spec.name.lower(): spec for spec in (
    _task("CoLA", ColaProcessor, main_metric="mcc", metric_names=("mcc",),
          ptp_thresholds=(0.95, 0.70)),
    _task("SST-2", Sst2Processor, ptp_thresholds=(0.98, 0.80)),
    _task("MRPC", MrpcProcessor, metric_names=_ACC_F1, ptp_thresholds=(0.95, 0.75)),
    _task("QQP", QqpProcessor, metric_names=_ACC_F1),
    _task("STS-B", StsbProcessor, main_metric="corr", metric_names=("pearson", "spearman", "corr")),
    _task("MNLI", MnliProcessor, dev_splits=("dev", "dev_mismatched")),
    _task("QNLI", QnliProcessor, ptp_thresholds=(0.98, 0.70)),
    _task("RTE", RteProcessor, ptp_thresholds=(0.80, 0.60)),
    _task("WNLI", WnliProcessor),
    _task("SNLI", SnliProcessor),
)}


def get_task(name: str) -> TaskSpec:
    """The task named `name`, in any letter case (`mrpc`, `SST-2`, `sts-b`)."""
    spec = TASKS.get(str(name).strip().lower())
    if spec is None:
        known = ", ".join(task.name for task in TASKS.values())
        raise PeakdError(f"unknown task {name!r} (--task); known tasks: {known}")
    return spec
