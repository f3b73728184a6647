"""A trained run as a standard transformers folder: `BertForSequenceClassification`, or
`MPNetForSequenceClassification` for a run of the MPNet family.

The folder holds `config.json`, `model.safetensors` (transformers' key names), `vocab.txt` and
`tokenizer_config.json`, so `transformers.AutoModelForSequenceClassification` and
`AutoTokenizer` load it with no PeaKD code. An SPS student is unrolled: its 2k effective layers
become 2k plain layers in schedule order, and each copy that runs with Query and Key swapped gets
the key Linear's weights as its query and the query's as its key. transformers' plain model then
computes exactly what the SPS schedule does (MPNet's relative position bias is one table shared
by every layer, unrolled or not); the file is larger (2k layers' weights) but the model is the
same.
"""
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from BERT.pytorch_pretrained_bert import atomic_write, save_safetensors
from BERT.pytorch_pretrained_bert.modeling import MPNET_NAMES

from .checkpoints import write_json
from .errors import PeakdError
from .modeling import effective_layers, load_tokenizer, load_trained_run
from .paths import check_dir, check_writable_dir
from .runs import RESULTS_FILE, run_marker
from .summary import checkpoint_text

EXPORT_FILES = ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json")
_QUERY, _KEY = "attention.self.query.", "attention.self.key."
# id2label of a regression head (STS-B): one output, the similarity score
REGRESSION_LABELS = ("score",)


@dataclass(frozen=True)
class HFLayout:
    """Where transformers keeps a model family's weights, by our (BERT) key names."""
    architecture: str
    tokenizer_class: str
    encoder_prefix: str  # transformers' prefix for our `bert.` keys
    renames: tuple = ()  # (ours, theirs) parts of encoder key names
    head: tuple = ()  # (ours, theirs) key prefixes of the classifier head; the first match wins
    special_tokens: tuple = ()  # (role, token) pairs for tokenizer_config.json


# config.json's model_type -> transformers' layout. MPNet's classification head is dense + tanh
# on the first token, then out_proj: our pooler and classifier, in that order.
HF_LAYOUTS = {
    "bert": HFLayout("BertForSequenceClassification", "BertTokenizer", "bert."),
    "mpnet": HFLayout("MPNetForSequenceClassification", "MPNetTokenizer", "mpnet.",
                      renames=tuple((ours, theirs) for theirs, ours in MPNET_NAMES),
                      head=(("bert.pooler.dense.", "classifier.dense."),
                            ("classifier.", "classifier.out_proj.")),
                      special_tokens=(("bos_token", "<s>"), ("eos_token", "</s>"),
                                      ("sep_token", "</s>"), ("cls_token", "<s>"),
                                      ("unk_token", "[UNK]"), ("pad_token", "<pad>"),
                                      ("mask_token", "<mask>"))),
}


def hf_state_dict(state, layout):
    """{our unrolled key: tensor} (`unrolled_state_dict`) -> {transformers key: tensor}."""
    out = {}
    for key, value in state.items():
        for ours, theirs in layout.head:
            if key.startswith(ours):
                key = theirs + key[len(ours):]
                break
        else:
            if key.startswith("bert."):
                key = layout.encoder_prefix + key[len("bert."):]
            for ours, theirs in layout.renames:
                key = key.replace(ours, theirs)
        out[key] = value
    return out


def _swapped(name):
    """A layer's parameter name with the query and key projections exchanged."""
    for a, b in ((_QUERY, _KEY), (_KEY, _QUERY)):
        if name.startswith(a):
            return b + name[len(a):]
    return name


def unrolled_state_dict(model):
    """{transformers key: tensor} of a classifier: one plain layer per effective layer.

    Effective layer j runs physical layer i with or without the Q/K swap; it becomes
    `bert.encoder.layer.j.*` with layer i's weights, query and key exchanged where swapped.
    """
    state = {f"bert.{k}": v for k, v in model.bert.state_dict().items()
             if not k.startswith("encoder.layer.")}
    layers = [layer.state_dict() for layer in model.bert.encoder.layer]
    for position, (index, swap) in enumerate(model.bert.encoder.schedule):
        for name, value in layers[index].items():
            state[f"bert.encoder.layer.{position}.{_swapped(name) if swap else name}"] = value
    state.update({f"classifier.{k}": v for k, v in model.classifier.state_dict().items()})
    return state


