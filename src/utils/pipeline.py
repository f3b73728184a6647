"""Steps the scripts share: checking arguments against the model, loading splits, training a
student end to end, and turning user errors into one-line exits."""
import contextlib
import shlex
import sys
from pathlib import Path

from BERT.pytorch_pretrained_bert import TOKENIZERS, atomic_write
from BERT.pytorch_pretrained_bert.tokenization import TOKENIZER_CONFIG_NAME, VOCAB_NAME

from .args import apply_presets, check_common, task_output_dir
from .checkpoints import write_json
from .device import autocast, pick_device, set_seed
from .distill import LIVE_TEACHER, build_objective, teacher_run_dir
from .errors import Interrupted, PeakdError, warn
from .evaluation import predict
from .features import cached_features, convert_examples_to_features, examples_fingerprint
from .glue import get_task
from .modeling import build_student, load_tokenizer, resolve_bert_model
from .paths import check_dir, check_file, check_not_an_input, check_writable_dir
from .locks import folder_lock
from .runs import check_resume_args, finish_overwrite, prepare_output_dir, run_file, write_args
from .selection import check_select_metric, eval_splits, hold_out
from .summary import print_summary, training_lines
from . import parallel, teacher_outputs
from .train import train


def run_cli(parser, fn, argv=None):
    """Parses argv and runs fn(args); what a user can cause ends in one line on stderr.

    A PeakdError or an OSError (a folder that cannot be written, a full disk) is `error: ...`
    and exit 1; Ctrl-C is exit 130, during training with the command that continues the run.
    """
    args = parser.parse_args(argv)
    try:
        check_not_empty(args, {a.dest for a in parser._actions if a.required})
        return fn(args)
    except PeakdError as e:
        fail(str(e), 1)
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        fail(f"{where}{e.strerror or e}; check the path, its permissions and the free space", 1)
    except Interrupted as e:
        command = command_line(parser, argv)
        if e.resumable:
            fail(f"{e}; continue the run with: {command} --resume", 130)
        fail(f"{e}, before the first resume state was written (it is written at each "
             f"evaluation and every --save_steps); start again with: {command}", 130)
    except KeyboardInterrupt:
        fail("interrupted; files are written whole or not at all, so rerun the same command",
             130)


def fail(message, code):
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code) from None


def check_not_empty(args, required=()):
    """An empty flag value (`--bert_model ''`) would silently mean the current folder or no
    value; refuse it."""
    for name, value in vars(args).items():
        if isinstance(value, str) and not value.strip():
            fix = "pass a value" if name in required else "pass a value or leave the flag out"
            raise PeakdError(f"--{name} is empty; {fix}")


def command_line(parser, argv=None):
    """The command that reruns this one (as typed), without the flags --resume excludes."""
    if argv is None:
        head, argv = ["python", sys.argv[0]], sys.argv[1:]
    else:
        head = ["python", parser.prog]
    kept = [a for a in argv if a not in ("--resume", "--overwrite_output_dir")]
    return shlex.join(head + [str(a) for a in kept])


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


# a --max_seq_length below this leaves only a few word pieces of text per example
MIN_USEFUL_LENGTH = 8


def check_lengths(args, config, task):
    """--max_seq_length fits the model's positions and leaves room for text."""
    n = args.max_seq_length
    if n > config.max_positions:
        raise PeakdError(f"--max_seq_length {n} exceeds the model's {config.max_positions} "
                         "positions; lower it")
    # [CLS] A [SEP] (B [SEP]) for BERT, <s> A </s> (</s> B </s>) for MPNet
    specials = TOKENIZERS[config.model_type].num_special_tokens(
        task.processor.train.text_b is not None)
    if n <= specials:
        raise PeakdError(f"--max_seq_length {n} leaves no room for text: {task.name} inputs "
                         f"take {specials} special tokens; pass at least {MIN_USEFUL_LENGTH}")
    if n < MIN_USEFUL_LENGTH:
        warn(f"--max_seq_length {n} leaves {n - specials} word pieces per {task.name} example "
             f"after its {specials} special tokens; most texts will be cut short")


def check_data_dir(data_dir, task):
    """--data_dir must be a folder; the task's files in it are checked as they are read."""
    check_dir(data_dir, "--data_dir", f"pass the folder that holds {task.dir_name}/train.tsv, "
                                      "or run `bash preprocess.sh` to download GLUE")


def teacher_file(args, task, need_patient):
    """The --teacher_prediction path (relative to the task's output folder) or the default,
    which is then written into args (so args.json names the file the run read)."""
    if args.teacher_prediction:
        return check_file(task_output_dir(task.name, args.teacher_prediction),
                          "--teacher_prediction", "pass the file save_teacher_outputs.py wrote")
    path = teacher_outputs.find_default(task.name, need_patient)
    args.teacher_prediction = str(path)
    return path


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
    if num_labels is None:  # PTP checks its own 4-way task's metric
        check_select_metric(args, task)
    # --fp16 without CUDA is refused now, before the model and data are loaded and long before
    # the run folder is written; train() builds the same context again
    autocast(args, pick_device(args))
    check_data_dir(args.data_dir, task)
    check_writable_dir(task_output_dir(task.name, args.output_dir), "--output_dir")
    model_dir = resolve_bert_model(args.bert_model)
    load_model = None
    if args.load_model_dir:
        load_model = check_file(task_output_dir(task.name, args.load_model_dir),
                                "--load_model_dir", "pass an encoder checkpoint file such as "
                                "run-1/PTP.encoder_loss.pkl")
    set_seed(args.train_seed)
    model, config = build_student(model_dir, num_labels or task.num_labels,
                                  args.student_hidden_layers, args.model_type,
                                  args.layer_initialization, load_model, second_pass,
                                  swap_flip_prob)
    tokenizer = load_tokenizer(model_dir, config)
    check_lengths(args, config, task)
    data = load_splits(task, args.data_dir, ("train",) + task.dev_splits, tokenizer,
                       args.max_seq_length)
    return task, model_dir, tokenizer, model, config, data


