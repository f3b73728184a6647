"""Building teachers and students: pretrained loading, PKD layer initialisation, SPS schedules.

SPS (shuffled parameter sharing) is only a layer schedule: k physical layers run as L1..Lk, then
L1..Lk again with Query and Key swapped. Parameters and state-dict names are those of the plain
k-layer model.
"""
from pathlib import Path

from BERT.pytorch_pretrained_bert import (TOKENIZERS, BertConfig,
                                          BertForSequenceClassification, load_pretrained_weights,
                                          normalize_state_dict, plain_schedule)
from BERT.pytorch_pretrained_bert.modeling import CONFIG_NAMES, WEIGHTS_NAMES, find_model_file
from BERT.pytorch_pretrained_bert.tokenization import VOCAB_NAME

import envs

from .checkpoints import checkpoint_path, safe_torch_load
from .errors import PeakdError, warn
from .glue import get_task
from .runs import read_args

MODEL_TYPES = ("Original", "SPS", "SPS_no_shuffle")


def resolve_bert_model(name):
    """`--bert_model`: an existing directory as given, else `src/data/models/pretrained/<name>`."""
    path = Path(name).expanduser()
    if path.exists() and not path.is_dir():
        raise PeakdError(f"--bert_model {path} is a file, expected a model folder (config.json, "
                         f"{VOCAB_NAME}, weights); pass the folder that holds it")
    if not path.is_dir():
        path = envs.PRETRAINED_DIR / name
    if not path.is_dir():
        raise PeakdError(f"--bert_model {name}: no such directory (nor {path}); pass a model "
                         "directory or run `bash preprocess.sh --with_bert`")
    for what, names in (("config", CONFIG_NAMES), ("vocab", (VOCAB_NAME,)),
                        ("weights", WEIGHTS_NAMES)):
        try:
            find_model_file(path, names, what)
        except FileNotFoundError:
            raise PeakdError(f"--bert_model {path} is incomplete: no {what} file (looked for "
                             f"{', '.join(names)}); it needs a config, {VOCAB_NAME} and "
                             "weights") from None
    return path


def load_tokenizer(model_dir, config=None, what="--bert_model"):
    """The WordPiece tokenizer of a model or run folder, of the model's family (BERT or MPNet,
    from `config` or the folder's own config), its vocabulary checked: UTF-8 text, not empty,
    holding the tokens every input is built from and the one unknown words become, and no id
    the model's embeddings (`config.vocab_size`) lack."""
    if config is None:
        try:
            config = read_config(find_model_file(model_dir, CONFIG_NAMES, "config"),
                                 f"{what} config")
        except FileNotFoundError:
            config = None  # a bare vocabulary folder: BERT's layout
    cls = TOKENIZERS[config.model_type if config is not None else "bert"]
    vocab_size = config.vocab_size if config is not None else None
    vocab_file = Path(model_dir) / VOCAB_NAME
    fix = f"replace it with the {VOCAB_NAME} the model was trained with"
    if vocab_file.is_dir():
        raise PeakdError(f"{what} vocabulary {vocab_file} is a folder, expected a file; {fix}")
    if not vocab_file.is_file():
        raise PeakdError(f"{what} {model_dir} has no {VOCAB_NAME}; copy in the {VOCAB_NAME} the "
                         "model was trained with")
    try:
        tokenizer = cls.from_pretrained(model_dir)
    except UnicodeDecodeError as e:
        raise PeakdError(f"{what} vocabulary {vocab_file} is not UTF-8 text ({e.reason}); "
                         f"{fix}") from None
    except ValueError as e:  # a malformed tokenizer_config.json
        raise PeakdError(f"{what} {model_dir}: {e}; fix or delete that file") from None
    vocab = tokenizer.vocab
    if not vocab or list(vocab) == [""]:
        raise PeakdError(f"{what} vocabulary {vocab_file} is empty; {fix}")
    required = (cls.cls_token, cls.sep_token, cls.unk_token)
    missing = [t for t in required if t not in vocab]
    if missing:
        raise PeakdError(f"{what} vocabulary {vocab_file} lacks {', '.join(missing)} (not a "
                         f"{cls.__name__} WordPiece vocabulary?); {fix}")
    if vocab_size is not None and max(vocab.values()) >= vocab_size:
        raise PeakdError(f"{what} vocabulary {vocab_file} has {max(vocab.values()) + 1} entries "
                         f"but the model's config has vocab_size {vocab_size}; the two do not "
                         f"belong together: {fix}")
    return tokenizer


