"""Fixture builders shared by the tests: tiny GLUE task folders, a tiny BERT, script runners.

Texts come from the demo generator (utils.demo_data), so every word is in the tiny vocabulary.
The BERT is never pretrained (random weights): the tests check the pipeline, not accuracy.
"""
import hashlib
import importlib.util
import random
from pathlib import Path

from utils.demo_data import demo_sentence, make_demo_bert

SRC = Path(__file__).resolve().parents[1] / "src"

# hidden 32, 4 heads, 4 layers: the smallest model on which every student shape can be built
TINY_BERT = dict(hidden=32, layers=4, heads=4, intermediate=37, max_positions=64)
SIZES = {"train": 16, "dev": 8}

STSB_HEADER = ("index", "genre", "filename", "year", "old_index", "source1", "source2",
               "sentence1", "sentence2", "score")


def _pair_text(rng):
    """A demo sentence cut to its first 10 words: a pair of them fits the tests' 24 and 32 tokens.

    Untruncated pairs keep the parity tests exact: on a length tie, longest-first truncation
    here (as in BERT's own code) shortens the second text, transformers' fast tokenizer the first.
    """
    return " ".join(demo_sentence(rng)[0].split()[:10])


def _sst2_rows(rng, n):
    rows = []
    for _ in range(n):
        sentence, label = demo_sentence(rng)
        rows.append((sentence, str(label)))
    return [("sentence", "label")] + rows


def _cola_rows(rng, n):
    # GLUE CoLA: no header; source, label, the original annotation (blank when accepted), text
    rows = []
    for _ in range(n):
        sentence, label = demo_sentence(rng)
        rows.append(("gj04", str(label), "" if label else "*", sentence))
    return rows


def _mrpc_rows(rng, n):
    rows = [("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String")]
    for i in range(n):
        rows.append((str(rng.randint(0, 1)), str(1000 + i), str(2000 + i),
                     _pair_text(rng), _pair_text(rng)))
    return rows


def _stsb_rows(rng, n):
    rows = [STSB_HEADER]
    for i in range(n):
        rows.append((str(i), "main-captions", "MSRvid", "2012test", f"{i:04d}", "none", "none",
                     _pair_text(rng), _pair_text(rng), f"{rng.uniform(0, 5):.3f}"))
    return rows


TASK_ROWS = {"SST-2": _sst2_rows, "MRPC": _mrpc_rows, "STS-B": _stsb_rows, "CoLA": _cola_rows}


def make_glue(root, tasks=("SST-2", "MRPC", "STS-B"), seed=0):
    """Writes `root/<TASK>/{train,dev}.tsv` for SST-2 (single sentence), MRPC (pairs), STS-B
    (regression) or CoLA (single sentence, no header) in the 2019 GLUE layouts; returns root,
    the scripts' --data_dir."""
    root = Path(root)
    for task in tasks:
        rng = random.Random(f"{seed}-{task}")
        folder = root / task
        folder.mkdir(parents=True, exist_ok=True)
        for split, n in SIZES.items():
            rows = TASK_ROWS[task](rng, n)
            (folder / f"{split}.tsv").write_text("".join("\t".join(r) + "\n" for r in rows),
                                                 encoding="utf-8")
    return root


def make_tiny_bert(path, glue_root, **overrides):
    """A random-weight BERT directory (config.json, model.safetensors, vocab.txt) whose vocab
    holds every word of the TSVs under glue_root."""
    corpus = sorted(Path(glue_root).glob("*/*.tsv"))
    return make_demo_bert(path, corpus, **{**TINY_BERT, **overrides})


MPNET_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "[UNK]", "<mask>")


