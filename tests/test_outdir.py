"""A user's files are sacred: what `rnnlab train --out DIR` may write, replace and delete.

The README's promises, each tried here the way a careless user (or a kill, or a full disk) would break it:
- an existing model is never replaced without --overwrite, and --overwrite replaces only an rnnlab model;
- a folder that holds anything else is never written into;
- the old model survives a new run that fails (it is replaced only once the new one has a checkpoint);
- DIR always holds a model that loads; a kill at any moment leaves nothing that blocks the next run;
- rnnlab writes through no symbolic link;
- a full disk or a read-only folder is one line that names the folder, not a traceback.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

import rnnlab
from conftest import Forked, cli, refused, shakespeare, snapshot, tiny_args
from rnnlab.models import checkpoint


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(shakespeare(20_000), encoding="utf-8")
    return path


def train(corpus, out, *extra):
    return cli("train", corpus, "--out", out, *tiny_args(), "--max-steps", "3", *extra)


def test_a_folder_that_is_not_a_model_is_never_written_into_even_with_overwrite(corpus, tmp_path):
    home = tmp_path / "thesis"
    (home / "last").mkdir(parents=True)
    (home / "README.md").write_text("my thesis\n")
    (home / "last" / "thesis.tex").write_text("\\documentclass{article}\n")
    (home / "metrics.jsonl").write_text('{"mine": 1}\n')
    before = snapshot(tmp_path)
    for extra in ((), ("--overwrite",)):
        refused(train(corpus, home, *extra), r"holds files that are not an rnnlab model .*choose another --out")
        assert snapshot(tmp_path) == before
    refused(train(corpus, home / "README.md"), "is a file, not a folder")
    assert snapshot(tmp_path) == before


def test_a_new_run_writes_into_an_empty_folder_and_leaves_nothing_beside_it(corpus, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert train(corpus, out).returncode == 0
    rnnlab.load(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "empty"]  # no staging folder left


def test_overwrite_keeps_the_old_model_until_the_new_run_has_one(corpus, tiny_model, tmp_path):
    out = tmp_path / "model"
    shutil.copytree(tiny_model, out)
    before = snapshot(tmp_path)
    short = tmp_path / "short.txt"
    short.write_text("abcde")
    refused(cli("train", short, "--out", out, "--overwrite", *tiny_args()), "fewer than one batch")
    del before  # short.txt is new; everything else must be as it was
    assert snapshot(out) == snapshot(tiny_model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "model", "short.txt"]
    # a run that fails later, inside the loop before its first save, leaves the old model too
    refused(train(corpus, out, "--overwrite", "--hidden", "16", "--embed-dim", "1000000000000"), "memory|too big")
    assert snapshot(out) == snapshot(tiny_model)
    # and a run that succeeds replaces it as a whole
    assert train(corpus, out, "--overwrite", "--hidden", "16").returncode == 0
    assert rnnlab.load(out).config["model"]["hidden"] == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "model", "short.txt"]


def test_overwrite_replaces_only_what_rnnlab_wrote(corpus, tiny_model, tmp_path):
    out = tmp_path / "model"
    shutil.copytree(tiny_model, out)
    (out / "notes.txt").write_text("what I tried\n")
    before = snapshot(out)
    refused(train(corpus, out, "--overwrite"), r"--overwrite replaces only what rnnlab wrote.*notes\.txt")
    assert snapshot(out) == before


def test_out_that_is_a_symbolic_link_is_refused(corpus, tiny_model, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "link").symlink_to(elsewhere)
    refused(train(corpus, tmp_path / "link"), "is a symbolic link")
    assert not any(elsewhere.iterdir())


def test_resume_writes_through_no_link_planted_in_the_model_folder(corpus, tiny_model, tmp_path):
    out = tmp_path / "model"
    shutil.copytree(tiny_model, out)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (out / "metrics.jsonl").unlink()
    (out / "metrics.jsonl").symlink_to(victim)
    refused(cli("train", "--resume", out, "--max-steps", "45", "--quiet"), "metrics.jsonl is a symbolic link")
    assert victim.read_text() == "precious\n"


def test_metrics_are_appended_through_no_link(tiny_model, tmp_path):
    # a link that appears while the run goes (another user of a shared folder): O_NOFOLLOW refuses it
    from rnnlab.training.trainer import Trainer
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "metrics.jsonl").symlink_to(victim)
    trainer = Trainer.__new__(Trainer)
    trainer.out = trainer.named = tmp_path
    trainer.step, trainer.world = 5, checkpoint_world()
    with pytest.raises(rnnlab.RnnlabError, match="symbolic link stands where rnnlab writes"):
        trainer.write_metrics({"step": 5})
    assert victim.read_text() == "precious\n"


def checkpoint_world():
    from rnnlab.training.distributed import SINGLE
    return SINGLE


def die_inside_the_first_save() -> None:
    """In a forked child: the run dies inside its step-0 save (os._exit: no finally, no cleanup, as a
    kill -9 would)."""
    from rnnlab.models import checkpoint
    real = checkpoint.save_weights

    def save_then_die(model, path):
        real(model, path)
        os._exit(9)
    checkpoint.save_weights = save_then_die


def test_a_kill_inside_the_first_save_leaves_nothing_that_blocks_the_next_run(corpus, tiny_model, tmp_path):
    shutil.copytree(tiny_model, tmp_path / "m1")           # m0: a new run; m1: a run replacing a model
    runs = [["train", str(corpus), "--out", str(tmp_path / f"m{i}"), *tiny_args(), "--max-steps", "3",
             *(["--overwrite"] if i else [])] for i in (0, 1)]
    for run in runs:
        died = Forked(*run, before=die_inside_the_first_save)
        assert died.wait() == 9, died.output()[1]
    assert not (tmp_path / "m0").exists()                       # no half-made model directory
    assert snapshot(tmp_path / "m1") == snapshot(tiny_model)    # the old model, whole
    for i in (0, 1):
        assert train(corpus, tmp_path / f"m{i}", *(["--overwrite"] if i else [])).returncode == 0
        assert rnnlab.load(tmp_path / f"m{i}").config["steps"] == 3
    # the staging folders the kills left were cleaned up by the runs that followed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "m0", "m1"]


def test_resume_removes_what_kills_left_in_the_model_folder(tiny_model, tmp_path):
    out = tmp_path / "model"
    shutil.copytree(tiny_model, out)
    (out / ".last-abc123").mkdir()
    (out / ".last-abc123" / "model.safetensors").write_bytes(b"\0" * 1000)
    (out / ".model.safetensors.x1y2.tmp").write_bytes(b"\0" * 1000)
    (out / "last" / ".training_state.pt.q9.tmp").write_bytes(b"\0" * 1000)
    assert cli("train", "--resume", out, "--max-steps", "42", "--quiet").returncode == 0
    leftovers = [p.name for p in out.rglob(".*")]
    assert leftovers == []


@pytest.mark.parametrize("code, reason", [(errno.ENOSPC, "the disk is full; free some space"),
                                          (errno.EROFS, "the file system is read-only; make it writable")])
def test_a_full_disk_or_read_only_folder_is_one_line_and_loses_nothing(corpus, tmp_path, monkeypatch, code, reason):
    from safetensors import SafetensorError
    out = tmp_path / "m"
    assert train(corpus, out, "--save-every", "1").returncode == 0
    saved = snapshot(out / "last")
    calls = []

    def failing_save(model, path):  # safetensors reports the OS error inside its own message
        calls.append(path)
        raise SafetensorError(f"Error while serializing: IoError(Os {{ code: {code}, kind: Other, message: "
                              f"\\\"{os.strerror(code)}\\\" }})")

    monkeypatch.setattr(checkpoint, "save_model", failing_save)
    result = cli("train", "--resume", out, "--max-steps", "6", "--save-every", "1", "--quiet")
    assert result.returncode == 1 and "Traceback" not in result.stderr   # a log line, then the error
    assert result.stderr.strip().splitlines()[-1] == (f"rnnlab: error: cannot write in {out}: {reason}; the last "
                                                      f"complete checkpoint is kept: rnnlab train --resume {out}")
    assert calls and snapshot(out / "last") == saved       # the checkpoint before the failure, whole
    monkeypatch.undo()                                     # space freed: the resume goes on
    assert cli("train", "--resume", out, "--max-steps", "6", "--quiet").returncode == 0
    assert rnnlab.load(out).config["steps"] == 6


def test_a_failed_write_of_the_training_state_is_one_line(corpus, tmp_path, monkeypatch):
    out = tmp_path / "m"
    real = Path.write_bytes

    def full(self, data):
        if self.name.startswith(".training_state.pt"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    result = train(corpus, out)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"rnnlab: error: cannot write in {out}: the disk is full; free some space"
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt"]


def test_resume_on_a_read_only_folder_is_one_line(tiny_model, tmp_path, monkeypatch):
    import rnnlab.files
    out = tmp_path / "model"
    shutil.copytree(tiny_model, out)
    (out / ".model.safetensors.x1y2.tmp").write_bytes(b"\0")   # a leftover that cannot be removed either
    before = snapshot(out)

    def read_only(*args, **kwargs):  # every new file fails, as on a read-only mount
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(rnnlab.files.tempfile, "mkstemp", read_only)
    monkeypatch.setattr(Path, "unlink", read_only)
    result = cli("train", "--resume", out, "--max-steps", "45", "--quiet")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (f"rnnlab: error: cannot write in {out}: the file system is "
                                                      f"read-only; make it writable")
    monkeypatch.undo()
    assert snapshot(out) == before


def test_out_dot_and_an_existing_empty_folder_are_staged_inside_it(corpus, tmp_path, monkeypatch):
    # `--out .` (and a mount point) cannot be renamed: the run stages inside and moves its files up
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = cli("train", corpus, "--out", ".", *tiny_args(), "--max-steps", "3")
    assert result.returncode == 0, result.stderr
    assert rnnlab.load(work).config["steps"] == 3
    assert not [p.name for p in work.iterdir() if p.name.startswith(".")]       # no staging left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "work"]  # nothing beside it


def test_a_publish_into_a_folder_that_a_kill_interrupted_is_cleared_by_the_next_run(corpus, tiny_model, tmp_path):
    out = tmp_path / "m"
    (out / ".rnnlab-new-x1y2").mkdir(parents=True)             # what a kill mid-publish leaves: rnnlab's own
    shutil.copy(tiny_model / "model.safetensors", out / "model.safetensors")
    shutil.copy(tiny_model / "tokenizer.json", out / "tokenizer.json")
    (out / ".rnnlab-new-x1y2" / "config.json").write_text("{}")
    assert train(corpus, out).returncode == 0
    assert rnnlab.load(out).config["steps"] == 3 and not (out / ".rnnlab-new-x1y2").exists()
    (tmp_path / "mine").mkdir()                                  # without the staging folder: a user's files
    (tmp_path / "mine" / "model.safetensors").write_bytes(b"mine")
    refused(train(corpus, tmp_path / "mine"), "holds files that are not an rnnlab model")
    assert (tmp_path / "mine" / "model.safetensors").read_bytes() == b"mine"
