"""BERT's WordPiece tokenizer: basic tokenization (cleaning, CJK, lower-casing, punctuation) then WordPiece.

Written from the public description of BERT's tokenizer; keeps the 2019 `pytorch_pretrained_bert` API.
"""
import collections
import functools
import json
import logging
import os
import unicodedata

logger = logging.getLogger(__name__)

VOCAB_NAME = "vocab.txt"
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"
SPECIAL_TOKENS = ("[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]")

# Per-word results repeat a lot in GLUE-sized corpora; bounded so a huge corpus cannot exhaust memory.
_WORD_CACHE_SIZE = 1 << 18

# BERT counts every non-letter, non-digit printable ASCII character as punctuation, even the
# symbols ($, +, <, =, >, ^, `, |, ~) that Unicode files under "S*".
_ASCII_PUNCTUATION = frozenset(
    chr(cp) for lo, hi in ((33, 47), (58, 64), (91, 96), (123, 126)) for cp in range(lo, hi + 1)
)

# The CJK Unified Ideographs blocks (not Hiragana, Katakana or Hangul, which are written with spaces).
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


def _is_whitespace(char):
    """Space, tab, newline, carriage return or any Unicode space separator (Zs)."""
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def _is_control(char):
    """Unicode category C*, except tab/newline/CR, which BERT treats as whitespace."""
    if char in "\t\n\r":
        return False
    return unicodedata.category(char).startswith("C")


@functools.lru_cache(maxsize=None)
def _is_punctuation(char):
    """ASCII punctuation/symbols or any Unicode punctuation (P*)."""
    return char in _ASCII_PUNCTUATION or unicodedata.category(char).startswith("P")


def _is_cjk(cp):
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


class _CleanCjkTable(dict):
    """`str.translate` table, filled on demand: drops NUL/U+FFFD/control characters, maps whitespace
    to a space and surrounds CJK ideographs with spaces, so cleaning runs at C speed once warm."""

    def __missing__(self, cp):
        char = chr(cp)
        if cp == 0 or cp == 0xFFFD or _is_control(char):
            out = None
        elif _is_whitespace(char):
            out = " "
        elif _is_cjk(cp):
            out = f" {char} "
        else:
            out = char
        self[cp] = out
        return out


_CLEAN_CJK_TABLE = _CleanCjkTable()


def load_vocab(vocab_file):
    """Read a vocabulary file (one token a line; the line number is the id) into an OrderedDict."""
    vocab = collections.OrderedDict()
    with open(vocab_file, "r", encoding="utf-8") as reader:
        for index, line in enumerate(reader):
            vocab[line.rstrip("\n")] = index
    return vocab


def whitespace_tokenize(text):
    """Split on whitespace (empty list for blank text)."""
    return text.split()


class BasicTokenizer:
    """Cleans text, splits CJK characters and punctuation, and (optionally) lower-cases and strips accents."""

    def __init__(self, do_lower_case=True, never_split=SPECIAL_TOKENS):
        self.do_lower_case = do_lower_case
        self.never_split = frozenset(never_split or ())
        # Bound per instance so the cache never outlives or mixes tokenizers with other settings.
        self._tokenize_word = functools.lru_cache(maxsize=_WORD_CACHE_SIZE)(self._tokenize_word_uncached)

    def tokenize(self, text):
        """Tokenize a piece of text into basic tokens."""
        tokens = []
        for word in text.translate(_CLEAN_CJK_TABLE).split():
            tokens.extend(self._tokenize_word(word))
        return tokens

    def _tokenize_word_uncached(self, word):
        if word in self.never_split:
            return (word,)
        if self.do_lower_case:
            word = self._run_strip_accents(word.lower())
        if word.isascii() and word.isalnum():
            return (word,)
        return tuple(self._run_split_on_punc(word))

    @staticmethod
    def _run_strip_accents(text):
        """Decompose (NFD) and drop the combining marks (Mn)."""
        if text.isascii():
            return text
        return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")

    def _run_split_on_punc(self, text):
        """Make every punctuation character its own token."""
        if text in self.never_split:
            return [text]
        output = []
        start = 0
        for i, char in enumerate(text):
            if _is_punctuation(char):
                if start < i:
                    output.append(text[start:i])
                output.append(char)
                start = i + 1
        if start < len(text):
            output.append(text[start:])
        return output


