"""Tokenizers: text <-> integer ids, and the vocabulary.

Three levels:
- `CharTokenizer`: one token per character (Karpathy's char-rnn); `<unk>` for characters the
  training split never showed.
- `WordTokenizer`: words and punctuation as tokens (or whitespace-split words for corpora that
  come tokenised, such as PTB); a capped vocabulary, `<unk>` for the rest, `<eos>` at every line
  end (the PTB convention of Mikolov and Zaremba). On raw text (split "exact") a token keeps the
  space before it, as sentencepiece does (`▁the` is " the"), and any other whitespace is tokens of
  its own, so `decode(encode(text)) == text` whenever every token is in the vocabulary.
- `BPETokenizer`: byte-level byte-pair encoding (Sennrich et al. 2016; GPT-2's byte level), trained
  with Hugging Face `tokenizers`: any text in, the same text out, no `<unk>`.

A tokenizer is saved as JSON beside the model, so sampling never needs the corpus.

Fitting and encoding stream over the text in blocks of whole lines (`blocks`), so memory holds
the text, the output ids (a numpy array, 8 bytes a token) and one block's worth of Python
objects, never a Python object per token: a 100 MB corpus tokenises in seconds
(benchmarks/tokenize_speed.py). Tokenised corpora are cached on disk by `tokencache.py`.
"""

from __future__ import annotations

import itertools
import re
from array import array
from collections import Counter
from typing import Iterable, Iterator

import numpy as np

from rnnlab.errors import RnnlabError

UNK, EOS, EOD = "<unk>", "<eos>", "<eod>"
# Where one file of a many-file corpus ends and the next begins (corpus.read_sources puts it there):
# the ASCII record separator, a character no text uses. A char model reads it as a character of its
# own; a word model as the token <eod>.
END_OF_DOCUMENT = "\x1e"


class CharTokenizer:
    kind = "char"

    def __init__(self, vocab: list[str]):
        if vocab[:1] != [UNK]:
            raise RnnlabError("a char vocabulary starts with <unk>")
        self.vocab = vocab
        self.index = {tok: i for i, tok in enumerate(vocab)}
        self.unk_id = 0
        self.eos_id = self.index.get("\n")
        self.doc_id = self.index.get(END_OF_DOCUMENT)  # None: trained on one document
        # code point -> id, for every code point (0: <unk>): encoding a megabyte is one numpy gather. 8.9 MB
        # of address space, of which only the pages of the code points in use are ever touched
        self._lut = np.zeros(0x110000, dtype=np.int64)
        for i, c in enumerate(vocab[1:], start=1):
            self._lut[ord(c)] = i

    @classmethod
    def fit(cls, text: str | Iterable[str]) -> CharTokenizer:
        seen = np.zeros(0x110000, dtype=bool)
        for block in pieces(text):  # what is left of the block once the ASCII seen so far is deleted (C speed)
            rest = block.encode("utf-8", "surrogatepass").translate(None, bytes(np.flatnonzero(seen[:128])))
            if rest:
                seen[[ord(c) for c in set(rest.decode("utf-8", "surrogatepass"))]] = True
        return cls([UNK, *map(chr, np.flatnonzero(seen))])

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        ids = np.empty(len(text), dtype=np.int64)
        start = 0
        for block in blocks(text):
            codes = np.frombuffer(block.encode("ascii"), dtype=np.uint8) if block.isascii() else _code_points(block)
            np.take(self._lut, codes, out=ids[start:start + len(block)], mode="clip")  # "raise" would buffer
            start += len(block)
        return ids

    def unknown(self, text: str) -> list[str]:
        return sorted({c for c in text if c not in self.index})

    @property
    def unknown_ids(self) -> tuple[int, ...]:
        """The ids that stand for text outside the vocabulary."""
        return (self.unk_id,)

    def detokenizer(self) -> "Detokenizer":
        return Detokenizer(self)

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.piece(i) for i in ids)

    def piece(self, token_id: int) -> str:
        return "\ufffd" if token_id == self.unk_id else self.vocab[token_id]

    def to_dict(self) -> dict:
        return {"type": "char", "vocab": self.vocab}


