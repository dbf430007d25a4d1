"""Corpora read as streams: text that is never in memory whole.

Above `STREAM_BYTES` of text (or with `--stream`), `rnnlab train` does not read its corpus into one
Python string. It reads the files a block at a time, twice: once to fit the tokenizer on the
training part (a count of characters or words, never the text), once to encode every split into
the token store that training reads by memory map (tokencache.py).

    files, one at a time (corpus.iter_files: sorted, one folder listing in memory)
      ──► 1 MB blocks of bytes ──► decoded, CRLF -> LF ──► pieces that end at a newline
      ──► train | valid | test

The splits are the in-memory reader's (corpus.load_corpus) with one difference: a `--valid-fraction`
tail is cut by bytes rather than characters (the same thing for ASCII text), at a line end when one
is within 1,000 bytes. A stream is identified by its files' paths, sizes and modification times, so
finding its store again costs a `stat` per file, not a read of the corpus.
"""

from __future__ import annotations

import codecs
import hashlib
import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from rnnlab.data.corpus import NAMED, binary_error, encoding_error, iter_files, nul_means_binary, unknown_encoding
from rnnlab.data.tokenizers import END_OF_DOCUMENT
from rnnlab.errors import RnnlabError

STREAM_BYTES = 256 << 20   # corpora larger than this are streamed without being asked
BLOCK_BYTES = 1 << 20      # bytes read at a time (larger blocks are slower: fresh pages for their ids each time)
LONGEST_LINE = 64 << 20    # a "line" longer than this is cut at a space (word tokens never straddle a piece)


@dataclass(frozen=True)
class TextStream:
    """A corpus of files read block by block. `sources` are files or folders (never named corpora:
    those are small and come with their own splits)."""
    sources: tuple[str, ...]
    glob: str = "*.txt"
    encoding: str = "utf-8"
    valid: str | None = None
    test: str | None = None
    valid_fraction: float | None = None
    pretokenized: bool = False

    def __post_init__(self):
        named = [s for s in self.sources if s in NAMED or s == "pydocs"]
        if named:
            raise RnnlabError(f"{named[0]} is a named corpus and small: it is read in memory; drop --stream")
        if self.valid is not None and self.valid_fraction is not None:
            raise RnnlabError("pass --valid FILE or --valid-fraction F, not both")

    @property
    def name(self) -> str:
        return ", ".join(self.sources)

    def files(self, split: str = "train") -> Iterator[Path]:
        sources = {"train": self.sources, "valid": (self.valid,), "test": (self.test,)}[split]
        for source in sources:
            if source is not None:
                yield from iter_files(source, self.glob)

    def fingerprint(self) -> str:
        """sha256 of the options and of every file's path, size and modification time: a stat per file."""
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode())
        for split in ("train", "valid", "test"):
            for path in self.files(split):
                stat = path.stat()
                digest.update(f"{split}|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n"
                              .encode("utf-8", "surrogateescape"))
        return digest.hexdigest()

    def size(self) -> int:
        """Bytes of text in all splits: an upper bound on the number of tokens."""
        return sum(path.stat().st_size for split in ("train", "valid", "test") for path in self.files(split))

    def texts(self) -> Iterator[tuple[str, str]]:
        """(split, text) pieces in order, train first; each piece ends at a newline but the last of a split."""
        cut = None
        if self.valid is None:  # as corpus.tail_split cuts the joined text: its endings and markers included
            total = sum(size + len(ending) for _, size, ending in _endings(self.files("train")))
            cut = int(total * (1.0 - (self.valid_fraction or 0.1)))
        for split in ("train", "valid", "test"):
            if split != "train" and getattr(self, split) is None:
                continue  # no file given: a tail of train (valid), or no such split (test)
            pieces = _lines(_documents(self.files(split), self.encoding, cut if split == "train" else None))
            for which, text in pieces:
                yield ("valid" if which else split), text


def wants_stream(sources: list[str], glob: str, asked: bool | None) -> bool:
    """Whether to read these sources as a stream: when asked, or when they add up to over STREAM_BYTES."""
    if asked is not None:
        return asked
    if any(s in NAMED or s == "pydocs" for s in sources):
        return False
    total = 0
    for source in sources:
        for path in iter_files(source, glob):
            total += path.stat().st_size
            if total > STREAM_BYTES:
                return True
    return False


