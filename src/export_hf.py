"""Exports a trained finetune.py / finetune_ER.py run as a standard transformers folder (BERT, or
MPNet for a run of an MPNet model).

    python src/export_hf.py --run_dir src/data/outputs/KD/MRPC/run-1/final_results \
        --export_dir exported/mrpc-sps-3
    python -c "from transformers import AutoModelForSequenceClassification as M; \
        M.from_pretrained('exported/mrpc-sps-3')"

An SPS student is written unrolled (2k plain layers, the Q/K swap baked into the second pass), so
transformers' plain BertForSequenceClassification (MPNetForSequenceClassification) reproduces its
logits. Details in utils/export.py.
"""

from utils.args import new_parser
from utils.export import export_run, selected_checkpoint
from utils.pipeline import run_cli
from utils.summary import print_summary


def build_parser():
    parser = new_parser(__doc__)
    parser.add_argument("--run_dir", required=True,
                        help="a finished finetune.py run folder (args.json, config.json, "
                             "vocab.txt, BERT.encoder_*.pkl, BERT.cls_*.pkl)")
    parser.add_argument("--export_dir", required=True, help="folder to write the model into")
    parser.add_argument("--criterion", default="acc", choices=("acc", "loss"),
                        help="which checkpoint to export (BERT.*_acc.pkl or BERT.*_loss.pkl)")
    parser.add_argument("--overwrite_export_dir", action="store_true",
                        help="allow writing into a folder that is not empty")
    return parser


def run(args):
    path = export_run(args.run_dir, args.export_dir, args.criterion, args.overwrite_export_dir)
    print_summary([f"done: exported {args.run_dir}; "
                   f"{selected_checkpoint(args.run_dir, args.criterion)}",
                   f"export folder: {path.resolve()}"])
    return path


def main(argv=None):
    return run_cli(build_parser(), run, argv)


if __name__ == "__main__":
    main()