def start_run(args, task, model_dir, config, prefix="BERT"):
    """Creates the run folder (refusing a finished run) and records args, config and vocab.

    --resume needs an unfinished run started with the same flags. Under torchrun every rank
    checks, rank 0 writes.
    """
    run_dir = prepare_output_dir(task_output_dir(task.name, args.output_dir),
                                 args.overwrite_output_dir and parallel.is_main(), prefix,
                                 args.resume)
    if args.resume:
        check_resume_args(run_dir, args, prefix)
    if not parallel.is_main():
        return run_dir
    write_args(run_dir, args, prefix)
    write_json(run_file(run_dir, "config.json", prefix), config.to_dict())
    # the casing travels with the vocabulary, so a cased model stays cased when the run folder
    # is read back (save_teacher_outputs.py, export_hf.py). PTP.py writes into the teacher's
    # folder: its copies are prefixed (PTP.vocab.txt) and never replace the teacher's.
    for name in (VOCAB_NAME, TOKENIZER_CONFIG_NAME):
        if (model_dir / name).is_file():
            blob = (model_dir / name).read_bytes()
            atomic_write(run_file(run_dir, name, prefix), lambda f, blob=blob: f.write(blob))
    finish_overwrite(run_dir)
    return run_dir


def output_lock(args, task):
    """The write lock of the run's --output_dir, held by rank 0 while the run starts and
    trains (utils/locks.py); the other ranks write nothing."""
    if not parallel.is_main():
        return contextlib.nullcontext()
    return folder_lock(task_output_dir(task.name, args.output_dir), "--output_dir")


def check_inputs_apart(args, task, model_dir, extra=None):
    """The run's --output_dir is none of its input folders (PTP.py, which writes into the
    teacher's folder by design, passes the teacher run in no `extra`)."""
    data = Path(args.data_dir)
    inputs = {f"--bert_model ({model_dir})": model_dir, f"--data_dir ({data})": data,
              f"the {task.name} data ({data / task.dir_name})": data / task.dir_name}
    if getattr(args, "load_model_dir", None):
        folder = task_output_dir(task.name, args.load_model_dir).parent
        inputs[f"the --load_model_dir checkpoint's run ({folder})"] = folder
    if getattr(args, "teacher_prediction", None):
        folder = task_output_dir(task.name, args.teacher_prediction).parent
        inputs[f"the --teacher_prediction file ({folder})"] = folder
    inputs.update(extra or {})
    check_not_an_input(task_output_dir(task.name, args.output_dir), "--output_dir", inputs)


def train_student(args, prefix="BERT", second_pass=None, swap_flip_prob=0.0):
    """finetune.py / finetune_ER.py: train a teacher or student (ft, kd or pkd) end to end."""
    apply_presets(check_common(args))
    task, model_dir, tokenizer, model, config, data = prepare_student(args, None, second_pass,
                                                                      swap_flip_prob)
    # read before training, so a missing test file fails now rather than after the whole run
    test_examples = task.get_examples(args.data_dir, "test") if args.do_predict else None
    record = teacher = None
    if args.train_type not in ("ft",) + tuple(LIVE_TEACHER) or \
            (args.train_type in LIVE_TEACHER and not args.teacher_dir):
        record = load_teacher(args, task, data, args.train_type == "pkd")
        teacher = record["splits"]
    data, teacher = hold_out(data, task, args, teacher)
    objective = build_objective(args, task, model, teacher and teacher["train"],
                                pick_device(args), record)
    live = objective.teacher is not None
    if live:
        check_same_family(objective.teacher.model.config, config)
    check_inputs_apart(args, task, model_dir, {"the teacher's run": teacher_run_dir(
        args, record)} if live else None)
    with output_lock(args, task):
        run_dir = start_run(args, task, model_dir, config)
        results = train(model, data["train"][1],
                        {s: data[s][1] for s in eval_splits(args, task)}, task, args, objective,
                        run_dir, prefix)
    if args.do_predict and parallel.is_main():
        write_json(run_dir / "test_predictions.json",
                   predict_test(args, task, model, tokenizer, test_examples))
    report_training(results, run_dir)
    return results


def check_same_family(teacher, student):
    """A teacher that runs on the student's token ids must read them the same way."""
    if (teacher.model_type, teacher.vocab_size) != (student.model_type, student.vocab_size):
        raise PeakdError(f"the teacher ({teacher.model_type}, vocabulary {teacher.vocab_size}) "
                         f"and the student ({student.model_type}, vocabulary "
                         f"{student.vocab_size}) tokenize differently; distil from a teacher "
                         "of the student's model family")


def report_training(results, run_dir):
    """The summary lines of a finished training run (rank 0 only: the others have no results)."""
    if results is not None:
        print_summary(training_lines(results, run_dir))


def predict_test(args, task, model, tokenizer, examples):
    """Predictions of the trained model on the test `examples` (GLUE test labels are
    placeholders)."""
    features = convert_examples_to_features(examples, tokenizer, args.max_seq_length, task)
    device = pick_device(args)
    logits = predict(model, features, args.eval_batch_size, device, autocast(args, device),
                     multiple=args.pad_to_multiple_of)
    if task.output_mode == "regression":
        values = logits.view(-1).tolist()
    else:
        values = [task.labels[i] for i in logits.argmax(-1).tolist()]
    return {"task": task.name, "guids": [ex.guid for ex in examples], "predictions": values}