# words with inner apostrophes stay whole ("don't", "Baptista's"); any other symbol is its own token
_WORD_RE = re.compile(r"\w+(?:['\u2019]\w+)*|[^\w\s]")
# split "exact": the whitespace before each word or symbol, then it
_PIECE_RE = re.compile(r"(\s*)(\w+(?:['\u2019]\w+)*|[^\w\s])")
SPACE = "\u2581"          # "▁": a token that begins with it stands for a space and the rest (sentencepiece's mark)
SPACED_UNK = SPACE + UNK  # an unknown word after a space: decoding keeps the space
SPLITS = ("exact", "words", "whitespace")
MAX_TYPES = 4_000_000  # distinct tokens a word count keeps before it drops the rarest
_NO_SPACE_BEFORE = set(".,;:!?)]}%") | {"'s", "n't", "'re", "'ve", "'ll", "'d", "'m", "..."}
_NO_SPACE_AFTER = set("([{$#")


class WordTokenizer:
    kind = "word"

    def __init__(self, vocab: list[str], *, lowercase: bool = False, split: str = "words"):
        """`split`: "exact" (raw text, spacing kept: rnnlab's default since tokenizer format 2), "words"
        (raw text, spacing guessed when decoding: the models before it), "whitespace" (tokenised corpora)."""
        if vocab[:2] != [UNK, EOS]:
            raise RnnlabError("a word vocabulary starts with <unk>, <eos>")
        if split not in SPLITS:
            raise RnnlabError(f"unknown split {split!r}; the word splits are {', '.join(SPLITS)}")
        self.vocab = vocab
        self.index = {tok: i for i, tok in enumerate(vocab)}
        self.unk_id, self.eos_id = 0, 1
        self.spaced_unk_id = self.index.get(SPACED_UNK, self.unk_id)
        self.doc_id = self.index.get(EOD)
        self.lowercase = lowercase
        self.split = split

    def words(self, line: str) -> list[str]:
        if self.lowercase:
            line = line.lower()
        if self.split == "exact":
            return list(_exact_pieces(line))
        return line.split() if self.split == "whitespace" else _WORD_RE.findall(line)

    def tokens(self, text: str) -> Iterable[str]:
        """Every token of the text, with <eos> at each line end and <eod> at each end of a document; a
        generator, so memory stays flat."""
        for block in blocks(text):
            # (the marker is split off first: str.splitlines would read it as a line break)
            for i, part in enumerate(block.split(END_OF_DOCUMENT)):
                if i:
                    yield EOD
                if self.split == "exact":  # only "\n" ends a line; a last line without one gets no <eos>
                    for j, line in enumerate(part.split("\n")):
                        if j:
                            yield EOS
                        yield from self.words(line)
                    continue
                for line in part.splitlines():
                    yield from self.words(line)
                    yield EOS

    @classmethod
    def fit(cls, text: str | Iterable[str], *, max_vocab: int = 20_000, min_freq: int = 1, lowercase: bool = False,
            split: str = "exact") -> WordTokenizer:
        """Keep the `max_vocab` most frequent tokens (specials included) seen at least `min_freq` times. `text`
        may be pieces that end at line ends (a stream): the count is all that is kept. Past MAX_TYPES
        distinct tokens the rarest are dropped from the count (so a 10 GB corpus needs no 10 GB of counts)."""
        if max_vocab < 3:
            raise RnnlabError(f"--max-vocab must be at least 3 (<unk>, <eos> and one word), got {max_vocab}")
        probe = cls([UNK, EOS], lowercase=lowercase, split=split)
        counts, floor = Counter(), 1
        for piece in pieces(text):
            counts.update(probe.tokens(piece))
            if len(counts) > MAX_TYPES:
                counts, floor = Counter({tok: n for tok, n in counts.items() if n > floor}), floor + 1
        counts.pop(UNK, None)
        counts.pop(EOS, None)
        documents = [EOD] if counts.pop(EOD, 0) else []  # kept whatever its count: it marks the documents
        specials = [*documents, SPACED_UNK] if split == "exact" else documents
        kept = sorted((tok for tok, n in counts.items() if n >= min_freq), key=lambda t: (-counts[t], t))
        return cls([UNK, EOS, *specials, *kept[: max_vocab - 2 - len(specials)]], lowercase=lowercase, split=split)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        get, unk, spaced = self.index.get, self.unk_id, self.spaced_unk_id
        return np.fromiter((get(tok, spaced if _spaced(tok) else unk)
                            for tok in self.tokens(text)), dtype=np.int64)  # tokens() streams

    def unknown(self, text: str) -> list[str]:
        """The words of `text` that would read as <unk> (without their space mark)."""
        return sorted({tok[1:] if _spaced(tok) else tok
                       for tok in self.tokens(text) if tok not in self.index})

    @property
    def unknown_ids(self) -> tuple[int, ...]:
        """The ids that stand for words outside the vocabulary: <unk>, and ▁<unk> after a space."""
        return tuple(sorted({self.unk_id, self.spaced_unk_id}))

    def detokenizer(self) -> "Detokenizer":
        return Detokenizer(self)

    def decode(self, ids: Iterable[int]) -> str:
        detok = self.detokenizer()
        return "".join(detok(i) for i in ids)

    def piece(self, token_id: int) -> str:
        return self.vocab[token_id]

    def text_of(self, token_id: int) -> str:
        """split "exact": the text a token stands for ("▁the" -> " the", <eos> -> a newline)."""
        if token_id == self.eos_id:
            return "\n"
        if token_id == self.doc_id:
            return END_OF_DOCUMENT
        piece = self.vocab[token_id]
        return " " + piece[1:] if _spaced(piece) else piece

    def to_dict(self) -> dict:
        return {"type": "word", "vocab": self.vocab, "lowercase": self.lowercase, "split": self.split}


