"""The training objective of a student: plain fine-tuning, KD or PKD.

Teacher predictions come from the teacher-outputs file and are looked up by example index, so a
KD step costs no teacher forward pass.
"""
import torch

from .errors import PeakdError, warn
from .losses import kd_loss, patience_loss, regression_kd_loss, resolve_fc_layer_idx
from .losses import task_loss


def build_objective(args, task, model, teacher_train=None, device="cpu"):
    """(objective(outputs, batch) -> loss, whether it needs every layer's output).

    teacher_train: the train split of the teacher file (needed for kd and pkd).
    """
    regression = task.output_mode == "regression"
    if args.train_type == "ft":
        return (lambda out, batch: task_loss(out.logits, batch["labels"], regression)), False
    teacher_logits = teacher_train["logits"].to(device)  # (N, C)
    patient = args.train_type == "pkd" and args.beta > 0
    if patient:
        student_layers = len(model.bert.encoder.schedule)
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

    return objective, patient
