"""Steps the scripts share: checking arguments against the model, loading splits, training a
student end to end, and turning user errors into one-line exits."""
import sys

from BERT.pytorch_pretrained_bert.tokenization import TOKENIZER_CONFIG_NAME, VOCAB_NAME

from .args import apply_presets, check_common, task_output_dir
from .checkpoints import write_json
from .distill import build_objective
from .errors import PeakdError
from .features import cached_features, convert_examples_to_features, examples_fingerprint
from .glue import get_task
from .modeling import build_student, load_tokenizer, resolve_bert_model
from .runs import check_resume_args, prepare_output_dir, run_file, write_args
from . import parallel, teacher_outputs
from .train import autocast, pick_device, predict, set_seed, train


def run_cli(parser, fn, argv=None):
    """Parses argv and runs fn(args); a PeakdError becomes `error: ...` on stderr and exit 1."""
    args = parser.parse_args(argv)
    try:
        return fn(args)
    except PeakdError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None


def load_splits(task, data_dir, splits, tokenizer, max_seq_length):
    """{split: (examples, Features)} for the named splits, tokenized once (or read from the
    features cache when PEAKD_FEATURE_CACHE names one)."""
    out = {}
    for split in splits:
        examples = task.get_examples(data_dir, split)
        if not examples:
            raise PeakdError(f"the {split} split of {task.name} in {data_dir} is empty")
        out[split] = (examples, cached_features(examples, tokenizer, max_seq_length, task))
    return out


def check_lengths(args, config):
    if args.max_seq_length > config.max_position_embeddings:
        raise PeakdError(f"--max_seq_length {args.max_seq_length} exceeds the model's "
                         f"{config.max_position_embeddings} positions; lower it")


def teacher_file(args, task, need_patient):
    """The --teacher_prediction path (relative to the task's output folder) or the default."""
    if args.teacher_prediction:
        return task_output_dir(task.name, args.teacher_prediction)
    return teacher_outputs.find_default(task.name, need_patient)


def load_teacher(args, task, data, need_patient, splits=("train",)):
    """The checked teacher file for the given splits of `data` ({split: (examples, features)})."""
    expected = {s: (len(data[s][0]), examples_fingerprint(data[s][0])) for s in splits}
    return teacher_outputs.load(teacher_file(args, task, need_patient), task.name, expected,
                                args.max_seq_length, need_patient)


def prepare_student(args, num_labels=None, second_pass=None, swap_flip_prob=0.0):
    """Checks arguments and builds everything a training run needs, writing nothing.

    Returns (task, model_dir, tokenizer, model, config, data) with data {split: (examples,
    Features)} for train and the task's dev splits.
    """
    task = get_task(args.task)
    # --fp16 without CUDA is refused now, before the model and data are loaded and long before
    # the run folder is written; train() builds the same context again
    autocast(args, pick_device(args))
    model_dir = resolve_bert_model(args.bert_model)
    tokenizer = load_tokenizer(model_dir)
    load_model = (task_output_dir(task.name, args.load_model_dir) if args.load_model_dir
                  else None)
    set_seed(args.train_seed)
    model, config = build_student(model_dir, num_labels or task.num_labels,
                                  args.student_hidden_layers, args.model_type,
                                  args.layer_initialization, load_model, second_pass,
                                  swap_flip_prob)
    check_lengths(args, config)
    data = load_splits(task, args.data_dir, ("train",) + task.dev_splits, tokenizer,
                       args.max_seq_length)
    return task, model_dir, tokenizer, model, config, data


def start_run(args, task, model_dir, config, prefix="BERT"):
    """Creates the run folder (refusing a finished run) and records args, config and vocab.

    --resume needs an unfinished run started with the same flags. Under torchrun every rank
    checks, rank 0 writes.
    """
    run_dir = prepare_output_dir(task_output_dir(task.name, args.output_dir),
                                 args.overwrite_output_dir, prefix, args.resume)
    if args.resume:
        check_resume_args(run_dir, args, prefix)
    if not parallel.is_main():
        return run_dir
    write_args(run_dir, args, prefix)
    config.to_json_file(run_file(run_dir, "config.json", prefix))
    # the casing travels with the vocabulary, so a cased model stays cased when the run folder
    # is read back (save_teacher_outputs.py, export_hf.py)
    for name in (VOCAB_NAME, TOKENIZER_CONFIG_NAME):
        if (model_dir / name).is_file():
            (run_dir / name).write_bytes((model_dir / name).read_bytes())
    return run_dir


def train_student(args, prefix="BERT", second_pass=None, swap_flip_prob=0.0):
    """finetune.py / finetune_ER.py: train a teacher or student (ft, kd or pkd) end to end."""
    apply_presets(check_common(args))
    task, model_dir, tokenizer, model, config, data = prepare_student(args, None, second_pass,
                                                                      swap_flip_prob)
    # read before training, so a missing test file fails now rather than after the whole run
    test_examples = task.get_examples(args.data_dir, "test") if args.do_predict else None
    teacher = None
    if args.train_type != "ft":
        teacher = load_teacher(args, task, data, args.train_type == "pkd")["splits"]["train"]
    objective, needs_layers = build_objective(args, task, model, teacher, pick_device(args))
    run_dir = start_run(args, task, model_dir, config)
    results = train(model, data["train"][1], {s: data[s][1] for s in task.dev_splits}, task,
                    args, objective, run_dir, prefix, needs_layers)
    if args.do_predict and parallel.is_main():
        write_json(run_dir / "test_predictions.json",
                   predict_test(args, task, model, tokenizer, test_examples))
    return results


def predict_test(args, task, model, tokenizer, examples):
    """Predictions of the trained model on the test `examples` (GLUE test labels are
    placeholders)."""
    features = convert_examples_to_features(examples, tokenizer, args.max_seq_length, task)
    device = pick_device(args)
    logits = predict(model, features, args.eval_batch_size, device, autocast(args, device))
    if task.output_mode == "regression":
        values = logits.view(-1).tolist()
    else:
        values = [task.labels[i] for i in logits.argmax(-1).tolist()]
    return {"task": task.name, "guids": [ex.guid for ex in examples], "predictions": values}
