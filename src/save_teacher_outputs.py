"""Runs a trained teacher over a task's splits and saves its predictions (pipeline step 2).

    python src/save_teacher_outputs.py --task MRPC --teacher_dir run-1

Writes `<TASK>_patient_kd_teacher_<L>layer_result_summary.pkl` (`_normal_` with
--no_layer_features) into the task's output folder: logits, pooled output and every layer's
[CLS] vector for train, dev (and test when present, without labels), in file order. The file's
path and schema belong to utils/teacher_outputs.py.
"""
from pathlib import Path

from utils import teacher_outputs
from utils.args import add_task_args, check_positive, new_parser, task_output_dir
from utils.device import autocast, pick_device
from utils.errors import PeakdError
from utils.evaluation import collect_outputs, score
from utils.features import examples_fingerprint
from utils.glue import get_task
from utils.modeling import effective_layers, load_tokenizer, load_trained_run
from utils.paths import check_dir, check_writable_dir
from utils.pipeline import check_data_dir, check_lengths, load_splits, run_cli
from utils.summary import metrics_text, print_summary


def build_parser():
    parser = new_parser(__doc__)
    add_task_args(parser, max_seq_length=None)
    g = parser.add_argument_group("teacher")
    g.add_argument("--teacher_dir", required=True,
                   help="the teacher's finetune.py run folder (relative: under the task's "
                        "output folder)")
    g.add_argument("--teacher_criterion", default="acc", choices=("acc", "loss"),
                   help="which of the run's checkpoints to use (BERT.*_acc.pkl or *_loss.pkl)")
    g.add_argument("--output_dir", default=None,
                   help="folder for the teacher file, made if missing (default: the task's "
                        "output folder)")
    g.add_argument("--no_layer_features", action="store_true",
                   help="skip per-layer [CLS] vectors (writes the smaller `_normal_` file; "
                        "enough for kd and PTP, not for pkd)")
    return parser


def run(args):
    task = get_task(args.task)
    teacher_dir = task_output_dir(task.name, args.teacher_dir)
    folder = task_output_dir(task.name, args.output_dir) if args.output_dir else None
    check_positive(args, ("eval_batch_size", "max_seq_length", "pad_to_multiple_of"))
    check_dir(teacher_dir, "--teacher_dir", "pass the output folder of a finetune.py run")
    check_data_dir(args.data_dir, task)
    model, config, run_args, run_task = load_trained_run(teacher_dir, args.teacher_criterion)
    if run_task.name != task.name:
        raise PeakdError(f"--teacher_dir {teacher_dir} holds a {run_task.name} teacher, not a "
                         f"{task.name} one; pass the run of a {task.name} teacher")
    layers = not args.no_layer_features
    path = teacher_outputs.default_path(task.name, effective_layers(model), layers, folder)
    check_writable_dir(path.parent, "--output_dir")
    teacher_outputs.check_owner(path, teacher_dir)
    if args.max_seq_length is None:
        args.max_seq_length = run_args["max_seq_length"]
    check_lengths(args, config, task)
    tokenizer = load_tokenizer(teacher_dir, config, "--teacher_dir")
    has_test = (Path(args.data_dir) / task.dir_name / "test.tsv").is_file()
    splits = ("train",) + task.dev_splits + (("test",) if has_test else ())
    data = load_splits(task, args.data_dir, splits, tokenizer, args.max_seq_length)
    device = pick_device(args)
    model.to(device)
    entries = {}
    for split, (examples, features) in data.items():
        out = collect_outputs(model, features, args.eval_batch_size, device,
                              autocast(args, device), args.pad_to_max_length, layers,
                              args.pad_to_multiple_of)
        metrics = {}
        if features.labels is not None:
            metrics = score(task, out["logits"], features.labels)
        entries[split] = teacher_outputs.make_split(
            examples_fingerprint(examples), out["logits"], out["pooled"], out.get("layer_cls"),
            features.labels, features.input_ids, features.lengths, metrics)
    teacher_outputs.save(path, task.name, effective_layers(model), args.max_seq_length,
                         teacher_dir, entries)
    dev = [f"{split} {metrics_text(entries[split]['metrics'], task.main_metric)}"
           for split in task.dev_splits]
    print_summary([f"done: {task.name} teacher outputs of {teacher_dir} "
                   f"(BERT.*_{args.teacher_criterion}.pkl); " + "; ".join(dev),
                   f"teacher file: {path.resolve()}"])
    return path


def main(argv=None):
    return run_cli(build_parser(), run, argv)


if __name__ == "__main__":
    main()
