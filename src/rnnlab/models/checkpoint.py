"""Model directories: save and load, atomically, with nothing unpickled.

    runs/my-model/              the model directory: the best checkpoint; every command takes it
      config.json               format version, model / tokenizer / training settings, results
      tokenizer.json            the vocabulary, so sampling never needs the corpus
      model.safetensors         weights (safetensors: loading runs no code)
      training_state.pt         optimiser, schedule, data position, RNG (tensors only, weights_only=True)
      metrics.jsonl             one JSON line per log interval and per validation
      README.md                 the model card
      last/                     the latest checkpoint, for --resume (same files)

Every file is written to a temporary name, fsynced and renamed into place, so a crash leaves
either the old file or the new one. `last/` is replaced as a whole folder: it is built beside
the old one, then swapped in with two renames; if a crash falls between them, `last.old/`
still holds a complete checkpoint and `resume_dir` finds it.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import glob
import io
import json
import math
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_file, save_model

from rnnlab.errors import RnnlabError
from rnnlab.files import atomic_write, exchange, fsync_dir, replace_dir, staging_dir, write_json

FORMAT_VERSION = 1
CONFIG, TOKENIZER, WEIGHTS, STATE, METRICS, CARD = (
    "config.json", "tokenizer.json", "model.safetensors", "training_state.pt", "metrics.jsonl", "README.md")
LAST = "last"


# ---------------------------------------------------------------------------------------------
# saving


FILES = (CONFIG, TOKENIZER, WEIGHTS, STATE, METRICS, CARD)
OWN = frozenset((*FILES, LAST, LAST + ".old"))   # every name rnnlab gives an entry of a model directory


def is_leftover(name: str) -> bool:
    """A temporary file or staging folder of a write that a kill interrupted (files.atomic_write, save_last)."""
    return name.startswith(".last-") or (name.startswith(".") and name.endswith(".tmp"))


class NewModelDir:
    """The directory of a new run, made so that `target` never holds half a model and never loses
    what it held before the new run has a model to put there.

    The run writes into a hidden staging folder until its first checkpoint (the step-0 save) is
    complete; `publish()` then puts it in place:
    - a new `target`: staged beside it (`.NAME.rnnlab-new-XXXX`), published by one rename;
    - an old model under --overwrite: staged beside it, swapped in atomically where the system can;
    - an existing empty folder (`.`, a mount point, a folder made for the run): staged inside it
      (`.rnnlab-new-XXXX`), published by moving the files up, config.json last: until it lands the
      folder is not a model, and a kill in between leaves what the next run recognises and clears.
    An error before `publish()` (a corpus too short for one batch, a model too big for memory)
    leaves `target` as it was. `target` must be absent, an empty folder, or (with overwrite) a
    folder that holds only an rnnlab model; anything else is refused before a byte is written.
    """

    INSIDE = ".rnnlab-new-"

    def __init__(self, target: Path, *, overwrite: bool = False):
        self.target = Path(os.path.abspath(target))   # "." has a parent to stage beside, or is staged into
        self.shown = Path(target)
        self.staging: Path | None = None
        self.inside = False                            # staged inside an existing empty folder
        self.interrupted: list[str] = []               # what a kill left of an earlier publish into it
        self._check(overwrite)  # everything that can be said before writing is said now

    def _check(self, overwrite: bool) -> None:
        target, shown = self.target, self.shown
        if target.is_symlink():
            raise RnnlabError(f"--out {shown} is a symbolic link; rnnlab writes only into real folders "
                              f"(give the folder it points to)")
        if target.exists() and not target.is_dir():
            raise RnnlabError(f"--out {shown} is a file, not a folder")
        if not target.is_dir():
            return
        try:
            names = sorted(p.name for p in target.iterdir())
        except OSError as e:
            raise RnnlabError(f"cannot read --out {shown}: {e.strerror}; choose another folder") from None
        if not (target / CONFIG).is_file():
            ours = all(n in OWN or is_leftover(n) or n.startswith(self.INSIDE) for n in names)
            if names and not (ours and any(n.startswith(self.INSIDE) for n in names)):
                raise RnnlabError(f"--out {shown} holds files that are not an rnnlab model ({_some(names)}); "
                                  f"rnnlab writes a new model only into a new or empty folder: choose another --out")
            self.inside, self.interrupted = True, names
            return
        if not overwrite:
            raise RnnlabError(f"{shown} already holds a model; pass --overwrite to replace it, "
                              f"--resume {shown} to continue it, or choose another --out")
        foreign = [n for n in names if n not in OWN and not is_leftover(n)]
        if foreign:
            raise RnnlabError(f"--overwrite replaces only what rnnlab wrote, and {shown} also holds "
                              f"{_some(foreign)}; move those out first, or choose another --out")

    def create(self) -> Path:
        """Make the staging folder; returns where the run writes until `publish()`."""
        target = self.target
        try:
            if self.inside:
                for name in self.interrupted:  # a publish a kill interrupted: rnnlab's own files
                    path = target / name
                    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
                self.staging = staging_dir(target, self.INSIDE)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                for stale in target.parent.glob(f".{glob.escape(target.name)}.rnnlab-new-*"):  # a killed run's
                    shutil.rmtree(stale, ignore_errors=True)
                self.staging = staging_dir(target.parent, f".{target.name}.rnnlab-new-")
        except OSError as e:
            raise RnnlabError(f"cannot write to --out {self.shown}: {e.strerror}; choose a writable folder") from None
        return self.staging

    def publish(self) -> Path:
        """Put the staging folder in place as `target`; from now on the run writes there (the path
        as the user gave it is returned)."""
        if self.staging is None:
            return self.shown
        if self.inside:
            for name in sorted(os.listdir(self.staging), key=lambda n: n == CONFIG):  # config.json last
                os.replace(self.staging / name, self.target / name)
            os.rmdir(self.staging)
            fsync_dir(self.target)
        elif self.target.is_dir():
            if not exchange(self.staging, self.target):  # no atomic swap here: two renames
                os.replace(self.target, self.staging.with_name(self.staging.name + "-old"))
                os.replace(self.staging, self.target)
                self.staging = self.staging.with_name(self.staging.name + "-old")
            shutil.rmtree(self.staging, ignore_errors=True)      # the old model, now replaced
            fsync_dir(self.target.parent)
        else:
            os.replace(self.staging, self.target)
            fsync_dir(self.target.parent)
        self.staging = None
        return self.shown

    def abandon(self) -> None:
        """The run failed before it had a model to publish: remove what it wrote."""
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None


def _some(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def clean_leftovers(directory: Path) -> None:
    """Remove the temporary files and staging folders that kills left in a model directory (best
    effort: on a read-only folder the run's first write says what is wrong)."""
    for entry in (directory, directory / LAST):
        if entry.is_dir() and not entry.is_symlink():
            for path in entry.iterdir():
                if is_leftover(path.name):
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        with contextlib.suppress(OSError):
                            path.unlink()


def check_no_links(directory: Path) -> None:
    """rnnlab writes through no symbolic link: one where a model file belongs is refused, not followed."""
    for name in OWN:
        if (directory / name).is_symlink():
            raise RnnlabError(f"{directory / name} is a symbolic link; rnnlab does not write through links: "
                              f"replace it with the file itself")


def _os_error(e: SafetensorError) -> OSError:
    """safetensors reports a failed write as text ("IoError(Os { code: 28, ... })"); the errno inside it."""
    found = re.search(r"code: (\d+)", str(e))
    code = int(found.group(1)) if found else errno.EIO
    return OSError(code, os.strerror(code))


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    try:
        atomic_write(path, lambda tmp: save_file(tensors, tmp))
    except SafetensorError as e:
        raise _os_error(e) from None


def packs_weights(model: torch.nn.Module) -> bool:
    """Whether some of the model's tensors are parts of one buffer, as cuDNN packs an RNN's weights on a GPU;
    safetensors refuses to write those (a tie, one tensor under two names, it handles itself)."""
    views: dict[int, set] = {}
    for t in model.state_dict().values():
        views.setdefault(t.untyped_storage().data_ptr(), set()).add((t.data_ptr(), tuple(t.shape), t.stride()))
    return any(len(v) > 1 for v in views.values())


def _unpacked(model: torch.nn.Module) -> torch.nn.Module:
    """The model itself, or, where its weights are packed (`packs_weights`), a copy on the CPU whose tensors
    each have their own buffer (ties kept): what safetensors can write and read into."""
    return copy.deepcopy(model).cpu() if packs_weights(model) else model


def save_weights(model: torch.nn.Module, path: Path) -> None:
    model = _unpacked(model)
    try:
        atomic_write(path, lambda tmp: save_model(model, tmp))
    except SafetensorError as e:
        raise _os_error(e) from None


def save_state(state: dict, path: Path) -> None:
    # serialised in memory, then written by Python: a full disk is an OSError, not torch's RuntimeError
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getbuffer()))