class WordpieceTokenizer:
    """Greedy longest-match-first WordPiece; pieces after the first carry the `##` prefix."""

    def __init__(self, vocab, unk_token="[UNK]", max_input_chars_per_word=100):
        self.vocab = vocab
        self.unk_token = unk_token
        self.max_input_chars_per_word = max_input_chars_per_word
        # No vocabulary entry is longer than this, so longer candidate pieces need not be looked up.
        self._max_piece_len = max((len(t) for t in vocab), default=0)
        # Cached per instance: the vocabulary must not be changed after construction.
        self._tokenize_word = functools.lru_cache(maxsize=_WORD_CACHE_SIZE)(self._tokenize_word_uncached)

    def tokenize(self, text):
        """Tokenize whitespace-separated, already basic-tokenized text into word pieces."""
        output = []
        for word in text.split():
            output.extend(self._tokenize_word(word))
        return output

    def _tokenize_word_uncached(self, word):
        n = len(word)
        if n > self.max_input_chars_per_word:
            return (self.unk_token,)
        vocab = self.vocab
        pieces = []
        start = 0
        while start < n:
            prefix = "##" if start > 0 else ""
            end = min(n, start + self._max_piece_len - len(prefix))
            while end > start:
                piece = prefix + word[start:end]
                if piece in vocab:
                    break
                end -= 1
            else:
                # One unmatchable stretch makes the whole word unknown, as in BERT.
                return (self.unk_token,)
            pieces.append(piece)
            start = end
        return tuple(pieces)


