"""The GLUE and BERT downloaders against a local HTTP server: success, skip/--force, every failure
mode (each must leave no partial folder or temp file), the MRPC builder and preprocess.sh."""
import importlib.util
import io
import os
import socket
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "src" / "data" / "data_raw"
# the scripts import their shared http_fetch module from their own folder, as when run directly
sys.path.insert(0, str(SCRIPTS))


def _load(name):
    spec = importlib.util.spec_from_file_location(f"peakd_test_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def glue():
    return _load("download_glue_data")


@pytest.fixture(scope="module")
def bert():
    return _load("download_pretrained_bert")


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        kind, body = route
        if kind == "hang":
            # Holds the request open until teardown so the client's read timeout fires.
            self.server.release.wait(10)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # "truncated" announces the full size but closes the connection half-way.
        self.wfile.write(body if kind == "ok" else body[: len(body) // 2])

    def log_message(self, *args):
        pass


class _Server:
    def __init__(self):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.routes = {}
        self.httpd.release = threading.Event()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    def add(self, path, body=b"", kind="ok"):
        self.httpd.routes[path] = (kind, body)


@pytest.fixture
def server():
    srv = _Server()
    srv.thread.start()
    yield srv
    srv.httpd.release.set()
    srv.httpd.shutdown()
    srv.httpd.server_close()
    srv.thread.join(5)


@pytest.fixture
def dead_url():
    """A URL on a port where nothing listens, so connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def make_zip(files, top=None, stored=False):
    buf = io.BytesIO()
    method = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in files.items():
            zf.writestr(f"{top}/{name}" if top else name, data)
    return buf.getvalue()


def task_zip(task, tag=b"v1", top=None):
    files = {f"{split}.tsv": b"sentence\tlabel\n" + tag + b" " + split.encode() + b"\t1\n"
             for split in ("train", "dev", "test")}
    return make_zip(files, top=top or task)


def run_main(module, argv):
    """main(argv)'s exit code: 0 when it returns, else the SystemExit code."""
    try:
        module.main([str(a) for a in argv])
    except SystemExit as exc:
        return exc.code
    return 0


def error_lines(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


# --- GLUE: success, skip and --force -----------------------------------------------------------

def test_zip_task_downloads_and_unpacks(glue, server, tmp_path, capsys):
    server.add("/RTE.zip", task_zip("RTE"))
    data = tmp_path / "glue"
    assert run_main(glue, ["--data_dir", data, "--tasks", "rte", "--base_url", server.url]) == 0
    assert sorted(os.listdir(data)) == ["RTE"]
    assert sorted(os.listdir(data / "RTE")) == ["dev.tsv", "test.tsv", "train.tsv"]
    assert (data / "RTE" / "dev.tsv").read_bytes() == b"sentence\tlabel\nv1 dev\t1\n"
    assert error_lines(capsys) == []


def test_mirror_names_and_diagnostic(glue, server, tmp_path, monkeypatch):
    # QQP and QNLI live under their fixed-release names and unpack into folders of those names' tasks.
    server.add("/QQP-clean.zip", task_zip("QQP"))
    server.add("/QNLIv2.zip", task_zip("QNLI"))
    server.add("/AX.tsv", b"index\tsentence1\tsentence2\n0\ta\tb\n")
    monkeypatch.setenv("PEAKD_GLUE_BASE_URL", server.url)
    data = tmp_path / "glue"
    assert run_main(glue, ["--data_dir", data, "--tasks", "QQP, qnli ,AX"]) == 0
    assert sorted(os.listdir(data)) == ["QNLI", "QQP", "diagnostic"]
    assert (data / "diagnostic" / "diagnostic.tsv").read_bytes().startswith(b"index\t")
    assert (data / "QQP" / "train.tsv").is_file()


def test_existing_task_is_skipped(glue, server, tmp_path, capsys):
    server.add("/RTE.zip", task_zip("RTE"))
    data = tmp_path / "glue"
    assert run_main(glue, ["--data_dir", data, "--tasks", "RTE", "--base_url", server.url]) == 0
    del server.httpd.routes["/RTE.zip"]
    capsys.readouterr()
    assert run_main(glue, ["--data_dir", data, "--tasks", "RTE", "--base_url", server.url]) == 0
    assert "skip: RTE" in capsys.readouterr().out
    assert (data / "RTE" / "dev.tsv").read_bytes().endswith(b"v1 dev\t1\n")


def test_force_replaces_and_failed_force_keeps_old(glue, server, tmp_path):
    data = tmp_path / "glue"
    server.add("/RTE.zip", task_zip("RTE", b"v1"))
    assert run_main(glue, ["--data_dir", data, "--tasks", "RTE", "--base_url", server.url]) == 0
    server.add("/RTE.zip", task_zip("RTE", b"v2"))
    assert run_main(glue, ["--data_dir", data, "--tasks", "RTE", "--base_url", server.url, "--force"]) == 0
    assert (data / "RTE" / "dev.tsv").read_bytes().endswith(b"v2 dev\t1\n")
    server.add("/RTE.zip", b"not a zip at all")
    assert run_main(glue, ["--data_dir", data, "--tasks", "RTE", "--base_url", server.url, "--force"]) == 1
    assert (data / "RTE" / "dev.tsv").read_bytes().endswith(b"v2 dev\t1\n")
    assert sorted(os.listdir(data)) == ["RTE"]


# --- GLUE: failures ------------------------------------------------------------------------------

def _corrupt_crc_zip():
    good = make_zip({"train.tsv": b"A" * 200, "dev.tsv": b"d\n", "test.tsv": b"t\n"}, top="RTE", stored=True)
    at = good.index(b"A" * 200) + 100
    return good[:at] + b"B" + good[at + 1:]


FAILURES = {
    "404": (None, None, "HTTP 404"),
    "truncated": ("truncated", lambda: task_zip("RTE"), "truncated"),
    "bad_crc": ("ok", _corrupt_crc_zip, "corrupt zip"),
    "not_zip": ("ok", lambda: b"<html>moved</html>", "not a valid zip"),
    "cut_zip": ("ok", lambda: task_zip("RTE")[:-30], "not a valid zip"),
    "empty": ("ok", lambda: b"", "empty file"),
    "incomplete_task": ("ok", lambda: make_zip({"train.tsv": b"x\n"}, top="RTE"), "does not contain dev.tsv"),
    "timeout": ("hang", lambda: b"", "timed out"),
}


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_failure_leaves_nothing_and_names_task(glue, server, tmp_path, capsys, case):
    kind, body, reason = FAILURES[case]
    if kind is not None:
        server.add("/RTE.zip", body(), kind)
    data = tmp_path / "glue"
    code = run_main(glue, ["--data_dir", data, "--tasks", "RTE", "--base_url", server.url, "--timeout", "0.3"])
    assert code == 1
    lines = error_lines(capsys)
    assert len(lines) == 2, lines
    assert lines[0].startswith("error: task RTE: ") and reason in lines[0], lines[0]
    assert lines[1].startswith("error: 1 of 1 tasks failed: RTE; without the internet")
    assert os.listdir(data) == []


def test_refused_connection(glue, dead_url, tmp_path, capsys):
    data = tmp_path / "glue"
    assert run_main(glue, ["--data_dir", data, "--tasks", "WNLI", "--base_url", dead_url]) == 1
    first = error_lines(capsys)[0]
    assert first.startswith(f"error: task WNLI: download of {dead_url}/WNLI.zip failed: ")
    assert "refused" in first.lower()
    assert os.listdir(data) == []


def test_one_failure_does_not_stop_the_others(glue, server, tmp_path, capsys):
    server.add("/WNLI.zip", task_zip("WNLI"))
    data = tmp_path / "glue"
    assert run_main(glue, ["--data_dir", data, "--tasks", "RTE,WNLI,CoLA", "--base_url", server.url]) == 1
    assert sorted(os.listdir(data)) == ["WNLI"]
    assert error_lines(capsys)[-1].startswith("error: 2 of 3 tasks failed: CoLA, RTE;")


def test_unknown_task_is_one_line_error(glue, tmp_path, capsys):
    assert run_main(glue, ["--data_dir", tmp_path / "glue", "--tasks", "RTE,BoolQ"]) == 1
    lines = error_lines(capsys)
    assert len(lines) == 1
    assert "unknown task 'BoolQ'" in lines[0] and "CoLA" in lines[0] and "diagnostic" in lines[0]
    assert not (tmp_path / "glue").exists()


def test_task_names_are_case_insensitive(glue):
    assert glue.parse_tasks("rte,SST,sts-b,Mrpc") == ["SST-2", "MRPC", "STS-B", "RTE"]
    assert glue.parse_tasks("ALL") == list(glue.TASKS)


def test_default_data_dir_is_beside_the_script(glue, monkeypatch):
    monkeypatch.delenv("PEAKD_GLUE_DIR", raising=False)
    monkeypatch.delenv("PEAKD_DATA_DIR", raising=False)
    assert glue.default_data_dir() == SCRIPTS / "glue_data"


# --- MRPC ----------------------------------------------------------------------------------------

BOM_HEADER = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n".encode()
MSR_TRAIN = BOM_HEADER + (
    b"1\t10\t11\tA cat sat.\tA cat was sitting.\n"
    b"0\t20\t21\tIt rained.\tThe sun shone.\n"
    b"1\t30\t31\tHe left.\tHe went away.\n"
    b"0\t40\t41\tCaf\xc3\xa9 open.\tCaf\xc3\xa9 closed.\n"
)
MSR_TEST = BOM_HEADER + b"1\t50\t51\tYes.\tIndeed.\n0\t60\t61\tUp.\tDown.\n"
DEV_IDS = b"20\t21\n40\t41\n"


def test_mrpc_is_built_from_raw_files(glue, server, tmp_path):
    server.add("/glue/mrpc_dev_ids.tsv", DEV_IDS)
    server.add("/senteval/msr_paraphrase_train.txt", MSR_TRAIN)
    server.add("/senteval/msr_paraphrase_test.txt", MSR_TEST)
    data = tmp_path / "glue"
    argv = ["--data_dir", data, "--tasks", "mrpc", "--base_url", server.url + "/glue",
            "--mrpc_base_url", server.url + "/senteval/"]
    assert run_main(glue, argv) == 0
    mrpc = data / "MRPC"
    assert sorted(os.listdir(data)) == ["MRPC"]
    assert (mrpc / "train.tsv").read_bytes() == BOM_HEADER + (
        b"1\t10\t11\tA cat sat.\tA cat was sitting.\n1\t30\t31\tHe left.\tHe went away.\n")
    assert (mrpc / "dev.tsv").read_bytes() == BOM_HEADER + (
        b"0\t20\t21\tIt rained.\tThe sun shone.\n0\t40\t41\tCaf\xc3\xa9 open.\tCaf\xc3\xa9 closed.\n")
    assert (mrpc / "test.tsv").read_bytes() == (
        b"index\t#1 ID\t#2 ID\t#1 String\t#2 String\n0\t50\t51\tYes.\tIndeed.\n1\t60\t61\tUp.\tDown.\n")
    assert (mrpc / "dev_ids.tsv").read_bytes() == DEV_IDS


def test_mrpc_fails_cleanly(glue, server, tmp_path, capsys):
    # A dev id pair that is not in the train file means the raw files do not belong together.
    server.add("/mrpc_dev_ids.tsv", b"20\t21\n99\t98\n")
    server.add("/msr_paraphrase_train.txt", MSR_TRAIN)
    server.add("/msr_paraphrase_test.txt", MSR_TEST)
    data = tmp_path / "glue"
    argv = ["--data_dir", data, "--tasks", "MRPC", "--base_url", server.url, "--mrpc_base_url", server.url]
    assert run_main(glue, argv) == 1
    assert "error: task MRPC: 1 of the 2 dev id pairs" in error_lines(capsys)[0]
    assert os.listdir(data) == []
    del server.httpd.routes["/msr_paraphrase_test.txt"]
    assert run_main(glue, argv) == 1
    assert "msr_paraphrase_test.txt failed: HTTP 404" in error_lines(capsys)[0]
    assert os.listdir(data) == []


def test_mrpc_rebuild_matches_genuine_glue(glue, shared_glue, tmp_path):
    src = shared_glue / "MRPC"
    glue.build_mrpc(src / "msr_paraphrase_train.txt", src / "msr_paraphrase_test.txt", src / "dev_ids.tsv", tmp_path)
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        assert (tmp_path / name).read_bytes() == (src / name).read_bytes(), name


# --- pretrained BERT -----------------------------------------------------------------------------

def _tiny_bert_files():
    """A usable tiny BERT as the downloader fetches it: config.json, vocab.txt and
    pytorch_model.bin (random weights; the downloader checks that they load)."""
    import torch

    sys.path.insert(0, str(ROOT / "src"))
    from BERT.pytorch_pretrained_bert import BertConfig, BertModel

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]
    config = BertConfig(len(vocab), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=8, max_position_embeddings=16)
    weights = io.BytesIO()
    torch.save({f"bert.{k}": v for k, v in BertModel(config).state_dict().items()}, weights)
    return {"config.json": config.to_json_string().encode(),
            "vocab.txt": "".join(t + "\n" for t in vocab).encode(),
            "pytorch_model.bin": weights.getvalue()}


BERT_FILES = _tiny_bert_files()
# what a wrong URL can serve with status 200: a page, not a model
GARBAGE_FILES = {"config.json": b'{"hidden_size": 8}\n', "vocab.txt": b"[PAD]\n[UNK]\n",
                 "pytorch_model.bin": b"\x00" * 4096}


def test_bert_download_and_skip(bert, server, tmp_path, capsys):
    for name, body in BERT_FILES.items():
        server.add(f"/tiny/{name}", body)
    out = tmp_path / "pretrained"
    argv = ["--output_dir", out, "--base_url", server.url + "/tiny"]
    assert run_main(bert, argv) == 0
    assert sorted(os.listdir(out)) == ["bert-base-uncased"]
    for name, body in BERT_FILES.items():
        assert (out / "bert-base-uncased" / name).read_bytes() == body
    server.httpd.routes.clear()
    assert run_main(bert, argv) == 0
    assert "skip: bert-base-uncased" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["missing", "truncated"])
def test_bert_failure_leaves_nothing(bert, server, tmp_path, capsys, monkeypatch, kind):
    server.add("/tiny/config.json", BERT_FILES["config.json"])
    server.add("/tiny/vocab.txt", BERT_FILES["vocab.txt"])
    if kind == "truncated":
        server.add("/tiny/pytorch_model.bin", BERT_FILES["pytorch_model.bin"], "truncated")
    monkeypatch.setenv("PEAKD_BERT_BASE_URL", server.url + "/tiny")
    out = tmp_path / "pretrained"
    assert run_main(bert, ["--output_dir", out]) == 1
    lines = error_lines(capsys)
    assert len(lines) == 1
    assert lines[0].startswith("error: model bert-base-uncased: download of ")
    assert ("HTTP 404" if kind == "missing" else "truncated") in lines[0]
    assert os.listdir(out) == []


def test_bert_download_of_something_else_is_refused(bert, server, tmp_path, capsys):
    """Files that arrive whole but are no model (a config without the sizes, a vocabulary
    without [CLS], weights that do not load) are not installed and not called done."""
    for name, body in GARBAGE_FILES.items():
        server.add(f"/tiny/{name}", body)
    out = tmp_path / "pretrained"
    assert run_main(bert, ["--output_dir", out, "--base_url", server.url + "/tiny"]) == 1
    lines = error_lines(capsys)
    assert len(lines) == 1 and "not a usable model" in lines[0]
    assert os.listdir(out) == []


# --- preprocess.sh -------------------------------------------------------------------------------

def test_preprocess_sh(server, tmp_path):
    server.add("/RTE.zip", task_zip("RTE"))
    for name, body in BERT_FILES.items():
        server.add(f"/bert/{name}", body)
    env = dict(os.environ, PEAKD_GLUE_BASE_URL=server.url, PEAKD_BERT_BASE_URL=server.url + "/bert",
               PEAKD_PRETRAINED_DIR=str(tmp_path / "pretrained"))
    env.pop("PEAKD_WITH_BERT", None)
    cmd = ["bash", str(ROOT / "preprocess.sh"), "--data_dir", str(tmp_path / "glue"), "--tasks", "RTE"]
    done = subprocess.run(cmd + ["--with_bert"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "glue" / "RTE" / "train.tsv").is_file()
    assert (tmp_path / "pretrained" / "bert-base-uncased" / "pytorch_model.bin").is_file()

    failed = subprocess.run(cmd[:-1] + ["WNLI"], env=env, capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1
    assert "error: task WNLI: " in failed.stderr and "HTTP 404" in failed.stderr


# --- the last lines, path kinds and Ctrl-C -------------------------------------------------------

def test_glue_ends_with_a_summary(glue, server, tmp_path, capsys):
    server.add("/RTE.zip", task_zip("RTE"))
    data = tmp_path / "glue"
    argv = ["--data_dir", data, "--tasks", "rte,cola", "--base_url", server.url]
    assert run_main(glue, argv) == 1  # CoLA is not on the server
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-2:] == ["done: downloaded RTE; failed: CoLA", f"data folder: {data.resolve()}"]


@pytest.mark.parametrize("which", ["glue", "bert"])
def test_a_file_where_the_folder_goes_is_named(which, glue, bert, tmp_path, capsys):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    module, flag = (glue, "--data_dir") if which == "glue" else (bert, "--output_dir")
    assert run_main(module, [flag, afile, "--base_url", "http://127.0.0.1:9"]) == 1
    assert error_lines(capsys) == [f"error: {flag} {afile} is a file, expected a folder; choose "
                                   "another path"]


@pytest.mark.parametrize("which", ["glue", "bert"])
def test_ctrl_c_is_one_line_and_keeps_nothing(which, glue, bert, tmp_path, capsys, monkeypatch):
    module = glue if which == "glue" else bert

    def interrupted(url, dest, timeout):
        Path(dest).write_bytes(b"half a download")
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "fetch", interrupted)
    out = tmp_path / "out"
    flag = "--data_dir" if which == "glue" else "--output_dir"
    assert run_main(module, [flag, out, "--tasks", "rte"] if which == "glue"
                    else [flag, out]) == 130
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("error: interrupted while downloading")
    assert list(out.iterdir()) == []