def save_static(directory: Path, config: dict, tokenizer_dict: dict) -> None:
    """The files that do not change during a run: config and tokenizer."""
    write_json(directory / TOKENIZER, tokenizer_dict)
    write_json(directory / CONFIG, {"format_version": FORMAT_VERSION, **config})


def save_checkpoint(directory: Path, model: torch.nn.Module, state: dict, config: dict,
                    tokenizer_dict: dict) -> None:
    """Save the best checkpoint into `directory` itself (each file atomic)."""
    save_static(directory, config, tokenizer_dict)
    save_weights(model, directory / WEIGHTS)
    save_state(state, directory / STATE)


def save_last(directory: Path, model: torch.nn.Module, state: dict, config: dict,
              tokenizer_dict: dict) -> Path:
    """Replace `directory/last/` as a whole: build it beside, then swap it in."""
    directory = Path(directory)
    staging = staging_dir(directory, ".last-")
    try:
        save_checkpoint(staging, model, state, config, tokenizer_dict)
        replace_dir(staging, directory / LAST)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory / LAST


# ---------------------------------------------------------------------------------------------
# loading


def read_config(directory: Path) -> dict:
    directory = Path(directory)
    if not directory.exists():
        raise RnnlabError(f"no such model directory: {directory}")
    if not directory.is_dir():
        raise RnnlabError(f"{directory} is a file; a model is a directory made by `rnnlab train`")
    path = directory / CONFIG
    if not path.is_file():
        raise RnnlabError(f"{directory} is not a model directory (no {CONFIG}); train one with `rnnlab train`")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RnnlabError(f"{path} is corrupt (not valid JSON); retrain, or restore it from a backup") from None
    if not isinstance(config, dict) or not isinstance(config.get("format_version"), int):
        raise RnnlabError(f"{path} has no format_version; it was not written by rnnlab")
    if config["format_version"] > FORMAT_VERSION:
        raise RnnlabError(f"{directory} was written by a newer rnnlab (format {config['format_version']}, "
                          f"this one reads up to {FORMAT_VERSION}); upgrade rnnlab")
    return config