def load_pretrained_encoder(model_dir):
    """The encoder state dict (BertModel keys) of a pretrained directory, with clear errors."""
    try:
        return normalize_state_dict(load_pretrained_weights(model_dir), bert_prefix="")
    except Exception as e:
        # torch's own message runs over several lines (and suggests weights_only=False, which
        # would run code from the file): its first line says what is wrong
        first = next((line.strip() for line in str(e).splitlines() if line.strip()),
                     type(e).__name__)
        raise PeakdError(f"cannot read the weights in {model_dir} ({first[:200]}); download or "
                         "copy them again") from None


def sps_schedule(num_layers, model_type, second_pass=None):
    """The (layer index, swap Q/K) schedule of a `model_type` student with `num_layers` layers.

    Original: L1..Lk. SPS: L1..Lk then the `second_pass` layers (0-based, default all) with Q/K
    swapped. SPS_no_shuffle: the same second pass without the swap (the ablation).
    """
    if model_type not in MODEL_TYPES:
        raise PeakdError(f"--model_type {model_type!r} is not one of {', '.join(MODEL_TYPES)}")
    first = plain_schedule(num_layers)
    if model_type == "Original":
        return first
    second_pass = range(num_layers) if second_pass is None else second_pass
    return first + tuple((i, model_type == "SPS") for i in second_pass)


def second_pass_layers(value, num_layers):
    """--sps_layers (1-based comma list) -> 0-based indices; None means all layers."""
    if value is None:
        return None
    try:
        layers = [int(x) - 1 for x in str(value).split(",")]
    except ValueError:
        raise PeakdError(f"--sps_layers {value!r} must be comma-separated layer numbers") from None
    if not layers or not all(0 <= i < num_layers for i in layers):
        raise PeakdError(f"--sps_layers {value} must name layers in 1..{num_layers}")
    if len(set(layers)) < len(layers):
        raise PeakdError(f"--sps_layers {value} names a layer twice; the second pass runs each "
                         "named layer once, so name each once")
    return layers


def student_layer_map(num_layers, pretrained_layers, layer_initialization=None):
    """0-based pretrained layer for each student layer: the first k (PKD rule) or the flag's."""
    if num_layers > pretrained_layers:
        raise PeakdError(f"--student_hidden_layers {num_layers} is deeper than the pretrained "
                         f"model ({pretrained_layers} layers)")
    if layer_initialization is None:
        return list(range(num_layers))
    try:
        chosen = [int(x) for x in str(layer_initialization).split(",")]
    except ValueError:
        raise PeakdError(f"--layer_initialization {layer_initialization!r} must be a comma list "
                         "of 1-based layer numbers, e.g. 1,2,3") from None
    if len(chosen) != num_layers or not all(1 <= c <= pretrained_layers for c in chosen):
        raise PeakdError(f"--layer_initialization {layer_initialization} must name "
                         f"{num_layers} layers (one per student layer), each in "
                         f"1..{pretrained_layers}")
    if len(set(chosen)) < len(chosen):
        warn(f"--layer_initialization {layer_initialization} names a layer more than once: "
             "those student layers start as copies of each other")
    return [c - 1 for c in chosen]


def select_layers(encoder_state, layer_map):
    """Keeps embeddings, pooler and the mapped layers, renumbered to the student's 0..k-1."""
    out = {}
    for key, value in encoder_state.items():
        if not key.startswith("encoder.layer."):
            out[key] = value
            continue
        index, rest = key[len("encoder.layer."):].split(".", 1)
        for student, source in enumerate(layer_map):
            if int(index) == source:
                out[f"encoder.layer.{student}.{rest}"] = value
    return out


