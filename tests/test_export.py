"""`rnnlab export`: a model's one-step graph in ONNX runs on onnxruntime alone and writes what rnnlab writes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import rnnlab
from conftest import QUIET, TINY, cli, refused, shakespeare

ort = pytest.importorskip("onnxruntime", reason="the export tests need onnxruntime: pip install 'rnnlab[export]'")

NO_TORCH = ("import runpy, sys; sys.modules['torch'] = None; sys.modules['rnnlab'] = None; "   # import torch fails
            "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


def onnx_logits(directory, ids: list[int]) -> np.ndarray:
    """The logits after each token of `ids`, stepping the exported graph with the state carried."""
    import json
    spec = json.loads((directory / "export.json").read_text())
    session = ort.InferenceSession(str(directory / "model.onnx"))
    names = [name for name in spec["inputs"] if name != "token"]
    state = {name: np.zeros((spec["layers"], 1, spec["hidden"]), np.float32) for name in names}
    out = []
    for token in ids:
        logits, *new = session.run(None, {"token": np.array([token], np.int64), **state})
        state = dict(zip(names, new))
        out.append(logits[0])
    return np.stack(out)


@pytest.fixture(scope="session")  # session: xdist may interleave modules
def models(tmp_path_factory, tiny_model):
    """The session's tiny LSTM, and a GRU and a ReLU RNN trained for a few steps."""
    root = tmp_path_factory.mktemp("export")
    (root / "corpus.txt").write_text(shakespeare(20_000))
    made = {"lstm": tiny_model}
    for cell in ("gru", "rnn-relu"):
        rnnlab.train(str(root / "corpus.txt"), root / cell, cell=cell, max_steps=5, **{**TINY, "layers": 2}, **QUIET)
        made[cell] = root / cell
    return made


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn-relu"])
def test_onnx_logits_match_pytorch_over_200_steps_from_a_prompt(models, tmp_path, cell):
    assert cli("export", models[cell], "--out", tmp_path / "onnx").returncode == 0
    lm = rnnlab.load(models[cell])
    ids = lm.tokenizer.encode(shakespeare(40_000)[30_000:30_200]).tolist()    # text the model has not seen
    with torch.no_grad():
        expected = lm.net(torch.tensor([ids]))[0][0].numpy()                  # one fused pass over all 200
    got = onnx_logits(tmp_path / "onnx", ids)
    assert got.shape == expected.shape == (200, lm.tokenizer.vocab_size)
    assert np.abs(got - expected).max() < 1e-4


def test_greedy_generation_on_onnxruntime_alone_is_rnnlabs_text(models, tmp_path):
    assert cli("export", models["lstm"], "--out", tmp_path / "onnx").returncode == 0
    ours = cli("generate", models["lstm"], "--prompt", "ROMEO:", "--length", "150", "--greedy").stdout
    theirs = subprocess.run([sys.executable, "-c", NO_TORCH, str(tmp_path / "onnx" / "generate.py"), "--prompt",
                             "ROMEO:", "--length", "150", "--greedy"], capture_output=True, text=True, timeout=120)
    assert theirs.returncode == 0, theirs.stderr
    assert theirs.stdout == ours and len(ours) > 150
    sampled = subprocess.run([sys.executable, "-c", NO_TORCH, str(tmp_path / "onnx" / "generate.py"), "--length",
                              "50", "--temperature", "0.8", "--seed", "1"], capture_output=True, text=True, timeout=120)
    assert sampled.returncode == 0 and len(sampled.stdout) > 50


def test_export_writes_the_folder_it_documents(models, tmp_path):
    out = tmp_path / "onnx"
    result = cli("export", models["lstm"], "--out", out)
    assert result.returncode == 0 and "generate.py" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "export.json", "generate.py", "model.onnx",
                                                     "tokenizer.json"]
    assert (out / "tokenizer.json").read_bytes() == (models["lstm"] / "tokenizer.json").read_bytes()
    assert "onnxruntime-web" in (out / "README.md").read_text()


def test_what_cannot_export_is_refused_in_one_line(models, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    refused(cli("export", models["lstm"], "--out", tmp_path / "full"), "not an empty folder")
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"
    (tmp_path / "c.txt").write_text(shakespeare(20_000))
    rnnlab.train(str(tmp_path / "c.txt"), tmp_path / "min", cell="mingru", max_steps=2, **TINY, **QUIET)
    refused(cli("export", tmp_path / "min", "--out", tmp_path / "o1"), "mingru model does not export to ONNX")
    rnnlab.train(str(tmp_path / "c.txt"), tmp_path / "ng", model="ngram", order=2, **QUIET)
    refused(cli("export", tmp_path / "ng", "--out", tmp_path / "o2"), "ngram baseline, not a network")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
