"""Named grid settings (`--protocol NAME`). A flag given on the command line always wins over
the protocol's value: the grid's parser leaves these flags at None so `apply_protocol` can tell
a given flag from a left-out one. A value may be a table keyed by task name (with `default` for
the other tasks); it is looked up for the grid's task.

`authors_hparams` (named `authors` until 2026-12) takes the released Pea-KD code's
hyperparameters (Cho & Kang; its finetune.py / PTP.py argparse defaults) with this project's
standard schedules: students lr 2e-5, batch 32, 7 epochs; the PTP stage lr 2e-5, 4 epochs; a
shuffled data order, the warmup-linear schedule over the steps trained, applied once, and an
evaluation at the end of every epoch. Two settings are ours: PTP thresholds by the `median` rule
(the paper's table gave the MiniLM teacher near-empty classes) and 5 seeds.

`authors_exact` is what the released code does (read from snudm-starlab/Pea-KD, src/finetune.py
and src/PTP.py, for facts only). Students: BertAdam with warmup-linear over a t_total of 10
epochs, computed as int(examples / batch) x 10 (finetune.py's num_train_optimization_steps);
the loop also writes lr x warmup_linear(step / t_total) into the param groups before each step,
so the step uses lr x w^2 (finetune.py, both branches of `if args.fp16`); training stops at the
first step of epoch index 7 (`raise ValueError("Skipping the rest.")`), which is 7 whole epochs
for every saved checkpoint; batch 32; SequentialSampler (file order). Dev is evaluated every
`log_per_step` steps (MRPC and RTE 1, CoLA and SST-2 10) and never in epoch index 0
(`epoch > 0`); MRPC's *_acc checkpoint is kept by F1. The PTP stage: t_total of 6 epochs
(PTP.py sets num_train_epochs = 6), stopped at the first step of epoch index 4 (4 epochs);
evaluated from epoch 0 (`epoch > -1`) every `log_per_step` steps (MRPC and RTE 1, CoLA 5,
SST-2 20); the checkpoint with the lowest PTP loss is handed on (the grid's *_loss); the
schedule is applied once there (PTP.py writes the param groups only under fp16); the data in
file order as in finetune.py (assumed: PTP.py's data loader is the same code base's); the PTP
labels from the paper's threshold table (PTP.py's default). The teacher keeps BERT's recipe (3
epochs, lr 2e-5, seed 42) in every protocol. An evaluation every step is slow on a CPU: the
grid's --eval_steps / --ptp_eval_steps set another interval, and results.md says which ran.

`quick` is for smoke runs and slow machines: students and the PTP stage 2 epochs at lr 5e-5
(BertAdam has no bias correction, so on 2 epochs 5e-5 learns more than 2e-5), 3 seeds, the
`median` threshold rule.
"""
from utils.errors import PeakdError
from utils.glue import get_task

STANDARD = {"schedule_epochs": None, "ptp_schedule_epochs": None,
            "schedule_applied_twice": False, "no_shuffle": False, "eval_steps": None,
            "ptp_eval_steps": None, "eval_start_epoch": 1, "select_metric": None}
PROTOCOLS = {
    "authors_hparams": {"teacher_epochs": 3.0, "teacher_lr": 2e-5, "teacher_seed": 42,
                        "epochs": 7.0, "lr": 2e-5, "train_batch_size": 32,
                        "ptp_epochs": 4.0, "ptp_lr": 2e-5, "ptp_thresholds": "median",
                        "seeds": "1,2,3,4,5", **STANDARD},
    "authors_exact": {"teacher_epochs": 3.0, "teacher_lr": 2e-5, "teacher_seed": 42,
                      "epochs": 7.0, "lr": 2e-5, "train_batch_size": 32,
                      "ptp_epochs": 4.0, "ptp_lr": 2e-5, "ptp_thresholds": "table",
                      "seeds": "1,2,3,4,5", "schedule_epochs": 10.0, "ptp_schedule_epochs": 6.0,
                      "schedule_applied_twice": True, "no_shuffle": True,
                      "eval_steps": {"MRPC": 1, "RTE": 1, "CoLA": 10, "SST-2": 10,
                                     "default": 200},
                      "ptp_eval_steps": {"MRPC": 1, "RTE": 1, "CoLA": 5, "SST-2": 20,
                                         "default": 20},
                      "eval_start_epoch": 2, "select_metric": {"MRPC": "f1", "default": None}},
    "quick": {"teacher_epochs": 3.0, "teacher_lr": 2e-5, "teacher_seed": 42,
              "epochs": 2.0, "lr": 5e-5, "train_batch_size": 32,
              "ptp_epochs": 2.0, "ptp_lr": 5e-5, "ptp_thresholds": "median",
              "seeds": "1,2,3", **STANDARD},
}
DEFAULT_PROTOCOL = "authors_hparams"
# every protocol sets the same keys, so switching protocols never leaves a flag unset
assert len({frozenset(p) for p in PROTOCOLS.values()}) == 1


def for_task(value, task):
    """A protocol value, looked up in its per-task table when it has one."""
    if isinstance(value, dict):
        return value.get(task, value["default"])
    return value


def apply_protocol(args):
    """Fills each protocol flag left at None from PROTOCOLS[args.protocol] (per-task values for
    args.task); returns the names of the flags that were given explicitly (they win). Raises
    ValueError for an unknown protocol name."""
    if args.protocol not in PROTOCOLS:
        raise ValueError(f"unknown --protocol {args.protocol!r}; known: {', '.join(PROTOCOLS)}")
    try:
        task = get_task(args.task).name
    except PeakdError:
        task = args.task  # refused with its own message by the input checks
    given = []
    for key, value in PROTOCOLS[args.protocol].items():
        if getattr(args, key) is None:
            setattr(args, key, for_task(value, task))
        else:
            given.append(key)
    return given
