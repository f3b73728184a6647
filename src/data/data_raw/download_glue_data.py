"""Download the GLUE tasks into <data_dir>/<TASK>/ in the 2019 GLUE TSV layout.

Usage: python download_glue_data.py [--data_dir DIR] [--tasks all|CoLA,MRPC,...] [--force]

Each download goes to a temporary file beside the task folder and is checked (HTTP status, size
against Content-Length, zip integrity) before it is unpacked into a temporary folder, which is
renamed into place only when the task is complete. A failed task therefore leaves nothing behind;
the script reports it on one line, goes on with the other tasks and exits 1 at the end.

MRPC is not on the GLUE mirror: it is built from the SentEval copy of msr_paraphrase_{train,test}.txt
and GLUE's list of dev id pairs, as the 2019 GLUE script did.
"""
import os
import shutil
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

from http_fetch import FetchError, checked_args, fetch

# src/, the import root of the project's shared helpers (the help formatter, the summary lines)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from utils.args import HelpFormatter, Parser  # noqa: E402
from utils.summary import print_summary  # noqa: E402

GLUE_BASE_URL = "https://dl.fbaipublicfiles.com/glue/data"
MRPC_BASE_URL = "https://dl.fbaipublicfiles.com/senteval/senteval_data"

# Folder names of the 2019 layout, in GLUE's order.
TASKS = ("CoLA", "SST-2", "MRPC", "QQP", "STS-B", "MNLI", "SNLI", "QNLI", "RTE", "WNLI", "diagnostic")

# Names the user may type besides the folder names (matched case-insensitively).
ALIASES = {"sst": "SST-2", "sst2": "SST-2", "sts": "STS-B", "stsb": "STS-B", "ax": "diagnostic"}

# The mirror keeps QQP and QNLI under the names of their fixed releases.
ARCHIVES = {"QQP": "QQP-clean.zip", "QNLI": "QNLIv2.zip", "diagnostic": "AX.tsv"}

MRPC_DEV_IDS = "mrpc_dev_ids.tsv"
MRPC_TRAIN = "msr_paraphrase_train.txt"
MRPC_TEST = "msr_paraphrase_test.txt"
MRPC_TEST_HEADER = b"index\t#1 ID\t#2 ID\t#1 String\t#2 String\n"



def default_data_dir():
    """The glue_data folder beside this script, unless the project's data variables say otherwise."""
    if os.environ.get("PEAKD_GLUE_DIR", "").strip():
        return Path(os.environ["PEAKD_GLUE_DIR"])
    if os.environ.get("PEAKD_DATA_DIR", "").strip():
        return Path(os.environ["PEAKD_DATA_DIR"]) / "data_raw" / "glue_data"
    return Path(__file__).resolve().parent / "glue_data"


def build_parser():
    parser = Parser(description="Download the GLUE data in the 2019 TSV layout.",
                    formatter_class=HelpFormatter)
    parser.add_argument("--data_dir", default=None,
                        help="where the <TASK>/ folders go (default: $PEAKD_GLUE_DIR, else "
                             "$PEAKD_DATA_DIR/data_raw/glue_data, else glue_data/ beside this script)")
    parser.add_argument("--tasks", default="all",
                        help="comma-separated task names or 'all' (case-insensitive): " + ", ".join(TASKS))
    parser.add_argument("--force", action="store_true", help="download again tasks that are already present")
    parser.add_argument("--base_url", default=None,
                        help=f"GLUE mirror (default: $PEAKD_GLUE_BASE_URL or {GLUE_BASE_URL})")
    parser.add_argument("--mrpc_base_url", default=None,
                        help=f"where msr_paraphrase_*.txt live (default: $PEAKD_MRPC_BASE_URL or {MRPC_BASE_URL})")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for a connection or for data before giving up (default: 60)")
    return parser


def parse_tasks(text):
    """The canonical task names in `text`, in GLUE's order; raises FetchError for an unknown one."""
    by_key = {name.lower(): name for name in TASKS}
    by_key.update(ALIASES)
    wanted = set()
    for raw in text.split(","):
        key = raw.strip().lower()
        if not key:
            continue
        if key == "all":
            wanted.update(TASKS)
        elif key in by_key:
            wanted.add(by_key[key])
        else:
            raise FetchError(f"unknown task '{raw.strip()}'; known tasks: {', '.join(TASKS)} (or 'all')")
    if not wanted:
        raise FetchError(f"no task given; known tasks: {', '.join(TASKS)} (or 'all')")
    return [name for name in TASKS if name in wanted]