def hf_config(config, num_layers, task, pad_token_id):
    """transformers' config.json of the unrolled classifier."""
    labels = task.labels or REGRESSION_LABELS
    out = {**config.to_dict(), "num_hidden_layers": num_layers,
           "architectures": [HF_LAYOUTS[config.model_type].architecture],
           "model_type": config.model_type,
           "id2label": {str(i): label for i, label in enumerate(labels)},
           "label2id": {label: i for i, label in enumerate(labels)},
           "problem_type": ("regression" if task.output_mode == "regression"
                            else "single_label_classification"),
           "pad_token_id": pad_token_id}
    if config.model_type == "bert":
        out["position_embedding_type"] = "absolute"
    return out


def hf_tokenizer_config(tokenizer, config):
    """transformers' tokenizer_config.json: the class, casing, length and special tokens."""
    layout = HF_LAYOUTS[config.model_type]
    return {"tokenizer_class": layout.tokenizer_class, "do_lower_case": tokenizer.do_lower_case,
            "model_max_length": config.max_positions, **dict(layout.special_tokens)}


def export_run(run_dir, export_dir, criterion="acc", overwrite=False):
    """Writes the run's `criterion` checkpoint as a transformers folder; returns export_dir.

    Everything is read and checked before the first file is written.
    """
    run_dir, export_dir = Path(run_dir), Path(export_dir)
    check_dir(run_dir, "--run_dir", "pass a finetune.py run folder")
    check_writable_dir(export_dir, "--export_dir")
    marker = run_marker(export_dir)
    if marker is not None:
        # even with --overwrite_export_dir: the export's config.json and vocab.txt would
        # replace the run's own
        raise PeakdError(f"--export_dir {export_dir} holds a run or teacher outputs "
                         f"({marker.name}), which an export must not write over; choose "
                         "another folder")
    if export_dir.exists() and any(export_dir.iterdir()) and not overwrite:
        raise PeakdError(f"--export_dir {export_dir} is not empty; pass --overwrite_export_dir "
                         "or choose another folder")
    model, config, run_args, task = load_trained_run(run_dir, criterion)
    if config.model_type not in HF_LAYOUTS:
        raise PeakdError(f"--run_dir {run_dir} holds a {config.model_type} model; the export "
                         f"writes {' or '.join(HF_LAYOUTS)} models only")
    tokenizer = load_tokenizer(run_dir, config, "--run_dir")
    state = hf_state_dict(unrolled_state_dict(model), HF_LAYOUTS[config.model_type])
    meta = {"format": "pt", "criterion": criterion,
            "model_type": run_args["model_type"], "task": task.name}
    vocab = (run_dir / "vocab.txt").read_bytes()

    def write(folder):
        pad = (config.pad_token_id if config.model_type == "mpnet"
               else tokenizer.vocab.get("[PAD]", 0))
        write_json(folder / "config.json", hf_config(config, effective_layers(model), task, pad))
        write_json(folder / "tokenizer_config.json", hf_tokenizer_config(tokenizer, config))
        atomic_write(folder / "vocab.txt", lambda f: f.write(vocab))
        save_safetensors(state, folder / "model.safetensors", metadata=meta)

    publish_folder(export_dir, write)
    return export_dir


def publish_folder(final, write):
    """Runs write(folder) on a new temporary folder beside `final`, then puts it in the place of
    `final` (an old one is replaced only then), so that an interruption leaves `final` as it was
    and no half-written export."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def selected_checkpoint(run_dir, criterion):
    """What the run's eval_results.json says of the exported checkpoint, e.g. 'dev acc 0.81,
    loss 0.43 (BERT.*_acc.pkl, epoch 2)'; a run without the file says so."""
    path = Path(run_dir) / RESULTS_FILE
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"BERT.*_{criterion}.pkl (no readable {RESULTS_FILE}: dev metrics unknown)"
    return checkpoint_text(results, criterion)
