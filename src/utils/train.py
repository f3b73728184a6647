"""The training loop and evaluation shared by finetune.py, PTP.py and finetune_ER.py (SPEC 6).

BertAdam owns the learning-rate schedule (applied once). Training batches are shuffled by a seeded
generator and padded to their own longest sequence; evaluation runs in length-grouped batches and
returns predictions in file order. Dev is evaluated after every epoch (and every `--eval_steps`);
`<prefix>.{encoder,cls}_acc.pkl` are saved when the dev metric beats the best so far and
`--saving_criterion_acc`, `*_loss.pkl` when the dev loss beats the best so far and
`--saving_criterion_loss`. The running loss is checked for NaN/inf at each logging step and before
every save, so a diverged run stops with an error and never overwrites a checkpoint.
"""
import contextlib
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from BERT.pytorch_pretrained_bert import BertAdam, count_parameters

from .checkpoints import save_model_checkpoint, write_json
from .errors import PeakdError
from .features import eval_batches, train_batches
from .metrics import metrics_for
from .modeling import effective_layers
from .runs import RESULTS_FILE, CsvLog


def set_seed(seed):
    """Seeds torch's global generator (weight init of new heads, dropout)."""
    torch.manual_seed(seed)


def pick_device(args):
    return torch.device("cuda" if torch.cuda.is_available() and not args.no_cuda else "cpu")


def autocast(args, device):
    """torch.amp autocast for --fp16 (CUDA) / --bf16; a no-op context in fp32."""
    if args.fp16:
        if device.type != "cuda":
            raise PeakdError("--fp16 needs a CUDA GPU; drop it (or use --bf16) on the CPU")
        return torch.autocast("cuda", dtype=torch.float16)
    if args.bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(batch, device):
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def task_loss(logits, labels, regression):
    """CE on class ids (B, C) x (B,), or MSE of (B, 1) scores to (B,) gold scores."""
    if regression:
        return F.mse_loss(logits.view(-1).float(), labels.float())
    return F.cross_entropy(logits.float(), labels)


@torch.no_grad()
def collect_outputs(model, features, batch_size, device, amp, pad_to_max=False,
                    layer_cls=False):
    """{"logits": (N, C), "pooled": (N, H)[, "layer_cls": (N, L, H)]} in file order.

    Runs length-grouped batches; `layer_cls` adds every effective layer's [CLS] vector.
    """
    model.eval()
    out = {}
    for index in eval_batches(features.lengths, batch_size):
        batch = to_device(features.batch(index, pad_to_max), device)
        with amp:
            res = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
                        output_all_encoded_layers=layer_cls)
        parts = {"logits": res.logits, "pooled": res.pooled_output}
        if layer_cls:
            parts["layer_cls"] = torch.stack([h[:, 0] for h in res.encoded_layers], dim=1)
        for name, value in parts.items():
            if name not in out:
                out[name] = torch.empty(len(features), *value.shape[1:], device=device)
            out[name][batch["index"]] = value.float()
    return {name: value.cpu() for name, value in out.items()}


def predict(model, features, batch_size, device, amp, pad_to_max=False):
    """Logits (N, C) in file order."""
    return collect_outputs(model, features, batch_size, device, amp, pad_to_max)["logits"]


def evaluate(model, features, task, batch_size, device, amp, pad_to_max=False):
    """(metrics dict incl. `loss`, logits (N, C)) on a labelled split."""
    logits = predict(model, features, batch_size, device, amp, pad_to_max)
    regression = task.output_mode == "regression"
    preds = logits.view(-1) if regression else logits.argmax(-1)
    metrics = metrics_for(task.metric_names, preds.numpy(), features.labels.numpy())
    metrics["loss"] = task_loss(logits, features.labels, regression).item()
    return metrics, logits