class BPETokenizer:
    kind = "bpe"
    unk_id = None
    eos_id = None
    doc_id = None  # byte-level: the marker is a byte like any other

    def __init__(self, backend):
        self.backend = backend  # a tokenizers.Tokenizer
        self.vocab = [backend.id_to_token(i) for i in range(backend.get_vocab_size())]

    @classmethod
    def fit(cls, text: str | Iterable[str], *, vocab_size: int = 4096) -> BPETokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        if vocab_size < 257:
            raise RnnlabError(f"--vocab-size must be at least 257 for byte-level BPE (256 bytes + merges), got {vocab_size}")
        backend = Tokenizer(models.BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        backend.train_from_iterator((block for piece in pieces(text) for block in blocks(piece, 1 << 16)),
                                    trainer=trainer)
        return cls(backend)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        # an Encoding holds every token's string: encode a few megabytes at a time, without offsets if we can
        encode_batch = getattr(self.backend, "encode_batch_fast", self.backend.encode_batch)
        ids = array("q")
        pieces = blocks(text, 1 << 14)
        while batch := list(itertools.islice(pieces, 256)):
            for encoding in encode_batch(batch):
                ids.extend(encoding.ids)
        return np.frombuffer(ids, dtype=np.int64).copy()

    def unknown(self, text: str) -> list[str]:
        return []  # bytes cover everything

    unknown_ids: tuple[int, ...] = ()

    def detokenizer(self) -> "Detokenizer":
        return Detokenizer(self)

    def decode(self, ids: Iterable[int]) -> str:
        return self.backend.decode([int(i) for i in ids])

    def piece(self, token_id: int) -> str:
        return self.backend.decode([int(token_id)])

    def to_dict(self) -> dict:
        return {"type": "bpe", "tokenizer": self.backend.to_str()}


def blocks(text: str, size: int = 1 << 20) -> Iterator[str]:
    """The text in consecutive pieces of about `size` characters that end at a newline (or the end)."""
    start = 0
    while start < len(text):
        end = text.find("\n", start + size - 1)
        end = len(text) if end == -1 else end + 1
        yield text[start:end]
        start = end


def pieces(text: str | Iterable[str]) -> Iterable[str]:
    """A text as blocks of whole lines; pieces of a stream as they come (they end at line ends already)."""
    return blocks(text) if isinstance(text, str) else text


def _spaced(token: str) -> bool:
    """A token that stands for a space and the rest ("▁the"); "▁" alone is the character itself."""
    return token[0] == SPACE and len(token) > 1


def _exact_pieces(line: str) -> Iterator[str]:
    """The tokens of one line (no newline in it), spacing kept: each word or symbol, with a single space
    before it folded in as "▁"; every other whitespace character a token of its own."""
    end = 0
    for match in _PIECE_RE.finditer(line):
        space, word = match.groups()
        if space.endswith(" "):
            yield from space[:-1]
            yield SPACE + word
        else:
            yield from space
            yield word
        end = match.end()
    yield from line[end:]  # whitespace at the end of the line


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


class Detokenizer:
    """Turns a stream of ids into readable text piece by piece (for streaming output).

    Word level: a space between words, none before closing punctuation or after an opening
    bracket, `<eos>` as a newline. Char level: the characters themselves.
    """

    def __init__(self, tokenizer: CharTokenizer | WordTokenizer):
        self.tokenizer = tokenizer
        self.line_start = True
        self.glue_next = False
        self.quote_open = False
        self.pending: list[int] = []  # bpe: bytes of a character split over several tokens

    def __call__(self, token_id: int) -> str:
        if self.tokenizer.kind == "bpe":
            self.pending.append(int(token_id))
            text = self.tokenizer.decode(self.pending)
            if text.endswith("\ufffd") and len(self.pending) < 4:
                return ""  # an incomplete UTF-8 sequence: wait for the rest of the character
            self.pending = []
            return text
        piece = self.tokenizer.piece(int(token_id))
        if self.tokenizer.kind == "char":
            return piece
        if self.tokenizer.split == "exact":  # the spacing is in the tokens
            text = self.tokenizer.text_of(int(token_id))
            self.line_start = text == "\n"
            return text
        if token_id == self.tokenizer.eos_id:
            self.line_start, self.glue_next, self.quote_open = True, False, False
            return "\n"
        if token_id == self.tokenizer.doc_id:
            self.line_start, self.glue_next, self.quote_open = True, False, False
            return END_OF_DOCUMENT
        space = not (self.line_start or self.glue_next or piece in _NO_SPACE_BEFORE)
        self.glue_next = piece in _NO_SPACE_AFTER
        if piece == '"':
            if self.quote_open:
                space = False
            else:
                self.glue_next = True
            self.quote_open = not self.quote_open
        self.line_start = False
        return (" " if space else "") + piece


def build_tokenizer(level: str, train_text: str | Iterable[str], *, max_vocab: int = 20_000, min_freq: int = 1,
                    lowercase: bool = False, pretokenized: bool = False):
    """Fit a tokenizer on the training split only (its text, or its pieces when streamed). For bpe, `max_vocab`
    is the BPE vocabulary size."""
    if level == "bpe":
        return BPETokenizer.fit(train_text, vocab_size=max_vocab)
    if level == "char":
        return CharTokenizer.fit(train_text)
    if level == "word":
        return WordTokenizer.fit(train_text, max_vocab=max_vocab, min_freq=min_freq, lowercase=lowercase,
                                 split="whitespace" if pretokenized else "exact")
    raise RnnlabError(f"unknown level {level!r}; choose char, word or bpe")


def tokenizer_from_dict(data: dict) -> CharTokenizer | WordTokenizer | BPETokenizer:
    """The tokenizer a tokenizer.json describes, checked: a damaged or crafted file is one clear error."""
    def invalid(why: str) -> RnnlabError:
        return RnnlabError(f"tokenizer.json is not a valid rnnlab tokenizer: {why}")

    if not isinstance(data, dict):
        raise invalid(f"it holds a JSON {type(data).__name__}, not an object")
    kind = data.get("type")
    if kind in ("char", "word"):
        vocab = data.get("vocab")
        if not isinstance(vocab, list) or not all(isinstance(t, str) and t for t in vocab):
            raise invalid("'vocab' must be a list of non-empty strings")
        if len(set(vocab)) != len(vocab):
            raise invalid("'vocab' lists a token twice")
        if kind == "char" and any(len(t) != 1 for t in vocab[1:]):
            raise invalid("a char vocabulary holds single characters after <unk>")
        try:
            if kind == "char":
                return CharTokenizer(vocab)
            return WordTokenizer(vocab, lowercase=bool(data.get("lowercase")), split=data.get("split", "words"))
        except RnnlabError as e:
            raise invalid(str(e)) from None
    if kind == "bpe":
        from tokenizers import Tokenizer
        if not isinstance(data.get("tokenizer"), str):
            raise invalid("'tokenizer' must be the BPE model as a string")
        try:
            return BPETokenizer(Tokenizer.from_str(data["tokenizer"]))
        except Exception as e:  # noqa: BLE001 — the tokenizers library raises its own exception type
            raise invalid(f"the BPE model does not parse ({str(e).splitlines()[0][:120] if str(e) else e})") from None
    raise invalid(f"unknown type {kind!r}")
