"""The training objective of a student: plain fine-tuning, KD, PKD, and the methods Pea-KD is
compared with (TinyBERT, MiniLM, CKD, DistilBERT's cosine loss; docs/baselines.md).

KD and PKD read the teacher's predictions from the teacher-outputs file by example index, so
their step costs no teacher forward. The other methods need token-level tensors that file does
not hold: their teacher runs alongside the student, in eval mode, without gradients, in the
student's precision (the loop calls the objective inside its autocast), and the run reports
what it cost (`teacher_forward_seconds`).
"""
import dataclasses
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from .args import task_output_dir
from .device import amp_dtype
from .errors import PeakdError, warn
from .losses import (attention_scores, ckd_layer_relation_loss, ckd_word_relation_loss,
                     cosine_hidden_loss, kd_loss, minilm_relation_loss, patience_loss,
                     regression_kd_loss, resolve_fc_layer_idx, skip_layer_map,
                     soft_cross_entropy, task_loss, tinybert_attention_loss,
                     tinybert_hidden_loss)
from .modeling import effective_layers, load_trained_run
from .paths import check_dir

# train types whose teacher runs alongside the student, and what each asks of both models
LIVE_TEACHER = {"tinybert_layer": {"output_all_encoded_layers": True, "output_qkv": True},
                "minilm_layer": {"output_qkv": True},
                "ckd": {"output_all_encoded_layers": True},
                "distil_cos": {}}
# train types that train the encoder only (their head stays untrained): the run hands on its
# final encoder (`<prefix>.encoder_final.pkl`) to a second stage
INTERMEDIATE = ("tinybert_layer", "minilm_layer")


@dataclasses.dataclass
class Objective:
    """loss(outputs, batch) -> 0-d tensor, and what the loop must know about it.

    outputs: the keyword arguments of the student's forward (which tensors the loss reads);
    module: parameters trained beside the student (TinyBERT's fit_dense) or None;
    teacher: the teacher running alongside, or None.
    """
    loss: Callable
    outputs: dict = dataclasses.field(default_factory=dict)
    module: Optional[torch.nn.Module] = None
    teacher: Optional["RunningTeacher"] = None

    def __call__(self, out, batch):
        return self.loss(out, batch)

    def report(self):
        """What the run summary adds: the teacher's forward time, when it runs alongside."""
        return {} if self.teacher is None else self.teacher.report()


class RunningTeacher:
    """A teacher model, frozen, called on each training batch; times its forwards (on CUDA with
    events read once at the end, so timing adds no per-step sync).

    `dtype`: the student's autocast precision (None in fp32). Autocast casts a Linear's weight
    and bias to it on every call, and keeps no copy of a frozen weight (its cache holds only
    weights that require grad); so the teacher's Linears are cast once here, to the very values
    autocast would compute each step. Embeddings and LayerNorms stay fp32, as autocast runs them.
    """

    def __init__(self, model, device, outputs, dtype=None):
        self.model = model.eval().requires_grad_(False).to(device)
        if dtype is not None:
            for module in self.model.modules():
                if isinstance(module, torch.nn.Linear):
                    module.to(dtype)
        self.layers = effective_layers(self.model)
        self.outputs, self.device = outputs, device
        self.seconds, self.events, self.calls = 0.0, [], 0

    @torch.no_grad()
    def __call__(self, batch):
        cuda = self.device.type == "cuda"
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        else:
            t0 = time.perf_counter()
        out = self.model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
                         **self.outputs)
        if cuda:
            end.record()
            self.events.append((start, end))
        else:
            self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out

    @classmethod
    def from_run(cls, teacher_dir, device, outputs, dtype=None):
        """The teacher of a finished finetune.py run (its *_acc checkpoint)."""
        return cls(load_trained_run(teacher_dir, "acc")[0], device, outputs, dtype)

    def report(self):
        if self.events:
            torch.cuda.synchronize(self.device)
            self.seconds += sum(s.elapsed_time(e) for s, e in self.events) / 1000
            self.events = []
        return {"teacher_forward_seconds": self.seconds, "teacher_forwards": self.calls}


