"""The embedded default of `make demo`: a generated two-clause task and a small untrained BERT.

Both are built here, deterministically from a seed, so the whole pipeline runs offline on a CPU
without GLUE or a downloaded checkpoint. Nothing in them is real: the task is English-like
sentences of two clauses joined by a connector (TASK_RULE says how the label follows from them);
the "pretrained" model has random weights. Demo numbers show what the pipeline does on this toy
task, not what PeaKD achieves on real data.

Each builder writes into a temporary folder beside its output and renames it into place, so a
crash never leaves a half-written task or model; a finished output is reused unless `force=True`
or the parameters it was built with (recorded in `demo_info.json`) differ.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

from .glue import get_task

# The demo task is read by the SST-2 processor; the scripts' --data_dir names the folder that
# holds <task dir>/train.tsv, so the files go into an SST-2 folder under make_demo_task's out_dir.
TASK_NAME = "SST-2"
TASK_DIR_NAME = get_task(TASK_NAME).dir_name
INFO_NAME = "demo_info.json"
SPLIT_FILES = ("train.tsv", "dev.tsv", "test.tsv")
MODEL_FILES = ("config.json", "model.safetensors", "vocab.txt")
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
NOT_PRETRAINED = ("DEMO MODEL, NEVER PRETRAINED: its weights are random (seed {seed}). It exists "
                  "so that `make demo` runs offline; its results say nothing about BERT or PeaKD.")
TASK_RULE = ("two clauses joined by 'but' (the label is the second clause's polarity), "
             "'although' (the first's) or 'and' (both agree); a clause's polarity is its "
             "adjective's, flipped by 'not' or 'never'; a few adjectives are ambiguous and give "
             "label 1 only with their probability")

# A small vocabulary: the model starts from random weights, and every word's role has to be
# learned from the 2,000 training sentences within the demo's few epochs
DETERMINERS = ("the", "this", "our")
SUBJECTS = ("movie", "plot", "cast", "music", "ending", "script", "acting", "pacing", "humor",
            "scenery")
VERBS = ("was", "is", "felt")
INTENSIFIERS = ("very", "really", "quite", "so")
POSITIVE = ("good", "great", "clever", "funny", "superb", "fresh")
NEGATIVE = ("bad", "dull", "boring", "weak", "awful", "flat")
# adjectives whose polarity is a coin with this probability of "positive": the label of a clause
# that rests on one is drawn, so a teacher's soft output on it carries more than the hard label
AMBIGUOUS = {"decent": 0.75, "okay": 0.7, "odd": 0.3, "uneven": 0.25}
NEGATIONS = ("not", "never")
# the connector decides which clause carries the label; "and" joins clauses that agree
CONNECTORS = ("but", "although", "and")
# phrases that carry no polarity: the model has to learn to look past them
OPENERS = ("in the end", "to be honest", "at times")
CLOSERS = ("this time", "at the festival")

NEGATION_RATE = 0.3
AMBIGUOUS_RATE = 0.08
MIN_WORDS, MAX_WORDS = 9, 20


def _clause(rng: random.Random, polarity: int | None = None) -> list[str]:
    """`det subject verb [negation] [intensifier] adjective`; with `polarity` given, a clear
    adjective whose clause has that polarity."""
    negated = rng.random() < NEGATION_RATE
    words = [rng.choice(DETERMINERS), rng.choice(SUBJECTS), rng.choice(VERBS)]
    if negated:
        words.append(rng.choice(NEGATIONS))
    if rng.random() < 0.4:
        words.append(rng.choice(INTENSIFIERS))
    if polarity is None and rng.random() < AMBIGUOUS_RATE:
        words.append(rng.choice(sorted(AMBIGUOUS)))
    else:
        positive = (rng.random() < 0.5) if polarity is None else bool(polarity) != negated
        words.append(rng.choice(POSITIVE if positive else NEGATIVE))
    return words


def clause_probability(words: list[str]) -> float:
    """P(positive) of one clause: its adjective's (1, 0 or the AMBIGUOUS value), flipped by a
    negation."""
    adjective = words[-1]
    p = 1.0 if adjective in POSITIVE else 0.0 if adjective in NEGATIVE else AMBIGUOUS[adjective]
    return 1.0 - p if any(w in NEGATIONS for w in words) else p


def positive_probability(sentence: str) -> float:
    """P(label 1) of a demo sentence, the task's rule: 'but' -> the second clause, 'although' ->
    the first, 'and' -> the first (the generator makes both agree). Openers, closers and
    punctuation carry nothing; 0.0 or 1.0 unless the deciding clause's adjective is ambiguous."""
    words = sentence.split()
    cut = next(i for i, w in enumerate(words) if w in CONNECTORS)
    adjectives = set(POSITIVE) | set(NEGATIVE) | set(AMBIGUOUS)
    # the first clause ends just before the connector (openers hold no negation); the second
    # ends at its adjective, before any closer
    second = words[cut + 1:]
    second = second[:next(i for i, w in enumerate(second) if w in adjectives) + 1]
    return clause_probability(second if words[cut] == "but" else words[:cut])


