"""Evaluation shared by the training loop and the scripts: length-grouped batches, outputs in
file order, the task's loss and metrics."""
import torch

from .device import pad_multiple, to_device
from .features import eval_batches
from .losses import task_loss
from .metrics import metrics_for


@torch.no_grad()
def collect_outputs(model, features, batch_size, device, amp, pad_to_max=False,
                    layer_cls=False, multiple=None):
    """{"logits": (N, C), "pooled": (N, H)[, "layer_cls": (N, L, H)]} in file order.

    Runs length-grouped batches, each padded to a multiple of `multiple` (None: the device's
    PAD_MULTIPLE); `layer_cls` adds every effective layer's [CLS] vector.
    """
    model.eval()
    out = {}
    multiple = pad_multiple(multiple, device)
    # one autocast region for the whole pass: autocast keeps each weight's low-precision copy
    # until the region ends, so the weights are cast once, not once per batch
    with amp:
        for index in eval_batches(features.lengths, batch_size):
            batch = to_device(features.batch(index, pad_to_max, multiple), device)
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


def predict(model, features, batch_size, device, amp, pad_to_max=False, multiple=None):
    """Logits (N, C) in file order."""
    return collect_outputs(model, features, batch_size, device, amp, pad_to_max,
                           multiple=multiple)["logits"]


def score(task, logits, labels):
    """The task's metrics and `loss` of logits (N, C) against gold labels (N,)."""
    regression = task.output_mode == "regression"
    preds = logits.view(-1) if regression else logits.argmax(-1)
    metrics = metrics_for(task.metric_names, preds.numpy(), labels.numpy())
    metrics["loss"] = task_loss(logits, labels, regression).item()
    return metrics


def evaluate(model, features, task, batch_size, device, amp, pad_to_max=False, multiple=None):
    """(metrics dict incl. `loss`, logits (N, C)) on a labelled split."""
    logits = predict(model, features, batch_size, device, amp, pad_to_max, multiple)
    return score(task, logits, features.labels), logits