_CORPUS_FIELDS = {"valid": str, "test": str, "glob": str, "encoding": str, "valid_fraction": (int, float),
                  "pretokenized": bool, "documents": bool, "train_sha256": str, "name": str}


def recorded_corpus(config: dict, directory: Path, *, sources: bool = True) -> dict:
    """The corpus config.json records (options, and the sources unless `sources=False`: a model
    trained on text given from Python has none), checked, for evaluate and --resume."""
    corpus = config.get("corpus")
    files = corpus.get("sources") if isinstance(corpus, dict) else None
    usable = (isinstance(corpus, dict)
              and (isinstance(files, list) and files and all(isinstance(f, str) and f for f in files) or not sources)
              and all(corpus.get(k) is None or _is(corpus[k], kind) for k, kind in _CORPUS_FIELDS.items()))
    if not usable:
        raise RnnlabError(f"{Path(directory) / CONFIG} does not record a usable corpus; pass the corpus")
    return corpus


def _is(value, kind) -> bool:
    """isinstance, except that a JSON true is not a number."""
    return isinstance(value, bool) if kind is bool else isinstance(value, kind) and not isinstance(value, bool)


def recorded_sections(config: dict, directory: Path, *names: str) -> None:
    """Check that config.json's `names` sections are JSON objects (a crafted file may hold anything)."""
    for name in names:
        if not isinstance(config.get(name), dict):
            raise RnnlabError(f"{Path(directory) / CONFIG} has no valid {name!r} section; the directory is corrupt")


