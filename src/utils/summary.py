"""The last lines of every script: what it did, the dev metric(s) of what it selected and where
it wrote, printed after the progress bar has closed.

    done: MRPC pkd SPS student; dev acc 0.8125, f1 0.8000, loss 0.4312 (BERT.*_acc.pkl,
        epoch 2); dev loss 0.4100 (BERT.*_loss.pkl, epoch 1)
    run folder: /abs/path/src/data/outputs/KD/MRPC/run-1/final_results

Only the standard library: the downloaders use it too.
"""
import sys
from pathlib import Path

# fields of an evaluation record that say where it was taken, not how well the model did
POSITION_KEYS = ("epoch", "step", "split")


def metrics_text(record, first=None):
    """'acc 0.8125, f1 0.8000, loss 0.4312': the metrics of a record, `first` leading."""
    names = [k for k in record if k not in POSITION_KEYS and isinstance(record[k], (int, float))]
    if first in names:
        names.remove(first)
        names.insert(0, first)
    return ", ".join(f"{k} {record[k]:.4f}" for k in names)


def checkpoint_text(results, criterion):
    """One selected checkpoint of a training run's eval_results.json, e.g.
    'dev acc 0.8125, loss 0.43 (BERT.*_acc.pkl, epoch 2)'; where a held-out train slice chose
    it (--select train_slice), the slice's scores and then dev's at that checkpoint:
    'train_slice acc 0.8115, ...; dev at it acc 0.7868, ... (BERT.*_acc.pkl, epoch 5)'."""
    prefix, record = results.get("prefix", "BERT"), results.get(f"best_{criterion}")
    name = f"{prefix}.*_{criterion}.pkl"
    if record is None:
        return f"no {name} saved (--saving_criterion_{criterion} was never met)"
    main = results.get("main_metric")
    split = (results.get("selection") or {}).get("split", "dev")
    dev = (results.get(f"chosen_{criterion}") or {}).get("dev") if split != "dev" else None
    if criterion == "loss":  # the loss and the main metric; the acc checkpoint lists them all
        keep = ("loss", main, "epoch", "step")
        record = {k: record[k] for k in keep if k in record}
        dev = dev and {k: dev[k] for k in keep if k in dev}
        main = "loss"
    where = f"epoch {record['epoch']}" if "epoch" in record else ""
    if "step" in record:
        where += f"{', ' if where else ''}step {record['step']}"
    scores = f"{split} {metrics_text(record, main)}"
    if dev:
        scores += f"; dev at it {metrics_text(dev, main)}"
    return f"{scores} ({name}{', ' + where if where else ''})"


def training_lines(results, run_dir):
    """The summary of a training run (finetune.py, finetune_ER.py, PTP.py)."""
    what = " ".join(str(results[k]) for k in ("task", "train_type", "model_type")
                    if results.get(k))
    checkpoints = [checkpoint_text(results, c) for c in ("acc", "loss")]
    lines = [f"done: {what}, {results.get('optimizer_steps')} steps; " + "; ".join(checkpoints)]
    compiled = results.get("compile")
    if compiled:
        lines.append(f"compile: {compiled['shapes']} batch shapes, {compiled['warmup_seconds']:.1f}"
                     f" s in their first steps (the warm-up) of {results['train_seconds']:.1f} s "
                     "training")
    if "teacher_forward_seconds" in results:
        lines.append(f"teacher alongside: {results['teacher_forward_seconds']:.1f} s of forwards, "
                     f"{results['teacher_forward_share']:.0%} of the training time")
    return lines + [f"run folder: {Path(run_dir).resolve()}"]


def print_summary(lines, file=None):
    """Prints the summary lines (stdout), flushed so they follow the bar in a log file."""
    out = file or sys.stdout
    for line in lines:
        print(line, file=out)
    out.flush()
