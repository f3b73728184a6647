"""Named grid settings (`--protocol NAME`). A flag given on the command line always wins over
the protocol's value: the grid's parser leaves these flags at None so `apply_protocol` can tell
a given flag from a left-out one.

`authors` follows the released Pea-KD code (Cho & Kang; its finetune.py / PTP.py argparse
defaults, as issue 10 of this project summarises them): students lr 2e-5, batch 32, 7 epochs;
the PTP stage lr 2e-5, 4 epochs; the checkpoint kept by the best end-of-epoch dev score. The
teacher row is this grid's own (BERT's fine-tuning recipe: 3 epochs, lr 2e-5, batch 32, seed
42), as before. Two settings are ours, not the authors': PTP thresholds by the `median` rule
(the paper's per-task table was tuned for 12-layer BERT-base teachers and left near-empty
classes for the MiniLM teacher, e.g. 24 of 8,551 CoLA train labels) and 5 seeds (enough for a
paired interval; the paper reports single runs).

`quick` is the grid's earlier default, for smoke runs and slow machines: students and the PTP
stage 2 epochs at lr 5e-5 (BertAdam has no bias correction, so on 2 epochs 5e-5 learns more
than 2e-5), 3 seeds. Its PTP thresholds follow the `median` rule too; the earlier grid used
the paper's table, which `--ptp_thresholds table` gives back.
"""
PROTOCOLS = {
    "authors": {"teacher_epochs": 3.0, "teacher_lr": 2e-5, "teacher_seed": 42,
                "epochs": 7.0, "lr": 2e-5, "train_batch_size": 32,
                "ptp_epochs": 4.0, "ptp_lr": 2e-5, "ptp_thresholds": "median",
                "seeds": "1,2,3,4,5"},
    "quick": {"teacher_epochs": 3.0, "teacher_lr": 2e-5, "teacher_seed": 42,
              "epochs": 2.0, "lr": 5e-5, "train_batch_size": 32,
              "ptp_epochs": 2.0, "ptp_lr": 5e-5, "ptp_thresholds": "median",
              "seeds": "1,2,3"},
}
DEFAULT_PROTOCOL = "authors"
# every protocol sets the same keys, so switching protocols never leaves a flag unset
assert len({frozenset(p) for p in PROTOCOLS.values()}) == 1


def apply_protocol(args):
    """Fills each protocol flag left at None from PROTOCOLS[args.protocol]; returns the names
    of the flags that were given explicitly (they win). Raises ValueError for an unknown
    protocol name."""
    if args.protocol not in PROTOCOLS:
        raise ValueError(f"unknown --protocol {args.protocol!r}; known: {', '.join(PROTOCOLS)}")
    given = []
    for key, value in PROTOCOLS[args.protocol].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
        else:
            given.append(key)
    return given
