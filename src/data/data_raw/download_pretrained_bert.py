"""Download a pretrained BERT (config.json, vocab.txt, pytorch_model.bin) into models/pretrained/<name>/.

Usage: python download_pretrained_bert.py [--name bert-base-uncased] [--output_dir DIR] [--force]

Every file goes to a temporary folder beside the model folder and is checked against the size the
server announced; the folder is then checked as a model (the config parses, the vocabulary has
the special tokens, the weights load) and renamed into place only then, so a failure leaves
nothing half-written. Errors are reported on one line and the exit status is 1.
"""
import os
import sys
from pathlib import Path

from http_fetch import FetchError, checked_args, fetch
from model_folder import install_folder, run_install

# src/, the import root of the project's shared helpers (the help formatter, the summary lines)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from utils.args import HelpFormatter, Parser  # noqa: E402
from utils.summary import print_summary  # noqa: E402

DEFAULT_NAME = "bert-base-uncased"
DEFAULT_FILES = ("config.json", "vocab.txt", "pytorch_model.bin")
HF_URL = "https://huggingface.co/{name}/resolve/main"

def default_output_dir():
    """models/pretrained under src/data, unless the project's data variables say otherwise."""
    if os.environ.get("PEAKD_PRETRAINED_DIR", "").strip():
        return Path(os.environ["PEAKD_PRETRAINED_DIR"])
    if os.environ.get("PEAKD_DATA_DIR", "").strip():
        return Path(os.environ["PEAKD_DATA_DIR"]) / "models" / "pretrained"
    return Path(__file__).resolve().parents[1] / "models" / "pretrained"


def build_parser():
    parser = Parser(description="Download a pretrained BERT checkpoint.",
                    formatter_class=HelpFormatter)
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"model name and folder name (default: {DEFAULT_NAME})")
    parser.add_argument("--output_dir", default=None,
                        help="parent of the <name>/ folder (default: $PEAKD_PRETRAINED_DIR, else "
                             "$PEAKD_DATA_DIR/models/pretrained, else src/data/models/pretrained)")
    parser.add_argument("--base_url", default=None,
                        help="where the files are (default: $PEAKD_BERT_BASE_URL, else "
                             + HF_URL.format(name="<name>") + ")")
    parser.add_argument("--files", default=",".join(DEFAULT_FILES),
                        help="comma-separated file names to fetch (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="download again a model that is already present")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for a connection or for data before giving up (default: 60)")
    return parser


def download_model(name, files, output_dir, base_url, timeout):
    """Fetches every file into a temporary folder in output_dir, checks it as a model, then
    renames it to output_dir/<name> (model_folder.install_folder)."""
    def fill(staged, _work):
        for file_name in files:
            print(f"downloading {base_url}/{file_name} ...", flush=True)
            fetch(f"{base_url}/{file_name}", staged / file_name, timeout)

    return install_folder(output_dir, name, fill)


def main(argv=None):
    args = build_parser().parse_args(argv)
    name = args.name.strip().strip("/")
    files = [f.strip() for f in args.files.split(",") if f.strip()]
    if not name or not files:
        print("error: --name and --files must not be empty", file=sys.stderr)
        sys.exit(1)
    # The folder name drops any organisation prefix ("google-bert/bert-base-uncased" -> bert-base-uncased).
    folder_name = name.rsplit("/", 1)[-1]
    timeout, output_dir = checked_args(args.timeout, args.output_dir, "--output_dir",
                                       default_output_dir)
    base_url = (args.base_url or os.environ.get("PEAKD_BERT_BASE_URL") or HF_URL.format(name=name)).rstrip("/")

    final = output_dir / folder_name
    if not args.force and all((final / f).is_file() and (final / f).stat().st_size > 0 for f in files):
        print(f"skip: {folder_name} is already in {final} (use --force to download it again)")
        print_summary([f"done: {name} was already there", f"model folder: {final.resolve()}"])
        return
    run_install(folder_name, output_dir,
                lambda: download_model(folder_name, files, output_dir, base_url, timeout),
                f"done: downloaded {name} ({', '.join(files)})")


if __name__ == "__main__":
    main()