def make_tiny_mpnet(path, glue_root, layers=4, seed=0):
    """A random-weight MPNet folder in transformers' own layout (config.json with model_type
    mpnet, model.safetensors with MPNet's key names, vocab.txt with `<s>`/`</s>`/`<pad>` first
    as in all-mpnet-base-v2, tokenizer_config.json naming MPNetTokenizer): what the package must
    load through its name mapping. Its vocabulary holds every word of the TSVs under glue_root."""
    import json

    import torch

    from BERT.pytorch_pretrained_bert import BertConfig, BertModel, save_safetensors
    from BERT.pytorch_pretrained_bert.modeling import MPNET_NAMES
    from utils.demo_data import build_vocab, corpus_texts

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    corpus = sorted(Path(glue_root).glob("*/*.tsv"))
    words = [w for w in build_vocab(t for f in corpus for t in corpus_texts(f))
             if not w.startswith("[")]
    vocab = list(MPNET_SPECIALS) + words
    config = {"model_type": "mpnet", "vocab_size": len(vocab), "hidden_size": 32,
              "num_hidden_layers": layers, "num_attention_heads": 4, "intermediate_size": 37,
              "max_position_embeddings": 66, "layer_norm_eps": 1e-5, "pad_token_id": 1,
              "relative_attention_num_buckets": 32, "hidden_act": "gelu"}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ours = BertModel(BertConfig.from_dict(config)).state_dict()
    theirs = {}
    for key, value in ours.items():
        for mpnet, bert in MPNET_NAMES:
            key = key.replace(bert, mpnet)
        theirs[key] = value.clone()
    (path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (path / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    (path / "tokenizer_config.json").write_text(json.dumps(
        {"do_lower_case": True, "tokenizer_class": "MPNetTokenizer"}), encoding="utf-8")
    (path / "special_tokens_map.json").write_text(json.dumps(
        {"cls_token": "<s>", "sep_token": "</s>", "pad_token": "<pad>", "unk_token": "[UNK]",
         "mask_token": "<mask>", "bos_token": "<s>", "eos_token": "</s>"}), encoding="utf-8")
    save_safetensors(theirs, path / "model.safetensors")
    return path


def exported_dev(run, export, data_dir, criterion="acc"):
    """The trained run's `criterion` model (`load_trained_run`), its task, its dev features, and
    the dev pairs as transformers' AutoTokenizer of the export encodes them (padded to the run's
    max_seq_length): what an export test compares."""
    import transformers

    from utils.modeling import load_tokenizer, load_trained_run
    from utils.pipeline import load_splits

    ours, _, run_args, task = load_trained_run(run, criterion)
    examples, features = load_splits(task, data_dir, ("dev",), load_tokenizer(run),
                                     run_args["max_seq_length"])["dev"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(export)
    encoded = tokenizer([e.text_a for e in examples], [e.text_b for e in examples],
                        truncation="longest_first", max_length=run_args["max_seq_length"],
                        padding="max_length", return_tensors="pt")
    return ours, task, features, encoded


def load_script(name):
    """A script module (src/<name>.py) imported by path: scripts never import each other, tests
    may."""
    spec = importlib.util.spec_from_file_location(f"peakd_script_{name}", SRC / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_args(task, data_dir, bert, output_dir, *extra):
    """A few-step CPU training command line for finetune.py / finetune_ER.py / PTP.py."""
    return ["--task", task, "--data_dir", str(data_dir), "--bert_model", str(bert),
            "--output_dir", str(output_dir), "--no_cuda", "--max_seq_length", "32",
            "--train_batch_size", "4", "--eval_batch_size", "8", "--learning_rate", "1e-3",
            "--num_train_epochs", "1", "--max_steps", "3", "--logging_steps", "1",
            *map(str, extra)]


def tree_digest(root):
    """{relative path: sha256} of every file under root: compares a folder before and after."""
    root = Path(root)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def expect_error(main, argv, capsys, needles=(), watched=(), code=1):
    """Runs a script's main(argv) expecting bad input: exit `code` (1; 2 for what argparse
    refuses, 130 for Ctrl-C), a single `error:` line on stderr holding every needle, and no file
    under the `watched` folders added, changed or removed. Returns the line."""
    expected = code
    capsys.readouterr()
    before = [tree_digest(folder) for folder in watched]
    try:
        main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    else:
        code = 0
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == expected, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    assert [tree_digest(folder) for folder in watched] == before
    return lines[0]


def interrupt_at(monkeypatch, step):
    """Ctrl-C as optimizer step `step` (1-based) starts; returns the real optimizer_step."""
    from utils.train import _TrainingRun

    original = _TrainingRun.optimizer_step

    def optimizer_step(self, *args):
        if self.pos.step + 1 == step:
            raise KeyboardInterrupt
        original(self, *args)

    monkeypatch.setattr(_TrainingRun, "optimizer_step", optimizer_step)
    return original
