"""Checkpoint selection apart from the reported dev set: `--select train_slice`.

A stratified share of train (`--select_fraction`, default 10%) is drawn with a fixed seed
(`--select_seed`) and held out of training. It is the same slice for every run that uses the same
train file, fraction and seed: the teacher, every student variant and the PTP stage (whose slice
labels come from the teacher's predictions on those held-out examples). Evaluations score the
slice first, which chooses the checkpoints, and every dev split beside it, so a run records both
dev at the checkpoint the slice chose and the best dev score any evaluation reached.
"""
import torch

from .errors import PeakdError
from .features import Features

SLICE = "train_slice"  # the split name of the held-out slice in evaluations and logs
# regression scores are stratified by this many quantile bins
SCORE_BINS = 10


def slice_indices(labels, fraction, seed, regression):
    """(rest, slice): sorted int64 index tensors into the train split.

    Stratified: within each class (regression: each of SCORE_BINS score quantiles) a seeded
    permutation picks round(fraction x its size) examples, at least one where it has two.
    """
    n = len(labels)
    if regression:
        order = torch.argsort(labels, stable=True)
        strata = torch.empty(n, dtype=torch.long)
        strata[order] = torch.arange(n) * SCORE_BINS // max(n, 1)
    else:
        strata = labels.long()
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for stratum in torch.unique(strata).tolist():
        members = (strata == stratum).nonzero().squeeze(1)
        take = round(fraction * len(members))
        if take == 0 and len(members) >= 2:
            take = 1
        chosen.append(members[torch.randperm(len(members), generator=generator)[:take]])
    held = torch.zeros(n, dtype=torch.bool)
    held[torch.cat(chosen)] = True
    return (~held).nonzero().squeeze(1), held.nonzero().squeeze(1)


def subset(features, index):
    """The rows `index` of a split's Features, in that order."""
    return Features(features.input_ids[index], features.token_type_ids[index],
                    features.lengths[index],
                    None if features.labels is None else features.labels[index])


def hold_out(data, task, args, teacher=None):
    """With --select train_slice: `data` ({split: (examples, Features)}) with train cut to the
    rest and SLICE added; `teacher` ({split: teacher-file entry} or None) cut the same way,
    so row i of every train tensor still belongs to example i. Otherwise both unchanged.
    Returns (data, teacher)."""
    if args.select != "train_slice":
        return data, teacher
    if not 0.0 < args.select_fraction < 0.5:
        raise PeakdError(f"--select_fraction {args.select_fraction} must be in (0, 0.5)")
    examples, features = data["train"]
    rest, held = slice_indices(features.labels, args.select_fraction, args.select_seed,
                               task.output_mode == "regression")
    if len(held) == 0 or len(rest) == 0:
        raise PeakdError(f"--select_fraction {args.select_fraction} of {len(examples)} train "
                         "examples leaves an empty slice or training set; pass another fraction "
                         "or --select dev")
    data = dict(data)
    data["train"] = ([examples[i] for i in rest.tolist()], subset(features, rest))
    data[SLICE] = ([examples[i] for i in held.tolist()], subset(features, held))
    if teacher is not None and "train" in teacher:
        teacher = dict(teacher)
        entry = teacher["train"]
        teacher["train"], teacher[SLICE] = ({k: v[idx] if isinstance(v, torch.Tensor) else v
                                             for k, v in entry.items()} for idx in (rest, held))
    return data, teacher


def eval_splits(args, task):
    """The splits each evaluation scores, the one that chooses checkpoints first."""
    return ((SLICE,) if args.select == "train_slice" else ()) + tuple(task.dev_splits)


def check_select_metric(args, task):
    """The metric that chooses *_acc checkpoints: --select_metric, checked against the task's."""
    metric = args.select_metric or task.main_metric
    if metric not in task.metric_names:
        raise PeakdError(f"--select_metric {metric} is not a {task.name} metric; use one of "
                         f"{', '.join(task.metric_names)}")
    return metric