def build_classifier(config, num_labels, model_type="Original", second_pass=None,
                     swap_flip_prob=0.0):
    """A BertForSequenceClassification whose encoder runs the `model_type` schedule."""
    model = BertForSequenceClassification(config, num_labels=num_labels)
    model.bert.encoder.set_schedule(
        sps_schedule(config.num_hidden_layers, model_type, second_pass), swap_flip_prob)
    return model


def build_student(model_dir, num_labels, num_layers, model_type="Original",
                  layer_initialization=None, load_model=None, second_pass=None,
                  swap_flip_prob=0.0):
    """A k-layer student (or a teacher, with k = the pretrained depth) with a fresh task head.

    Its encoder comes from the pretrained directory (layers per `layer_initialization`) or, when
    `load_model` names an encoder checkpoint (e.g. `PTP.encoder_loss.pkl`), from that file.
    Returns (model, config).
    """
    try:
        config_file = find_model_file(model_dir, CONFIG_NAMES, "config")
    except FileNotFoundError as e:
        raise PeakdError(f"--bert_model: {e}") from None
    pretrained = read_config(config_file, "--bert_model config")
    layer_map = student_layer_map(num_layers, pretrained.num_hidden_layers, layer_initialization)
    config = pretrained.copy(num_hidden_layers=num_layers)
    model = build_classifier(config, num_labels, model_type, second_pass, swap_flip_prob)
    if load_model is not None:
        state = safe_torch_load(load_model, "--load_model_dir checkpoint")
        what = f"--load_model_dir {load_model}"
    else:
        state = select_layers(load_pretrained_encoder(model_dir), layer_map)
        what = f"pretrained model {model_dir}"
    try:
        model.bert.load_state_dict_strict(state)
    except ValueError as e:
        raise PeakdError(f"{what} does not fit a {num_layers}-layer student: {e}") from None
    return model, config


def load_trained(config, num_labels, model_type, encoder_file, cls_file, second_pass=None):
    """A trained classifier from its `*.encoder_*.pkl` and `*.cls_*.pkl` checkpoints."""
    model = build_classifier(config, num_labels, model_type, second_pass)
    for module, path, what in ((model.bert, encoder_file, "encoder checkpoint"),
                               (model.classifier, cls_file, "classifier checkpoint")):
        state = safe_torch_load(path, what)
        try:
            if module is model.bert:
                module.load_state_dict_strict(state)
            else:
                module.load_state_dict(state)
        except (ValueError, RuntimeError) as e:
            raise PeakdError(f"{what} {path} does not fit the model in its run: "
                             f"{str(e).splitlines()[0]}") from None
    return model


def load_trained_run(run_dir, criterion, prefix="BERT"):
    """The trained classifier of a finished run folder and what describes it.

    Reads args.json, config.json and the `<prefix>.{encoder,cls}_<criterion>.pkl` checkpoints;
    the layer schedule (model type, SPS second pass) is the one the run trained with.
    Returns (model, config, run_args, task).
    """
    run_args = read_args(run_dir)
    task = get_task(run_args["task"])
    config = read_config(Path(run_dir) / "config.json", "run config")
    second_pass = second_pass_layers(run_args.get("sps_layers"), config.num_hidden_layers)
    model = load_trained(config, task.num_labels, run_args["model_type"],
                         checkpoint_path(run_dir, prefix, "encoder", criterion),
                         checkpoint_path(run_dir, prefix, "cls", criterion), second_pass)
    return model, config, run_args, task


def read_config(path, what):
    """The BertConfig in a json file; a missing or malformed one is a PeakdError naming it."""
    try:
        return BertConfig.from_json_file(path)
    except FileNotFoundError:
        raise PeakdError(f"{what} {path} does not exist") from None
    except (OSError, ValueError, TypeError) as e:
        raise PeakdError(f"{what} {path} is not a valid BERT config "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                         ) from None


def effective_layers(model):
    """How many layer applications one forward makes (2k for an SPS student)."""
    return len(model.bert.encoder.schedule)