def teacher_run_dir(args, teacher_file):
    """--teacher_dir, or the teacher run recorded in the teacher-outputs file."""
    if args.teacher_dir:
        return check_dir(task_output_dir(args.task, args.teacher_dir), "--teacher_dir",
                         "pass the teacher's finetune.py run folder")
    recorded = teacher_file.get("teacher_dir") if teacher_file else None
    if not recorded or not Path(recorded).is_dir():
        raise PeakdError(f"--train_type {args.train_type} runs the teacher beside the student "
                         f"and the teacher outputs file names no folder it finds ({recorded}): "
                         "pass --teacher_dir (the teacher's finetune.py run folder)")
    return Path(recorded)


def hidden_states(out):
    """[embedding output] + every effective layer's output: L + 1 tensors (B, S, H)."""
    return [out.embedding_output, *out.encoded_layers]


def build_objective(args, task, model, teacher_train=None, device="cpu", teacher_file=None):
    """The Objective of --train_type. teacher_train: the train split of the teacher file (kd,
    pkd, tinybert_pred); teacher_file: the whole file's header (its teacher_dir)."""
    device = torch.device(device)
    regression = task.output_mode == "regression"
    kind = args.train_type
    if kind == "ft":
        return Objective(lambda out, batch: task_loss(out.logits, batch["labels"], regression))
    if kind in LIVE_TEACHER:
        teacher = RunningTeacher.from_run(teacher_run_dir(args, teacher_file), device,
                                          LIVE_TEACHER[kind], amp_dtype(args))
        return live_objective(args, kind, model, regression, teacher)
    teacher_logits = teacher_train["logits"].to(device)  # (N, C)
    if kind == "tinybert_pred":
        def pred(out, batch):
            t = teacher_logits[batch["index"]]
            if regression:
                return torch.nn.functional.mse_loss(out.logits.view(-1).float(), t.view(-1))
            return soft_cross_entropy(out.logits, t, args.T)
        return Objective(pred)
    patient = kind == "pkd" and args.beta > 0
    if patient:
        student_layers = effective_layers(model)
        if student_layers < 2:
            raise PeakdError("--train_type pkd: a student with 1 effective layer has no "
                             "intermediate layer for the patient loss; use --train_type kd, "
                             "--beta 0, or an SPS student (2 effective layers)")
        teacher_cls = teacher_train["layer_cls"]  # (N, L_T, H)
        if teacher_cls.shape[2] != model.config.hidden_size:
            raise PeakdError(f"the teacher's hidden size {teacher_cls.shape[2]} differs from the "
                             f"student's {model.config.hidden_size}; PKD needs the same width")
        fc = resolve_fc_layer_idx(args.fc_layer_idx, student_layers, teacher_cls.shape[1])
        if args.fc_layer_idx is not None and len(set(fc)) < len(fc):
            warn(f"--fc_layer_idx {args.fc_layer_idx} pairs one teacher layer with several "
                 "student layers; allowed, but check that it is what you meant")
        teacher_cls = teacher_cls[:, fc].float().to(device)  # (N, n - 1, H)

    def objective(out, batch):
        index, labels = batch["index"], batch["labels"]
        if regression:
            loss = regression_kd_loss(out.logits.view(-1), teacher_logits[index].view(-1),
                                      labels, args.alpha)
        else:
            loss = kd_loss(out.logits, teacher_logits[index], labels, args.alpha, args.T)
        if patient:
            # [CLS] of the student's effective layers 1..n-1: (B, n - 1, H)
            student_cls = torch.stack([h[:, 0] for h in out.encoded_layers[:-1]], dim=1)
            loss = loss + args.beta * patience_loss(student_cls, teacher_cls[index],
                                                    args.normalize_patience)
        return loss

    return Objective(objective, {"output_all_encoded_layers": patient})


