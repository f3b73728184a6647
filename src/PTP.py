"""Pretrains a student on PTP labels made from the teacher's predictions (pipeline step 3).

    python src/PTP.py --task MRPC --model_type SPS --student_hidden_layers 3 --output_dir run-1

Each train (and dev) example gets a 4-way label: the teacher confidently correct, unconfidently
correct, confidently wrong or unconfidently wrong (thresholds t1, t2 per task, or `median`).
The student learns them with cross-entropy on a 4-way head; finetune.py --load_model_dir
run-1/PTP.encoder_loss.pkl then starts from its encoder with a fresh task head.
"""
import dataclasses

from utils.args import (add_model_args, add_output_args, add_ptp_args, add_task_args,
                        add_teacher_file_args, add_train_args, check_common, new_parser)
from utils.errors import PeakdError
from utils.glue import get_task
from utils.losses import task_loss
from utils.pipeline import (check_inputs_apart, load_teacher, output_lock, prepare_student,
                            report_training, run_cli, start_run)
from utils.ptp import (PTP_LABEL_NAMES, PTP_NUM_LABELS, parse_thresholds_flag, relabel_splits,
                       resolve_thresholds)
from utils.selection import check_select_metric, eval_splits, hold_out
from utils.train import train


def build_parser():
    parser = new_parser(__doc__)
    for add in (add_task_args, add_model_args, add_output_args, add_train_args,
                add_teacher_file_args, add_ptp_args):
        add(parser)
    return parser


def run(args):
    check_common(args)
    if get_task(args.task).output_mode != "classification":
        raise PeakdError(f"PTP needs a classification task; {args.task} is a regression task "
                         "(train its student with finetune.py, without PTP)")
    parse_thresholds_flag(args.ptp_thresholds)  # a bad value fails before anything is loaded
    ptp_task = dataclasses.replace(get_task(args.task), labels=PTP_LABEL_NAMES,
                                   main_metric="acc", metric_names=("acc",))
    check_select_metric(args, ptp_task)
    task, model_dir, _, model, config, data = prepare_student(args, PTP_NUM_LABELS)
    teacher = load_teacher(args, task, data, need_patient=False,
                           splits=("train",) + task.dev_splits)["splits"]
    # with --select train_slice the slice's PTP labels (from the teacher's predictions on the
    # held-out examples) choose the checkpoint; thresholds come from the training part
    data, teacher = hold_out(data, task, args, teacher)
    splits = ("train",) + eval_splits(args, task)
    train_logits, train_gold = teacher["train"]["logits"], data["train"][1].labels
    args.ptp_thresholds_used = list(resolve_thresholds(task.name, args.ptp_thresholds,
                                                       train_logits, train_gold))
    relabelled, args.ptp_label_counts = relabel_splits(
        {s: teacher[s]["logits"] for s in splits}, {s: data[s][1] for s in splits},
        *args.ptp_thresholds_used)
    for split, counts in args.ptp_label_counts.items():
        print(f"PTP labels {split}: " + ", ".join(f"{n} {name}" for n, name in
                                                  zip(counts, PTP_LABEL_NAMES)))
    ptp_task = dataclasses.replace(ptp_task, name=f"{task.name}-PTP")
    args.train_type = "ptp"
    check_inputs_apart(args, task, model_dir)
    with output_lock(args, task):
        run_dir = start_run(args, task, model_dir, config, prefix="PTP")
        results = train(model, relabelled["train"], {s: relabelled[s] for s in splits[1:]},
                        ptp_task, args,
                        lambda out, batch: task_loss(out.logits, batch["labels"], False),
                        run_dir, prefix="PTP")
    report_training(results, run_dir)
    return results


def main(argv=None):
    return run_cli(build_parser(), run, argv)


if __name__ == "__main__":
    main()
