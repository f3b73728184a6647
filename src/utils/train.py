"""The training loop shared by finetune.py, PTP.py and finetune_ER.py (evaluation: evaluation.py;
device, precision and padding: device.py).

BertAdam owns the learning-rate schedule (applied once). Training batches are shuffled by a seeded
generator and padded to their own longest sequence; evaluation runs in length-grouped batches and
returns predictions in file order. Dev is evaluated after every epoch (and every `--eval_steps`);
`<prefix>.{encoder,cls}_acc.pkl` are saved when the dev metric beats the best so far and
`--saving_criterion_acc`, `*_loss.pkl` when the dev loss beats the best so far and
`--saving_criterion_loss`. The running loss is checked for NaN/inf at each logging step and before
every save, so a diverged run stops with an error and never overwrites a checkpoint.

Each evaluation (and every `--save_steps`) before the last optimizer step also writes
`resume_state.pkl`: weights, optimizer, grad scaler, loop position, best-so-far records and random
states, from which `--resume` goes on exactly as if the run had not stopped. Under `torchrun` the
model trains in DistributedDataParallel on shares of the same global batches (utils/parallel.py);
rank 0 evaluates and writes.
"""
import contextlib
import dataclasses
import math
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import torch
from tqdm.auto import tqdm

from BERT.pytorch_pretrained_bert import BertAdam, count_parameters
from BERT.pytorch_pretrained_bert.optimization import warmup_linear
from BERT.pytorch_pretrained_bert.linear import machine_key, used_paths as used_linear_paths

from . import parallel
from .allocator import keep_freed_memory
from .checkpoints import atomic_torch_save, safe_torch_load, save_model_checkpoint, write_json
from .device import (COMPILE_BUCKETS, autocast, compile_forward, pad_multiple, pick_device,
                     to_device)
from .distill import INTERMEDIATE, Objective
from .errors import Interrupted, PeakdError
from .evaluation import evaluate
from .features import train_batches
from .modeling import effective_layers
from .runs import RESULTS_FILE, RESUME_FILE, CsvLog, code_version, run_file

TRAIN_LOG, EVAL_LOG = "train_log.csv", "eval_log.csv"
LOG_FILES = (TRAIN_LOG, EVAL_LOG)
# bumped when the layout of resume_state.pkl changes, so an old file is refused, not misread
RESUME_FORMAT = 2


def make_optimizer(model, args, t_total, extra=None):
    """BertAdam over the model's parameters and those of `extra` (a module trained beside it,
    e.g. TinyBERT's fit_dense); no weight decay on biases and LayerNorm weights."""
    decay, no_decay = [], []
    named = list(model.named_parameters()) + list(extra.named_parameters() if extra else [])
    for name, p in named:
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    return BertAdam([{"params": decay, "weight_decay": args.weight_decay},
                     {"params": no_decay, "weight_decay": 0.0}],
                    lr=args.learning_rate, warmup=args.warmup_proportion, t_total=t_total,
                    bias_correction=args.adam_bias_correction)


def plan_steps(num_examples, args):
    """(micro-batch size, optimizer steps per epoch, total optimizer steps)."""
    micro = args.train_batch_size // args.gradient_accumulation_steps
    per_epoch = math.ceil(math.ceil(num_examples / micro) / args.gradient_accumulation_steps)
    total = math.ceil(per_epoch * args.num_train_epochs)
    if args.max_steps is not None:
        total = min(total, args.max_steps)
    return micro, per_epoch, max(total, 1)


def schedule_steps(num_examples, args, total):
    """The t_total of the warmup-linear schedule: the steps trained (`total`), or with
    --schedule_epochs the released code's int(examples / batch / accumulation) x epochs."""
    epochs = getattr(args, "schedule_epochs", None)
    if epochs is None:
        return total
    return max(int(num_examples / args.train_batch_size) * epochs, 1)