def live_objective(args, kind, model, regression, teacher):
    """An Objective whose teacher (a RunningTeacher) runs alongside (LIVE_TEACHER)."""
    outputs, device = LIVE_TEACHER[kind], teacher.device
    t_config, s_config = teacher.model.config, model.config
    n_student, n_teacher = effective_layers(model), teacher.layers
    if kind == "tinybert_layer":
        att_map, hid_map = skip_layer_map(n_student, n_teacher)
        # TinyBERT's fit_dense, student width -> teacher width, trained with the student
        fit = torch.nn.Linear(s_config.hidden_size, t_config.hidden_size).to(device)
        fit.weight.data.normal_(0.0, s_config.initializer_range)
        fit.bias.data.zero_()

        def loss(out, batch):
            t_out, mask = teacher(batch), batch["attention_mask"]
            att = sum(tinybert_attention_loss(
                attention_scores(*out.attention_qkv[i][:2], out.position_bias),
                attention_scores(*t_out.attention_qkv[j][:2], t_out.position_bias), mask)
                for i, j in enumerate(att_map))
            s_hidden, t_hidden = hidden_states(out), hidden_states(t_out)
            rep = sum(tinybert_hidden_loss(s_hidden[i], t_hidden[j], mask, fit)
                      for i, j in enumerate(hid_map))
            return att + rep
        return Objective(loss, outputs, fit, teacher)
    if kind == "minilm_layer":
        def loss(out, batch):
            t_out = teacher(batch)
            return minilm_relation_loss(out.attention_qkv[-1], t_out.attention_qkv[-1],
                                        batch["attention_mask"], out.position_bias,
                                        t_out.position_bias)
        return Objective(loss, outputs, None, teacher)
    if kind == "ckd":
        _, hid_map = skip_layer_map(n_student, n_teacher)
        w_wr, w_ltr = parse_relation_weights(args.relation_weights)

        def loss(out, batch):
            t_out, mask, labels = teacher(batch), batch["attention_mask"], batch["labels"]
            s_hidden = hidden_states(out)
            t_hidden = [hidden_states(t_out)[j] for j in hid_map]
            if regression:
                # CKD's DistillKL for STS-B: MSE of the temperature-scaled scores
                kd = torch.nn.functional.mse_loss(out.logits.view(-1).float() / args.T,
                                                  t_out.logits.view(-1).float() / args.T)
            else:
                kd = soft_cross_entropy(out.logits, t_out.logits, args.T)
            total = (1 - args.alpha) * task_loss(out.logits, labels, regression) + args.alpha * kd
            return (total + w_wr * ckd_word_relation_loss(s_hidden, t_hidden, mask)
                    + w_ltr * ckd_layer_relation_loss(s_hidden, t_hidden, mask))
        return Objective(loss, outputs, None, teacher)
    if s_config.hidden_size != t_config.hidden_size:
        raise PeakdError(f"DistilBERT's cosine loss needs the teacher's width: student "
                         f"{s_config.hidden_size}, teacher {t_config.hidden_size}")

    def distil(out, batch):
        t_out, labels = teacher(batch), batch["labels"]
        if regression:
            soft = torch.nn.functional.mse_loss(out.logits.view(-1).float(),
                                                t_out.logits.view(-1).float())
        else:
            # alpha_ce T^2 KL(softmax(t / T) || softmax(s / T)): kd_loss at alpha 1
            soft = kd_loss(out.logits.float(), t_out.logits.float(), labels, 1.0, args.T)
        return (args.alpha_ce * soft + args.alpha_task * task_loss(out.logits, labels, regression)
                + args.alpha_cos * cosine_hidden_loss(out.sequence_output,
                                                      t_out.sequence_output,
                                                      batch["attention_mask"]))
    return Objective(distil, outputs, None, teacher)


def parse_relation_weights(text):
    """--relation_weights 'WR,LTR' -> (float, float)."""
    try:
        wr, ltr = (float(x) for x in str(text).split(","))
    except ValueError:
        raise PeakdError(f"--relation_weights {text!r} must be two numbers, WR,LTR (e.g. 1,1)"
                         ) from None
    return wr, ltr
