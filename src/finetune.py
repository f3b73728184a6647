"""Fine-tunes a teacher or trains a student on a GLUE task (pipeline steps 1 and 4).

    python src/finetune.py --task MRPC --train_type ft --model_type Original \
        --student_hidden_layers 12 --output_dir run-1
    python src/finetune.py --task MRPC --train_type pkd --model_type SPS \
        --student_hidden_layers 3 --load_model_dir run-1/PTP.encoder_loss.pkl \
        --output_dir run-1/final_results

--train_type ft | kd | pkd sets the loss (presets in utils/args.py; explicit flags win);
--model_type Original | SPS | SPS_no_shuffle sets the student's layer schedule.
"""
from utils.args import (add_distill_args, add_method_args, add_model_args, add_output_args,
                        add_task_args, add_teacher_file_args, add_train_args, new_parser)
from utils.pipeline import run_cli, train_student


def build_parser():
    parser = new_parser(__doc__)
    for add in (add_task_args, add_model_args, add_output_args, add_train_args,
                add_distill_args, add_teacher_file_args, add_method_args):
        add(parser)
    return parser


def main(argv=None):
    return run_cli(build_parser(), train_student, argv)


if __name__ == "__main__":
    main()