class _Selector:
    """Tracks the best metric and loss on the choosing split (the first evaluated) and saves
    checkpoints when they improve; also remembers every split's record at those evaluations
    (`chosen`) and each split's best record over the run (`peak`)."""

    def __init__(self, model, run_dir, prefix, args, metric):
        self.model, self.run_dir, self.prefix, self.metric = model, run_dir, prefix, metric
        self.criterion_acc = args.saving_criterion_acc
        self.criterion_loss = args.saving_criterion_loss
        self.best = {"acc": None, "loss": None}
        self.chosen = {"acc": None, "loss": None}
        self.peak = {}

    def state(self):
        return {"best": self.best, "chosen": self.chosen, "peak": self.peak}

    def restore(self, state):
        self.best, self.chosen, self.peak = state["best"], state["chosen"], state["peak"]

    def update(self, records, split):
        """records: {split: metrics record} of one evaluation; `split` chooses."""
        record = records[split]
        value, loss = record[self.metric], record["loss"]
        best_acc, best_loss = self.best["acc"], self.best["loss"]
        saved = None
        if (best_acc is None or value > best_acc[self.metric]) and value > self.criterion_acc:
            save_model_checkpoint(self.model, self.run_dir, self.prefix, "acc")
            self.best["acc"], self.chosen["acc"], saved = record, records, "acc"
        if (best_loss is None or loss < best_loss["loss"]) and loss < self.criterion_loss:
            save_model_checkpoint(self.model, self.run_dir, self.prefix, "loss", same_as=saved)
            self.best["loss"], self.chosen["loss"] = record, records
        for name, rec in records.items():
            if name not in self.peak or rec[self.metric] > self.peak[name][self.metric]:
                self.peak[name] = rec


def check_finite(loss_sum, step):
    value = float(loss_sum)
    if not math.isfinite(value):
        raise PeakdError(f"training loss became {value} at or before optimizer step {step}; "
                         "nothing from these steps was saved. Lower --learning_rate or check "
                         "the data")
    return value


@dataclasses.dataclass
class _Position:
    """Where a run stands; resume_state.pkl records it so that --resume continues from there."""
    epoch: int = 1  # the epoch that runs next (1-based)
    next_batch: int = 0  # its first micro-batch not trained on yet
    step: int = 0  # optimizer steps done
    seen: int = 0  # training examples seen, all ranks together
    window: int = 0  # micro-batches summed into the running loss since the last log line
    evaluated_at: int = -1  # optimizer step of the latest dev evaluation
    last: Optional[dict] = None  # that evaluation's record on the first dev split (rank 0)
    elapsed: float = 0.0  # wall-clock seconds of the run so far, over all sessions
    eval_seconds: float = 0.0  # the part of `elapsed` spent evaluating and writing checkpoints
    predict_seconds: float = 0.0  # the part of `eval_seconds` spent in dev forward passes
    predicted: int = 0  # dev examples predicted in that time


def rng_state(device):
    """The generators dropout (and SPS swap flips) draw from: torch's CPU one and the GPU's."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state, device):
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def load_resume_state(run_dir, prefix):
    """The resume state of an interrupted run, checked against this run's process count."""
    path = run_file(run_dir, RESUME_FILE, prefix)
    state = safe_torch_load(path, "resume state")
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise PeakdError(f"resume state {path} was not written by this version of PeaKD; "
                         "start the run again without --resume")
    saved = len(state["ranks"])
    if saved != parallel.world_size():
        raise PeakdError(f"resume state {path} was saved by {saved} process(es) and this run "
                         f"has {parallel.world_size()}; resume it with {saved} in all (torchrun "
                         "--nnodes x --nproc_per_node), so that each continues its own random "
                         "state")
    return state