def demo_sentence(rng: random.Random) -> tuple[str, int]:
    """One sentence and its label (0/1), MIN_WORDS to MAX_WORDS space-separated words.

    The label is drawn with `positive_probability(sentence)`: it is fixed by the sentence except
    where the deciding clause rests on an ambiguous adjective. Punctuation is its own word so
    that the vocabulary built from the corpus covers every token.
    """
    while True:
        connector = rng.choice(CONNECTORS)
        first = _clause(rng)
        if connector == "and":
            # only clear clauses can be said to agree: both get the same polarity
            polarity = rng.random() < 0.5
            first, second = _clause(rng, polarity), _clause(rng, polarity)
        else:
            second = _clause(rng)
        words = []
        if rng.random() < 0.15:
            words += rng.choice(OPENERS).split() + [","]
        words += first + [connector] + second
        if rng.random() < 0.15:
            words += rng.choice(CLOSERS).split()
        words.append(".")
        if MIN_WORDS <= len(words) <= MAX_WORDS:
            sentence = " ".join(words)
            return sentence, int(rng.random() < positive_probability(sentence))


def _task_params(seed: int, n_train: int, n_dev: int, n_test: int) -> dict:
    return {"kind": "demo task", "rule": TASK_RULE, "seed": seed, "n_train": n_train,
            "n_dev": n_dev, "n_test": n_test, "negation_rate": NEGATION_RATE,
            "ambiguous": AMBIGUOUS, "ambiguous_rate": AMBIGUOUS_RATE}


def make_demo_task(out_dir: str | Path, seed: int = 0, n_train: int = 2000, n_dev: int = 500,
                   n_test: int = 200, force: bool = False) -> Path:
    """Writes `out_dir/SST-2/{train,dev,test}.tsv` in the SST-2 layout and returns that folder.

    Run the scripts with `--task SST-2 --data_dir out_dir` to train on it.

    train/dev: header `sentence<TAB>label`, label 0/1 from `demo_sentence` (no label noise
    beyond the ambiguous adjectives' draws); test: header `index<TAB>sentence`. The same seed
    and sizes give the same bytes.
    """
    task_dir = Path(out_dir) / TASK_DIR_NAME
    params = _task_params(seed, n_train, n_dev, n_test)
    if not force and _is_built(task_dir, SPLIT_FILES, params):
        return task_dir
    rng = random.Random(seed)
    splits = {}
    for name, size in (("train", n_train), ("dev", n_dev)):
        splits[f"{name}.tsv"] = ["sentence\tlabel"] + [
            "{}\t{}".format(*demo_sentence(rng)) for _ in range(size)]
    splits["test.tsv"] = ["index\tsentence"] + [f"{i}\t{demo_sentence(rng)[0]}"
                                                 for i in range(n_test)]

    def write(tmp: Path) -> None:
        for file_name, rows in splits.items():
            (tmp / file_name).write_text("\n".join(rows) + "\n", encoding="utf-8")

    _publish(task_dir, params, write)
    return task_dir