def read_tokenizer_dict(directory: Path) -> dict:
    path = Path(directory) / TOKENIZER
    if path.exists() and not path.is_file():  # a FIFO would block the read forever
        raise RnnlabError(f"{path} is not a regular file; the model directory is damaged")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RnnlabError(f"{directory} has no {TOKENIZER}; the model directory is incomplete") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RnnlabError(f"{path} is corrupt (not valid JSON); retrain, or restore it from a backup") from None


def load_weights(model: torch.nn.Module, directory: Path) -> None:
    path = Path(directory) / WEIGHTS
    if not path.is_file():
        raise RnnlabError(f"{directory} has no {WEIGHTS}; the model directory is incomplete")
    target = _unpacked(model)
    try:
        load_model(target, path, strict=True, device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RnnlabError(f"{path} is corrupt or does not match config.json ({first[:160]})") from None
    if target is not model:
        with torch.no_grad():
            model.load_state_dict(target.state_dict())   # copied into the packed buffer, which stays packed


def check_weights_match(directory: Path, config, build) -> None:
    """Compare model.safetensors' header (names and shapes, read without the tensors) with the model
    `config` describes, built on the meta device (shapes, no memory). A crafted or mixed-up
    config.json ("layers": 1000000, "hidden": 20000) is refused here, before anything is allocated."""
    path = Path(directory) / WEIGHTS
    if not path.is_file():
        raise RnnlabError(f"{directory} has no {WEIGHTS}; the model directory is incomplete")
    try:
        with safe_open(path, framework="pt") as f:
            stored = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RnnlabError(f"{path} is corrupt ({first[:160]})") from None
    stored_count = sum(math.prod(shape) for shape in stored.values())
    if config.approx_parameters() > 2 * stored_count + 1_000_000:  # far bigger than the file: no meta build either
        raise RnnlabError(f"{path} holds {stored_count:,} parameters but config.json describes a model of about "
                          f"{config.approx_parameters():.3g}; the directory mixes two models")
    with torch.device("meta"):
        net = build(config)
    groups: dict[int, list[str]] = {}  # tied weights are one tensor under two names; the file holds one of them
    for name, tensor in [*net.named_parameters(remove_duplicate=False), *net.named_buffers()]:
        groups.setdefault(id(tensor), []).append(name)
    shapes = {name: tuple(tensor.shape) for name, tensor in net.state_dict(keep_vars=True).items()}
    for names in groups.values():
        if not any(stored.get(name) == shapes[name] for name in names):
            name = names[0]
            found = "is missing" if not any(n in stored for n in names) else \
                f"has shape {list(next(stored[n] for n in names if n in stored))}"
            raise RnnlabError(f"{path} does not match config.json: {name} {found}, the config needs "
                              f"{list(shapes[name])}")


def load_state(directory: Path) -> dict:
    path = Path(directory) / STATE
    if not path.is_file():
        raise RnnlabError(f"{directory} has no {STATE}; it cannot be resumed")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 — any failure to read the file means the same to a user
        raise RnnlabError(f"{path} is corrupt ({type(e).__name__}); resume from an earlier copy") from None


def resume_dir(directory: Path) -> Path:
    """The checkpoint folder to resume from: last/, or last.old/ if a crash hit the swap."""
    directory = Path(directory)
    for name in (LAST, LAST + ".old"):
        if (directory / name / STATE).is_file():
            return directory / name
    if (directory / STATE).is_file():
        return directory
    raise RnnlabError(f"{directory} holds no checkpoint to resume from (no {LAST}/{STATE})")