class _TrainingRun:
    """One call of `train`: the objects --resume restores and the steps of the loop.

    Every rank runs the loop in lockstep on its share of each global batch; rank 0 alone
    evaluates and writes. Collectives (loss sums, state gathering, DDP's gradient all-reduce)
    happen at the same steps on every rank, so ranks wait for each other there.
    """

    def __init__(self, model, train_features, dev_features, task, args, objective, run_dir,
                 prefix, device):
        self.model, self.train_features, self.dev_features = model, train_features, dev_features
        self.task, self.args, self.objective, self.prefix = task, args, objective, prefix
        self.run_dir, self.device = Path(run_dir), device
        # the module trained beside the model (TinyBERT's fit_dense), or None
        self.extra = objective.module
        self.main = parallel.is_main()
        self.amp = autocast(args, device)
        self.multiple = pad_multiple(getattr(args, "pad_to_multiple_of", None), device)
        # compiled: few lengths, each compiled once; their first steps' time is the warm-up
        self.buckets = COMPILE_BUCKETS if getattr(args, "compile", None) else None
        self.shapes, self.warmup_seconds = set(), 0.0
        model.to(device)
        self.micro, _, self.t_total = plan_steps(len(train_features), args)
        self.schedule_total = schedule_steps(len(train_features), args, self.t_total)
        self.optimizer = make_optimizer(model, args, self.schedule_total, self.extra)
        self.scaler = torch.amp.GradScaler("cuda", enabled=args.fp16)
        self.generator = torch.Generator().manual_seed(args.train_seed)
        self.metric = getattr(args, "select_metric", None) or task.main_metric
        self.selector = _Selector(model, self.run_dir, prefix, args, self.metric)
        self.pos = _Position()
        # read at the start: a checkout that moves on during a long run (a pull, a commit) must
        # not relabel it with code it did not run
        self.code = code_version()
        self.running = torch.zeros((), device=device)  # summed on the device: no per-step sync
        state = load_resume_state(self.run_dir, prefix) if args.resume else None
        if state is not None:
            self.restore(state)
        # the state the generator draws the next epoch's permutation from
        self.epoch_start = self.generator.get_state()
        self.started = time.perf_counter() - self.pos.elapsed
        self.ddp = parallel.wrap(model, device)
        module = model if self.ddp is None else self.ddp
        self.forward, self.graph_steps = compile_forward(module, args.compile, device)
        self.logs = {}
        if self.main:
            sizes = state["logs"] if state is not None else {}
            self.logs = {name: CsvLog(run_file(self.run_dir, name, prefix), sizes.get(name))
                         for name in LOG_FILES}
            if state is None:
                # a stale state from an earlier, interrupted run in this folder must not be
                # resumed on top of this run's logs
                run_file(self.run_dir, RESUME_FILE, prefix).unlink(missing_ok=True)
        # one bar in one process: a thread lock will do. tqdm's default also makes a
        # multiprocessing lock, a named semaphore that a stage stopped by SIGTERM (the grid's
        # interrupt) leaves behind, and the resource tracker then warns of a leak
        tqdm.set_lock(threading.RLock())
        # in a log file (not a terminal) a bar line every 30 s instead of every 0.1 s
        self.progress = tqdm(total=self.t_total, initial=self.pos.step, disable=not self.main,
                             desc=f"{prefix} {task.name}", unit="step", dynamic_ncols=True,
                             mininterval=0.1 if sys.stderr.isatty() else 30.0)

    def restore(self, state):
        self.model.load_state_dict(state["model"])
        if self.extra is not None:
            self.extra.load_state_dict(state["extra"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        self.selector.restore(state["selector"])
        self.pos = _Position(**state["position"])
        mine = state["ranks"][parallel.rank()]
        set_rng_state(mine["rng"], self.device)
        self.running = mine["running"].to(self.device)

    def save_state(self):
        """Writes resume_state.pkl: everything the loop needs to go on exactly from here.

        Not once the last optimizer step is done: the run then only ends and `results` deletes
        the file, so writing it (the model and Adam's two moments, 3x the weights, fsync'd)
        was pure cost. A run killed after that step resumes from the state saved before it."""
        if self.pos.step >= self.t_total:
            return
        start = time.perf_counter()
        self.pos.elapsed = start - self.started
        ranks = parallel.all_gather({"rng": rng_state(self.device),
                                     "running": self.running.cpu()})
        if self.main:
            atomic_torch_save({
                "format": RESUME_FORMAT, "model": self.model.state_dict(),
                "extra": None if self.extra is None else self.extra.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "generator": self.epoch_start, "selector": self.selector.state(),
                "position": dataclasses.asdict(self.pos), "ranks": ranks,
                "logs": {name: log.size() for name, log in self.logs.items()},
            }, run_file(self.run_dir, RESUME_FILE, self.prefix))
        self.pos.eval_seconds += time.perf_counter() - start

    def run(self):
        pos, epochs = self.pos, math.ceil(self.args.num_train_epochs)
        accum = self.args.gradient_accumulation_steps
        self.model.train()
        # a run resumed mid-epoch finishes that epoch even when its last step is already done
        while pos.epoch <= epochs and (pos.next_batch or pos.step < self.t_total):
            epoch = pos.epoch
            if getattr(self.args, "no_shuffle", False):
                batches = list(torch.arange(len(self.train_features)).split(self.micro))
            else:
                batches = train_batches(len(self.train_features), self.micro, self.generator)
            for i in range(pos.next_batch, len(batches)):
                if pos.step >= self.t_total:
                    break
                # the accumulation window holding micro-batch i; the epoch's last one may be
                # short (fewer micro-batches, or a short last micro-batch)
                start = i - i % accum
                window = batches[start:start + accum]
                boundary = i + 1 == start + len(window)
                self.micro_step(batches[i], boundary,
                                len(batches[i]) / sum(len(b) for b in window))
                if boundary:
                    pos.next_batch = i + 1
                    self.optimizer_step(epoch)
            if pos.window:
                self.log_loss(epoch)
            pos.epoch, pos.next_batch = epoch + 1, 0
            self.epoch_start = self.generator.get_state()
            # the last epoch always ends with an evaluation: a run never ends without one
            last = pos.step >= self.t_total
            if pos.evaluated_at != pos.step and (self.evaluates(epoch) or last):
                self.evaluate_dev(epoch)

    def evaluates(self, epoch):
        """Whether `epoch` (1-based) has evaluations (--eval_start_epoch)."""
        return epoch >= getattr(self.args, "eval_start_epoch", 1)

    def micro_step(self, index, boundary, share):
        """Forward and backward of one micro-batch (this rank's share of it).

        share: the micro-batch's fraction of its accumulation window's examples. The objective
        is a mean over the micro-batch, so scaling it by `share` makes the window's summed
        gradient the mean over all its examples, each weighed the same.
        """
        local, weight = parallel.share(index)
        batch = to_device(self.train_features.batch(local, self.args.pad_to_max_length,
                                                    self.multiple, self.buckets), self.device)
        shape = tuple(batch["input_ids"].shape)
        first = self.buckets is not None and shape not in self.shapes
        started = time.perf_counter()
        # gradients are all-reduced once per optimizer step, not per micro-batch
        sync = contextlib.nullcontext() if boundary or self.ddp is None else self.ddp.no_sync()
        if self.graph_steps:
            torch.compiler.cudagraph_mark_step_begin()
        with sync:
            with self.amp:
                out = self.forward(batch["input_ids"], batch["token_type_ids"],
                                   batch["attention_mask"], **self.objective.outputs)
                loss = self.objective(out, batch)
            self.scaler.scale(loss * weight * share).backward()
        if first:
            # compilation runs on the host in this first forward and backward of the shape
            self.shapes.add(shape)
            self.warmup_seconds += time.perf_counter() - started
        self.running += loss.detach() * weight / parallel.world_size()
        self.pos.window += 1
        self.pos.seen += len(index)

    def optimizer_step(self, epoch):
        if getattr(self.args, "schedule_applied_twice", False):
            # the released finetune.py wrote lr x w(step / t_total) into the groups, and
            # BertAdam multiplied by w again: the step uses lr x w^2
            for group in self.optimizer.param_groups:
                group["lr"] = self.args.learning_rate * warmup_linear(
                    group["step"] / self.schedule_total, self.args.warmup_proportion)
        if self.extra is not None:
            # outside DDP's module: its gradients are averaged over the ranks here
            parallel.average_grads(self.extra.parameters())
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.pos.step += 1
        self.progress.update(1)
        step, args = self.pos.step, self.args
        if step % args.logging_steps == 0:
            self.log_loss(epoch)
        if args.eval_steps and step % args.eval_steps == 0 and self.evaluates(epoch):
            self.evaluate_dev(epoch)
        elif args.save_steps and step % args.save_steps == 0:
            self.save_state()

    def log_loss(self, epoch):
        """One train_log row: the mean loss of the micro-batches since the last row."""
        mean = check_finite(parallel.all_sum(self.running), self.pos.step) / self.pos.window
        if self.main:
            self.progress.set_postfix(loss=f"{mean:.4f}", epoch=epoch)
            self.logs[TRAIN_LOG].write({"step": self.pos.step, "epoch": epoch, "loss": mean,
                                        "lr": self.optimizer.get_lr()[0]})
        self.running.zero_()
        self.pos.window = 0

    def evaluate_dev(self, epoch):
        """Dev evaluation on rank 0, checkpoint selection, then the resume state."""
        start = time.perf_counter()
        check_finite(parallel.all_sum(self.running), self.pos.step)
        if self.main:
            records = {}
            for split, feats in self.dev_features.items():
                predict_start = time.perf_counter()
                metrics, _ = evaluate(self.model, feats, self.task, self.args.eval_batch_size,
                                      self.device, self.amp, self.args.pad_to_max_length,
                                      self.multiple)
                self.pos.predict_seconds += time.perf_counter() - predict_start
                self.pos.predicted += len(feats)
                records[split] = {"epoch": epoch, "step": self.pos.step, **metrics}
                self.logs[EVAL_LOG].write({"split": split, **records[split]})
                if not math.isfinite(metrics["loss"]):
                    # a diverged model can still score a "best" metric: never save it
                    raise PeakdError(f"dev loss on {split} became {metrics['loss']} at optimizer "
                                     f"step {self.pos.step}; nothing from this evaluation was "
                                     "saved. Lower --learning_rate or check the data")
            choosing = next(iter(self.dev_features))
            self.pos.last = records[choosing]
            self.selector.update(records, choosing)
            self.model.train()
        self.pos.evaluated_at = self.pos.step
        self.pos.eval_seconds += time.perf_counter() - start
        self.save_state()

    def results(self):
        """eval_results.json (written by rank 0, which then drops the resume state)."""
        pos, model = self.pos, self.model
        seconds = time.perf_counter() - self.started - pos.eval_seconds
        results = {"task": self.task.name, "train_type": getattr(self.args, "train_type", None),
                   "model_type": self.args.model_type, "prefix": self.prefix,
                   "student_hidden_layers": self.args.student_hidden_layers,
                   "effective_layers": effective_layers(model),
                   "num_parameters": count_parameters(model),
                   "main_metric": self.task.main_metric,
                   "best_acc": self.selector.best["acc"], "best_loss": self.selector.best["loss"],
                   "final": pos.last, "optimizer_steps": pos.step,
                   # what chose the checkpoints, and every split's scores at the chosen ones
                   "selection": {"rule": getattr(self.args, "select", "dev"),
                                 "split": next(iter(self.dev_features)), "metric": self.metric,
                                 "eval_steps": self.args.eval_steps,
                                 "eval_start_epoch": getattr(self.args, "eval_start_epoch", 1)},
                   "chosen_acc": self.selector.chosen["acc"],
                   "chosen_loss": self.selector.chosen["loss"],
                   "best_by_split": self.selector.peak,
                   "schedule_steps": self.schedule_total,
                   "train_examples_seen": pos.seen, "processes": parallel.world_size(),
                   "train_seconds": seconds, "eval_seconds": pos.eval_seconds,
                   "train_samples_per_second": pos.seen / seconds,
                   "inference_samples_per_second": pos.predicted / max(pos.predict_seconds,
                                                                       1e-9)}
        if next(model.parameters()).device.type == "cpu":
            # MKL and oneDNN round differently, so a run says which computed it (auto: kept
            # per machine, linear.py)
            results["cpu_linear"] = used_linear_paths()
            # the CPU and torch that computed it: which one ran a study's stages was unknown
            # once a machine's CPU changed between sessions
            results["machine"] = machine_key()
            # whether its samples/s had glibc's malloc reuse large blocks (utils/allocator.py)
            results["malloc_keeps_freed"] = keep_freed_memory()
        results.update(self.objective.report())
        if self.buckets is not None:
            results["compile"] = {"mode": self.args.compile, "shapes": len(self.shapes),
                                  "warmup_seconds": self.warmup_seconds,
                                  "buckets": list(self.buckets)}
        if "teacher_forward_seconds" in results:
            results["teacher_forward_share"] = results["teacher_forward_seconds"] / seconds
        if getattr(self.args, "train_type", None) in INTERMEDIATE:
            # its head is untrained: a second stage starts from the final encoder
            save_model_checkpoint(model, self.run_dir, self.prefix, "final")
        results["code"] = self.code
        write_json(run_file(self.run_dir, RESULTS_FILE, self.prefix), results)
        run_file(self.run_dir, RESUME_FILE, self.prefix).unlink(missing_ok=True)
        return results


def train(model, train_features, dev_features, task, args, objective, run_dir, prefix):
    """Trains `model` with `objective(outputs, batch) -> loss` (a distill.Objective, or a plain
    function of the outputs of a default forward); returns the results dict.

    dev_features: {split name: Features}; the first split drives checkpoint selection.
    Writes train_log.csv, eval_log.csv, eval_results.json (names per `runs.run_file`) and the
    checkpoints into run_dir, and resume_state.pkl at every evaluation and `--save_steps`
    before the last step; `--resume` continues from the latter. Under torchrun every process
    calls this; rank 0 writes and returns the results, the other ranks return None.
    """
    device = pick_device(args)
    with parallel.process_group(device):
        if not isinstance(objective, Objective):
            objective = Objective(objective)
        run = _TrainingRun(model, train_features, dev_features, task, args, objective, run_dir,
                           prefix, device)
        try:
            run.run()
        except KeyboardInterrupt:
            resumable = run_file(run_dir, RESUME_FILE, prefix).is_file()
            raise Interrupted(run.pos.step, resumable) from None
        finally:
            # an error line must start on its own line, not after the bar
            run.progress.close()
        return run.results() if run.main else None