def make_optimizer(model, args, t_total):
    """BertAdam; no weight decay on biases and LayerNorm weights."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    return BertAdam([{"params": decay, "weight_decay": args.weight_decay},
                     {"params": no_decay, "weight_decay": 0.0}],
                    lr=args.learning_rate, warmup=args.warmup_proportion, t_total=t_total)


def plan_steps(num_examples, args):
    """(micro-batch size, optimizer steps per epoch, total optimizer steps)."""
    if args.train_batch_size % args.gradient_accumulation_steps:
        raise PeakdError(f"--train_batch_size {args.train_batch_size} must be a multiple of "
                         f"--gradient_accumulation_steps {args.gradient_accumulation_steps}")
    micro = args.train_batch_size // args.gradient_accumulation_steps
    per_epoch = math.ceil(math.ceil(num_examples / micro) / args.gradient_accumulation_steps)
    total = math.ceil(per_epoch * args.num_train_epochs)
    if args.max_steps is not None:
        total = min(total, args.max_steps)
    return micro, per_epoch, max(total, 1)


class _Selector:
    """Tracks the best dev metric and loss and saves checkpoints when they improve."""

    def __init__(self, model, run_dir, prefix, args, task):
        self.model, self.run_dir, self.prefix, self.task = model, run_dir, prefix, task
        self.criterion_acc = args.saving_criterion_acc
        self.criterion_loss = args.saving_criterion_loss
        self.best = {"acc": None, "loss": None}

    def update(self, record):
        value, loss = record[self.task.main_metric], record["loss"]
        best_acc, best_loss = self.best["acc"], self.best["loss"]
        if (best_acc is None or value > best_acc[self.task.main_metric]) and \
                value > self.criterion_acc:
            save_model_checkpoint(self.model, self.run_dir, self.prefix, "acc")
            self.best["acc"] = record
        if (best_loss is None or loss < best_loss["loss"]) and loss < self.criterion_loss:
            save_model_checkpoint(self.model, self.run_dir, self.prefix, "loss")
            self.best["loss"] = record


def check_finite(loss_sum, step):
    value = float(loss_sum)
    if not math.isfinite(value):
        raise PeakdError(f"training loss became {value} at or before optimizer step {step}; "
                         "nothing from these steps was saved. Lower --learning_rate or check "
                         "the data")
    return value


def train(model, train_features, dev_features, task, args, objective, run_dir, prefix,
          needs_layers=False):
    """Trains `model` with `objective(outputs, batch) -> loss`; returns the results dict.

    dev_features: {split name: Features}; the first split drives checkpoint selection.
    Writes train_log.csv, eval_log.csv, eval_results.json and the checkpoints into run_dir.
    """
    device = pick_device(args)
    amp = autocast(args, device)
    model.to(device)
    forward = torch.compile(model) if args.compile else model
    micro, per_epoch, t_total = plan_steps(len(train_features), args)
    optimizer = make_optimizer(model, args, t_total)
    scaler = torch.amp.GradScaler("cuda", enabled=args.fp16)
    generator = torch.Generator().manual_seed(args.train_seed)
    run_dir = Path(run_dir)
    train_log, eval_log = CsvLog(run_dir / "train_log.csv"), CsvLog(run_dir / "eval_log.csv")
    selector = _Selector(model, run_dir, prefix, args, task)
    accum = args.gradient_accumulation_steps
    step, seen, running, window = 0, 0, torch.zeros((), device=device), 0
    start = time.perf_counter()

    def run_eval(epoch):
        check_finite(running, step)
        records = {}
        for split, feats in dev_features.items():
            metrics, _ = evaluate(model, feats, task, args.eval_batch_size, device, amp,
                                  args.pad_to_max_length)
            records[split] = {"epoch": epoch, "step": step, **metrics}
            eval_log.write({"split": split, **records[split]})
        first = records[next(iter(dev_features))]
        selector.update(first)
        model.train()
        return first

    progress = tqdm(total=t_total, desc=f"{prefix} {task.name}", unit="step", dynamic_ncols=True)
    model.train()
    last = None
    epochs = math.ceil(args.num_train_epochs)
    for epoch in range(1, epochs + 1):
        batches = train_batches(len(train_features), micro, generator)
        for i, index in enumerate(batches):
            batch = to_device(train_features.batch(index, args.pad_to_max_length), device)
            with amp:
                out = forward(batch["input_ids"], batch["token_type_ids"],
                              batch["attention_mask"], output_all_encoded_layers=needs_layers)
                loss = objective(out, batch)
            # divide before backward so accumulated gradients average over the micro-batches
            scaler.scale(loss / accum).backward()
            running += loss.detach()
            window += 1
            seen += len(index)
            if (i + 1) % accum and i + 1 != len(batches):
                continue
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            progress.update(1)
            if step % args.logging_steps == 0:
                mean = check_finite(running, step) / window
                progress.set_postfix(loss=f"{mean:.4f}", epoch=epoch)
                train_log.write({"step": step, "epoch": epoch, "loss": mean,
                                 "lr": optimizer.get_lr()[0]})
                running.zero_()
                window = 0
            if args.eval_steps and step % args.eval_steps == 0:
                last = run_eval(epoch)
            if step >= t_total:
                break
        last = run_eval(epoch)
        if step >= t_total:
            break
    progress.close()
    seconds = time.perf_counter() - start
    results = {"task": task.name, "train_type": getattr(args, "train_type", None),
               "model_type": args.model_type, "prefix": prefix,
               "student_hidden_layers": args.student_hidden_layers,
               "effective_layers": effective_layers(model),
               "num_parameters": count_parameters(model), "main_metric": task.main_metric,
               "best_acc": selector.best["acc"], "best_loss": selector.best["loss"],
               "final": last, "optimizer_steps": step, "train_examples_seen": seen,
               "train_seconds": seconds, "train_samples_per_second": seen / seconds}
    write_json(run_dir / RESULTS_FILE, results)
    return results