class BertTokenizer:
    """End-to-end tokenization: basic tokenization followed by WordPiece.

    `build_inputs` lays one text or a pair out with the model's special tokens:
    `[CLS] A [SEP] B [SEP]`, segment ids 0 for `[CLS] A [SEP]` and 1 for `B [SEP]`.
    """

    cls_token, sep_token, unk_token = "[CLS]", "[SEP]", "[UNK]"
    # separators between the two texts of a pair, and the segment id of the second text
    pair_separator, second_segment = ("[SEP]",), 1
    special_tokens = SPECIAL_TOKENS

    def __init__(self, vocab_file, do_lower_case=True, max_len=None, do_basic_tokenize=True,
                 never_split=None):
        if not os.path.isfile(vocab_file):
            raise FileNotFoundError(f"BERT vocabulary file not found: {vocab_file}")
        self.vocab = load_vocab(vocab_file)
        self.ids_to_tokens = collections.OrderedDict((ids, tok) for tok, ids in self.vocab.items())
        self.do_lower_case = do_lower_case
        self.do_basic_tokenize = do_basic_tokenize
        if do_basic_tokenize:
            self.basic_tokenizer = BasicTokenizer(
                do_lower_case=do_lower_case,
                never_split=self.special_tokens if never_split is None else never_split)
        self.wordpiece_tokenizer = WordpieceTokenizer(vocab=self.vocab, unk_token=self.unk_token)
        self.max_len = max_len if max_len is not None else int(1e12)

    @classmethod
    def num_special_tokens(cls, pair):
        """How many special tokens `build_inputs` adds to one text (pair=False) or a pair."""
        return 2 + (len(cls.pair_separator) if pair else 0)

    def build_inputs(self, tokens_a, tokens_b=None):
        """(word pieces, segment ids) of one text or a pair, special tokens included."""
        first = [self.cls_token] + list(tokens_a) + [self.sep_token]
        if tokens_b is None:
            return first, [0] * len(first)
        second = list(self.pair_separator[1:]) + list(tokens_b) + [self.sep_token]
        return first + second, [0] * len(first) + [self.second_segment] * len(second)

    def tokenize(self, text):
        """Text -> list of word pieces."""
        if not self.do_basic_tokenize:
            return self.wordpiece_tokenizer.tokenize(text)
        wordpiece = self.wordpiece_tokenizer._tokenize_word
        split_tokens = []
        for token in self.basic_tokenizer.tokenize(text):
            split_tokens.extend(wordpiece(token))
        return split_tokens

    def convert_tokens_to_ids(self, tokens):
        """Word pieces -> ids (KeyError for a token not in the vocabulary)."""
        vocab = self.vocab
        ids = [vocab[token] for token in tokens]
        if len(ids) > self.max_len:
            logger.warning(
                "Token indices sequence length is longer than the specified maximum sequence length "
                "for this BERT model (%d > %d); running it through BERT will cause indexing errors.",
                len(ids), self.max_len)
        return ids

    def convert_ids_to_tokens(self, ids):
        """Ids -> word pieces."""
        return [self.ids_to_tokens[i] for i in ids]

    def save_vocabulary(self, vocab_path):
        """Write the vocabulary to `vocab_path` (a directory gets `vocab.txt`); returns the file path."""
        if os.path.isdir(vocab_path):
            vocab_path = os.path.join(vocab_path, VOCAB_NAME)
        with open(vocab_path, "w", encoding="utf-8") as writer:
            for expected, (token, index) in enumerate(sorted(self.vocab.items(), key=lambda kv: kv[1])):
                if index != expected:
                    # A gap would shift every later id when the file is read back.
                    raise ValueError(f"vocabulary ids are not consecutive at {token!r} (id {index}, "
                                     f"expected {expected}); cannot save to {vocab_path}")
                writer.write(token + "\n")
        return vocab_path

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, do_lower_case=None, **kwargs):
        """Load from a model directory holding `vocab.txt` (or from the vocabulary file itself).

        With `do_lower_case=None` the casing comes from the directory's `tokenizer_config.json`
        when it has one, else lower-casing (the uncased models) is assumed.
        """
        path = os.fspath(pretrained_model_name_or_path)
        if os.path.isdir(path):
            model_dir, vocab_file = path, os.path.join(path, VOCAB_NAME)
        else:
            model_dir, vocab_file = os.path.dirname(path), path
        if not os.path.isfile(vocab_file):
            raise FileNotFoundError(f"BERT vocabulary file not found: {vocab_file}")
        if do_lower_case is None:
            do_lower_case = _config_do_lower_case(os.path.join(model_dir, TOKENIZER_CONFIG_NAME))
        if do_lower_case and "-cased" in os.path.basename(os.path.normpath(model_dir)):
            logger.warning("Lower-casing with what looks like a cased model (%s); "
                           "pass do_lower_case=False if that is not intended.", model_dir)
        return cls(vocab_file, do_lower_case=do_lower_case, **kwargs)


def _config_do_lower_case(config_file):
    """`do_lower_case` from a tokenizer_config.json; True when the file or the key is absent."""
    if not os.path.isfile(config_file):
        return True
    try:
        with open(config_file, "r", encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read tokenizer config {config_file}: {e}") from e
    return bool(config.get("do_lower_case", True))


class MPNetTokenizer(BertTokenizer):
    """MPNet's tokenizer: BERT's WordPiece (same cleaning, lower-casing and `[UNK]`) with
    RoBERTa-style special tokens, `<s> A </s></s> B </s>`, and one segment (MPNet has no
    token-type embeddings, so every segment id is 0)."""

    cls_token, sep_token, unk_token = "<s>", "</s>", "[UNK]"
    pair_separator, second_segment = ("</s>", "</s>"), 0
    special_tokens = ("<s>", "</s>", "<pad>", "[UNK]", "<mask>")


# config.json's model_type -> the tokenizer class of that model family
TOKENIZERS = {"bert": BertTokenizer, "mpnet": MPNetTokenizer}
