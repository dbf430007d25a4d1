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

import json
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from rnnlab.errors import RnnlabError
from rnnlab.files import atomic_write, replace_dir, staging_dir, write_json

FORMAT_VERSION = 1
CONFIG, TOKENIZER, WEIGHTS, STATE, METRICS, CARD = (
    "config.json", "tokenizer.json", "model.safetensors", "training_state.pt", "metrics.jsonl", "README.md")
LAST = "last"


# ---------------------------------------------------------------------------------------------
# saving


def prepare_out_dir(out: Path, *, overwrite: bool = False) -> Path:
    """Create `out` for a new run; refuse to clobber a trained model unless told to."""
    out = Path(out)
    if (out / CONFIG).exists() and not overwrite:
        raise RnnlabError(f"{out} already holds a model; pass --overwrite to replace it, "
                          f"--resume {out} to continue it, or choose another --out")
    if out.exists() and not out.is_dir():
        raise RnnlabError(f"--out {out} is a file, not a folder")
    try:
        if overwrite and out.is_dir():
            for name in (CONFIG, TOKENIZER, WEIGHTS, STATE, METRICS, CARD):
                (out / name).unlink(missing_ok=True)
            for name in (LAST, LAST + ".old"):
                shutil.rmtree(out / name, ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".rnnlab-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise RnnlabError(f"cannot write to --out {out}: {e.strerror}; choose a writable folder") from None
    return out


def save_weights(model: torch.nn.Module, path: Path) -> None:
    atomic_write(path, lambda tmp: save_model(model, tmp))


def save_state(state: dict, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


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


def read_tokenizer_dict(directory: Path) -> dict:
    path = Path(directory) / TOKENIZER
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
    try:
        load_model(model, path, strict=True, device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RnnlabError(f"{path} is corrupt or does not match config.json ({first[:160]})") from None


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