def corpus_texts(path: str | Path) -> list[str]:
    """The texts of a corpus file: the `sentence` column of an SST-2-style TSV, else every line."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t") if lines else []
    if "sentence" in header:
        column = header.index("sentence")
        return [line.split("\t")[column] for line in lines[1:] if line.strip()]
    return [line for line in lines if line.strip()]


def build_vocab(texts) -> list[str]:
    """BERT's special tokens, then every lower-cased basic token of `texts`, sorted."""
    from BERT.pytorch_pretrained_bert import BasicTokenizer

    # the pipeline's own basic tokenizer decides what a word is, so each word is exactly one token
    basic = BasicTokenizer(do_lower_case=True)
    words = {token for text in texts for token in basic.tokenize(text)}
    return list(SPECIAL_TOKENS) + sorted(words - set(SPECIAL_TOKENS))


def make_demo_bert(out_dir: str | Path, corpus_files, seed: int = 0, hidden: int = 64,
                   layers: int = 4, heads: int = 4, intermediate: int = 128,
                   max_positions: int = 64, force: bool = False) -> Path:
    """Writes a small BERT into `out_dir` (`config.json`, `model.safetensors`, `vocab.txt`).

    The model was NEVER PRETRAINED: its weights are BERT's random initialisation drawn from
    `seed`. It stands in for a pretrained checkpoint so that the pipeline runs offline; it learns
    the demo task from scratch. `vocab.txt` holds the special tokens and every lower-cased word of
    `corpus_files` (SST-2-style TSVs or plain text), so no demo word is split or unknown. The
    global torch random state is left as it was.
    """
    # imported here so that building the task alone does not load torch
    import torch

    from BERT.pytorch_pretrained_bert import BertConfig, BertModel, save_safetensors

    out_dir = Path(out_dir)
    corpus_files = [Path(p) for p in corpus_files]
    digest = hashlib.sha256()
    for path in corpus_files:
        digest.update(path.read_bytes())
    params = {"kind": "demo bert", "seed": seed, "hidden": hidden, "layers": layers,
              "heads": heads, "intermediate": intermediate, "max_positions": max_positions,
              "corpus_sha256": digest.hexdigest(), "note": NOT_PRETRAINED.format(seed=seed)}
    if not force and _is_built(out_dir, MODEL_FILES, params):
        return out_dir
    vocab = build_vocab(text for path in corpus_files for text in corpus_texts(path))
    config = BertConfig(len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=intermediate,
                        max_position_embeddings=max_positions)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state = BertModel(config).state_dict()

    def write(tmp: Path) -> None:
        (tmp / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
        config.to_json_file(tmp / "config.json")
        save_safetensors(state, tmp / "model.safetensors",
                         metadata={"note": NOT_PRETRAINED.format(seed=seed)})
        (tmp / "README.txt").write_text(NOT_PRETRAINED.format(seed=seed) + "\n", encoding="utf-8")

    _publish(out_dir, params, write)
    return out_dir


def read_info(folder: str | Path) -> dict | None:
    """The parameters a finished demo output was built with, or None when there is none."""
    try:
        return json.loads((Path(folder) / INFO_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_built(folder: Path, files, params: dict) -> bool:
    return read_info(folder) == params and all((folder / f).is_file() for f in files)


def _publish(final: Path, params: dict, write) -> None:
    """Runs `write(tmp)` on a fresh temporary folder, then puts it in place of `final` at once."""
    final.parent.mkdir(parents=True, exist_ok=True)
    # a per-process name (not mkdtemp, whose 0700 mode the published folder would keep)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    for leftover in (tmp, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    tmp.mkdir()
    try:
        write(tmp)
        # written last: its presence is what marks the folder as finished
        (tmp / INFO_NAME).write_text(json.dumps(params, indent=2, sort_keys=True) + "\n",
                                     encoding="utf-8")
        if final.exists():
            # a directory cannot be renamed over a non-empty one: move the old one aside first
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