def required_files(task):
    """Files whose presence makes a task folder complete."""
    if task == "MNLI":
        return ["train.tsv", "dev_matched.tsv", "dev_mismatched.tsv", "test_matched.tsv", "test_mismatched.tsv"]
    if task == "diagnostic":
        return ["diagnostic.tsv"]
    return ["train.tsv", "dev.tsv", "test.tsv"]


def is_complete(folder, task):
    return all((folder / name).is_file() for name in required_files(task))


def unpack_zip(archive, url, target):
    """Check `archive` and unpack it into `target`; raises FetchError for a damaged or foreign file."""
    try:
        with zipfile.ZipFile(archive) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise FetchError(f"{url} is a corrupt zip (bad CRC in {bad})")
            # extractall strips '..' and absolute parts from member names, so nothing lands outside target.
            zf.extractall(target)
    except zipfile.BadZipFile as exc:
        raise FetchError(f"{url} is not a valid zip ({exc})")
    except (zlib.error, EOFError, NotImplementedError, ValueError) as exc:
        raise FetchError(f"{url} is a corrupt zip ({exc})")


def content_root(unpacked):
    """The folder holding the task files: GLUE zips wrap them in one top folder (QQP-clean.zip in QQP/)."""
    entries = [p for p in unpacked.iterdir() if p.name != "__MACOSX" and not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return unpacked


def _mrpc_rows(data, name):
    """(fields, ...) of every data line of an msr_paraphrase file, header excluded; bytes kept as they are."""
    lines = data.splitlines()
    if not lines:
        raise FetchError(f"{name} is empty")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        # GLUE stripped each row before splitting it, so stray spaces or '\r' at the ends go away.
        line = line.strip()
        if not line:
            continue
        fields = line.split(b"\t")
        if len(fields) != 5:
            raise FetchError(f"{name} line {number} has {len(fields)} columns, expected 5")
        rows.append(fields)
    return lines[0], rows


def build_mrpc(train_txt, test_txt, dev_ids_tsv, out_dir):
    """Write GLUE's MRPC train.tsv, dev.tsv and test.tsv into `out_dir`.

    dev.tsv holds the rows of msr_paraphrase_train.txt whose (#1 ID, #2 ID) pair is in dev_ids.tsv,
    train.tsv the rest, both under the train file's own header line (BOM included). test.tsv is the
    test file with its Quality column replaced by a 0-based index. Everything is handled as bytes so
    the output matches GLUE's files byte for byte.
    """
    train_txt, test_txt, dev_ids_tsv, out_dir = map(Path, (train_txt, test_txt, dev_ids_tsv, out_dir))
    dev_ids = set()
    for number, line in enumerate(dev_ids_tsv.read_bytes().splitlines(), start=1):
        parts = line.strip().split(b"\t")
        if parts == [b""]:
            continue
        if len(parts) != 2:
            raise FetchError(f"{dev_ids_tsv.name} line {number} has {len(parts)} columns, expected 2")
        dev_ids.add((parts[0].strip(), parts[1].strip()))
    if not dev_ids:
        raise FetchError(f"{dev_ids_tsv.name} lists no dev id pairs")

    header, rows = _mrpc_rows(train_txt.read_bytes(), train_txt.name)
    train, dev, found = [header + b"\n"], [header + b"\n"], set()
    for fields in rows:
        pair = (fields[1], fields[2])
        if pair in dev_ids:
            dev.append(b"\t".join(fields) + b"\n")
            found.add(pair)
        else:
            train.append(b"\t".join(fields) + b"\n")
    if found != dev_ids:
        raise FetchError(f"{len(dev_ids) - len(found)} of the {len(dev_ids)} dev id pairs in "
                        f"{dev_ids_tsv.name} are not in {train_txt.name}")

    _, test_rows = _mrpc_rows(test_txt.read_bytes(), test_txt.name)
    test = [MRPC_TEST_HEADER]
    test.extend(b"\t".join([str(i).encode()] + fields[1:]) + b"\n" for i, fields in enumerate(test_rows))

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "train.tsv").write_bytes(b"".join(train))
    (out_dir / "dev.tsv").write_bytes(b"".join(dev))
    (out_dir / "test.tsv").write_bytes(b"".join(test))


def _stage_zip_task(task, work, base_url, timeout):
    archive_name = ARCHIVES.get(task, f"{task}.zip")
    url = f"{base_url}/{archive_name}"
    archive = work / (archive_name + ".part")
    fetch(url, archive, timeout)
    unpacked = work / "unpacked"
    unpack_zip(archive, url, unpacked)
    archive.unlink()
    return content_root(unpacked), url