def _endings(paths: Iterator[Path]) -> Iterator[tuple[Path, int, str]]:
    """(file, its bytes, what follows them) for every file in turn, as corpus.read_sources joins them: a file
    with text ends with a newline and, where there are several files, with END_OF_DOCUMENT."""
    paths = iter(paths)
    ahead = [path for path in (next(paths, None), next(paths, None)) if path is not None]
    several = len(ahead) > 1
    for path in itertools.chain(ahead, paths):
        size = path.stat().st_size
        last = b""
        if size:
            with open(path, "rb") as f:
                f.seek(size - 1)
                last = f.read(1)
        newline = "" if not size or last in (b"\n", b"\r") else "\n"
        yield path, size, newline + (END_OF_DOCUMENT if several and size else "")


def _documents(paths: Iterator[Path], encoding: str, cut: int | None) -> Iterator[tuple[bool, str]]:
    """(after the cut, text) for every file in turn, with the endings `_endings` gives. `cut` is the position
    (bytes, plus the endings before it) where the validation tail starts, or None."""
    position, after, seen = 0, False, False
    for path, size, ending in _endings(paths):
        for text, crosses in _decoded(path, encoding, None if after or cut is None else cut - position):
            if text:
                yield after, text
                seen = seen or not text.isspace()
            after = after or crosses
        if ending:
            yield after, ending
        position += size + len(ending)
    if not seen:
        raise RnnlabError("the corpus is empty; give a file or folder with text in it")


def _decoded(path: Path, encoding: str, cut: int | None) -> Iterator[tuple[str, bool]]:
    """(text, whether the cut falls right after it) for each block of one file, decoded with
    LF line ends and the errors corpus.decode gives; the block holding byte `cut` is split there (at a line
    end within 1,000 bytes when there is one)."""
    try:
        decoder = codecs.getincrementaldecoder(encoding)()
    except LookupError:
        raise unknown_encoding(encoding) from None
    utf8_like = nul_means_binary(encoding)  # also: a byte-oriented encoding, where a cut needs no alignment
    carry, offset = "", 0
    try:
        with open(path, "rb") as f:
            while True:
                data = f.read(BLOCK_BYTES)
                parts = [data]
                if cut is not None and offset <= cut < offset + len(data):
                    data += f.read(1000)  # room to reach the line end after the cut
                    at = _cut_at(data, cut - offset, utf8_like)
                    parts = [data[:at], data[at:]]
                for i, part in enumerate(parts):
                    if utf8_like and (nul := part.find(b"\x00")) != -1:
                        raise binary_error(str(path), data[:2] if offset == 0 else b"", offset + nul)
                    pending = len(decoder.getstate()[0])
                    try:
                        text = carry + decoder.decode(part, final=not data)
                    except UnicodeDecodeError as e:
                        raise encoding_error(str(path), encoding, e.object[e.start],
                                             max(offset - pending + e.start, 0)) from None
                    carry = ""
                    if text.endswith("\r") and data and len(parts) == 1:  # "\r\n" may straddle two blocks
                        text, carry = text[:-1], "\r"
                    if "\r" in text:
                        text = text.replace("\r\n", "\n").replace("\r", "\n")
                    yield text, len(parts) == 2 and i == 0
                    offset += len(part)
                if cut is not None and len(parts) == 2:
                    cut = None
                if not data:
                    break
    except OSError as e:
        raise RnnlabError(f"cannot read {path}: {e.strerror}") from None


def _cut_at(data: bytes, cut: int, utf8_like: bool) -> int:
    newline = data.find(b"\n", cut, cut + 1000)
    if newline != -1:
        return newline + 1
    while utf8_like and cut < len(data) and data[cut] & 0xC0 == 0x80:  # not inside a UTF-8 character
        cut += 1
    return cut


def _lines(pieces: Iterator[tuple[bool, str]]) -> Iterator[tuple[bool, str]]:
    """Regroup text into pieces that end at a newline (a word never straddles two), keeping each piece on
    its side of the cut; the remainder at the cut and at the end is yielded as it is."""
    held, side = [], False
    for after, text in pieces:
        if after != side and held:
            yield side, "".join(held)
            held = []
        side = after
        held.append(text)
        if "\n" in text or sum(map(len, held)) > LONGEST_LINE:
            joined = "".join(held)
            end = joined.rfind("\n") + 1 or joined.rfind(" ") + 1 or len(joined)
            yield side, joined[:end]
            held = [joined[end:]] if end < len(joined) else []
    if held:
        yield side, "".join(held)
