"""Trains an SPS student with the SPS-specific knobs (README: Training types and presets).

Same flags and outputs as `finetune.py --model_type SPS`, plus --sps_layers (which physical
layers the second pass re-runs; default all, the original 6-layer student re-ran 4,5,6) and
--swap_prob (random flips of the Q/K swap during training; evaluation never flips).

    python src/finetune_ER.py --task MRPC --train_type pkd --student_hidden_layers 6 \
        --sps_layers 4,5,6 --output_dir run-1/er
"""
from utils.args import (add_distill_args, add_method_args, add_model_args, add_output_args,
                        add_sps_args, add_task_args, add_teacher_file_args, add_train_args,
                        new_parser)
from utils.errors import PeakdError
from utils.modeling import second_pass_layers
from utils.pipeline import run_cli, train_student


def build_parser():
    parser = new_parser(__doc__)
    for add in (add_task_args, add_model_args, add_output_args, add_train_args,
                add_distill_args, add_teacher_file_args, add_method_args, add_sps_args):
        add(parser)
    parser.set_defaults(model_type="SPS")
    return parser


def run(args):
    if args.model_type == "Original":
        raise PeakdError("finetune_ER.py trains SPS students: use --model_type SPS or "
                         "SPS_no_shuffle (or finetune.py for a plain one)")
    if not 0.0 <= args.swap_prob <= 1.0:
        raise PeakdError(f"--swap_prob {args.swap_prob} must be in [0, 1]")
    if args.swap_prob > 0 and args.model_type == "SPS_no_shuffle":
        raise PeakdError(f"--swap_prob {args.swap_prob} flips the Q/K swap that "
                         "--model_type SPS_no_shuffle leaves out; use --model_type SPS, or drop "
                         "--swap_prob")
    return train_student(args, second_pass=second_pass_layers(args.sps_layers,
                                                              args.student_hidden_layers),
                         swap_flip_prob=args.swap_prob)


def main(argv=None):
    return run_cli(build_parser(), run, argv)


if __name__ == "__main__":
    main()