def _stage_diagnostic(work, base_url, timeout):
    url = f"{base_url}/{ARCHIVES['diagnostic']}"
    folder = work / "diagnostic"
    folder.mkdir()
    part = work / "diagnostic.tsv.part"
    fetch(url, part, timeout)
    part.rename(folder / "diagnostic.tsv")
    return folder, url


def _stage_mrpc(work, base_url, mrpc_base_url, timeout):
    folder = work / "MRPC"
    folder.mkdir()
    sources = [(f"{mrpc_base_url}/{MRPC_TRAIN}", MRPC_TRAIN),
               (f"{mrpc_base_url}/{MRPC_TEST}", MRPC_TEST),
               (f"{base_url}/{MRPC_DEV_IDS}", "dev_ids.tsv")]
    for url, name in sources:
        part = work / (name + ".part")
        fetch(url, part, timeout)
        part.rename(folder / name)
    build_mrpc(folder / MRPC_TRAIN, folder / MRPC_TEST, folder / "dev_ids.tsv", folder)
    return folder, "the MRPC build"


def download_task(task, data_dir, base_url, mrpc_base_url, timeout):
    """Fetch one task into a private temporary folder in data_dir, then rename it to data_dir/<task>."""
    final = data_dir / task
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{task}.tmp-", dir=data_dir))
    except OSError as exc:
        raise FetchError(f"cannot write under {data_dir}: {exc.strerror or exc}")
    try:
        if task == "MRPC":
            folder, source = _stage_mrpc(work, base_url, mrpc_base_url, timeout)
        elif task == "diagnostic":
            folder, source = _stage_diagnostic(work, base_url, timeout)
        else:
            folder, source = _stage_zip_task(task, work, base_url, timeout)
        missing = [name for name in required_files(task) if not (folder / name).is_file()]
        if missing:
            raise FetchError(f"{source} does not contain {', '.join(missing)}")
        if final.exists():
            # Moved aside rather than deleted first, so it can be put back if the swap fails.
            previous = work / "previous"
            final.rename(previous)
            try:
                folder.rename(final)
            except OSError:
                previous.rename(final)
                raise
        else:
            folder.rename(final)
    except OSError as exc:
        raise FetchError(f"cannot write under {data_dir}: {exc.strerror or exc}")
    finally:
        # Also runs on Ctrl-C, so an interrupted download leaves no partial files.
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        tasks = parse_tasks(args.tasks)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    timeout, data_dir = checked_args(args.timeout, args.data_dir, "--data_dir", default_data_dir)
    base_url = (args.base_url or os.environ.get("PEAKD_GLUE_BASE_URL") or GLUE_BASE_URL).rstrip("/")
    mrpc_base_url = (args.mrpc_base_url or os.environ.get("PEAKD_MRPC_BASE_URL") or MRPC_BASE_URL).rstrip("/")
    if data_dir.exists() and not data_dir.is_dir():
        print(f"error: --data_dir {data_dir} is a file, expected a folder; choose another path",
              file=sys.stderr)
        sys.exit(1)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"error: cannot create data folder {data_dir}: {exc.strerror or exc}", file=sys.stderr)
        sys.exit(1)

    failed, done, skipped = [], [], []
    for task in tasks:
        folder = data_dir / task
        if not args.force and is_complete(folder, task):
            print(f"skip: {task} is already in {folder} (use --force to download it again)")
            skipped.append(task)
            continue
        print(f"downloading {task} ...", flush=True)
        try:
            download_task(task, data_dir, base_url, mrpc_base_url, timeout)
        except KeyboardInterrupt:
            print(f"error: interrupted while downloading {task}; nothing of it was kept, and the "
                  "tasks done before are complete: rerun the same command to go on",
                  file=sys.stderr)
            sys.exit(130)
        except FetchError as exc:
            print(f"error: task {task}: {exc}", file=sys.stderr, flush=True)
            failed.append(task)
            continue
        print(f"done: {task} -> {folder}", flush=True)
        done.append(task)
    print_summary([f"done: downloaded {', '.join(done) or 'no task'}"
                   + (f"; already there: {', '.join(skipped)}" if skipped else "")
                   + (f"; failed: {', '.join(failed)}" if failed else ""),
                   f"data folder: {data_dir.resolve()}"])
    if failed:
        print(f"error: {len(failed)} of {len(tasks)} tasks failed: {', '.join(failed)}; without "
              "the internet, pass the scripts --data_dir <a folder holding <TASK>/train.tsv>",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
