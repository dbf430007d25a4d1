"""`rnnlab export MODEL --format onnx --out DIR`: the network for one token, to run without PyTorch.

    DIR/model.onnx       (token (1,), state...) -> (logits (1, V), state...): one step of the network
    DIR/tokenizer.json   the model's own vocabulary file
    DIR/export.json      what the graph's inputs and outputs are, and the model's sizes
    DIR/generate.py      a generation loop on onnxruntime and numpy alone (no torch, no rnnlab)
    DIR/README.md        how to run it, here and in a browser

The graph is one step, not a sequence: the caller carries the state, exactly as rnnlab's own
sampler does, so any length and any prompt work with one small graph. The state is `h` (layers,
1, hidden), and `c` too for an LSTM. It is written with torch's TorchScript-based ONNX exporter
(`dynamo=False`): it handles the fused nn.RNN/LSTM/GRU modules directly, needs no extra package,
and is what torch 2.13 still ships; torch deprecates it in favour of the torch.export-based one,
which needs `onnxscript`.

What exports: rnn, rnn-relu, lstm and gru models (torch kernels or --impl explicit: the weights are
the same), learned or one-hot input, full softmax. minGRU and minLSTM are refused: their parallel
scan has no ONNX form here (a one-step form would be a different graph, not written yet). The
adaptive softmax is refused too. The baselines (HMM, n-gram) are not networks to export.
"""

from __future__ import annotations

import shutil
import warnings
from importlib.resources import files
from pathlib import Path

import torch
from torch import nn

from rnnlab.errors import RnnlabError
from rnnlab.files import atomic_write, output_dir, write_json, write_text
from rnnlab.inference.lm import TextModel
from rnnlab.models import checkpoint
from rnnlab.models.registry import CLASSIC

OPSET = 17


class OneStep(nn.Module):
    """(token (1,), h[, c]) -> (logits (1, V), h[, c]): the network for one token, state passed in and out."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.lstm = net.config.cell == "lstm"

    def forward(self, token: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None = None):
        x = self.net.encoder(token)[:, None]                         # (1, 1, E)
        out, hidden = self.net.rnn(x, (h, c) if self.lstm else h)     # (1, 1, H)
        logits = self.net.decoder(out[:, 0])                          # (1, V)
        return (logits, *hidden) if self.lstm else (logits, hidden)


def exportable(model: TextModel) -> None:
    net = getattr(model, "net", None)
    if net is None:
        raise RnnlabError(f"{model.path} is a {model.model_type} baseline, not a network; only RNN models export")
    config = net.config
    if config.cell not in CLASSIC:
        raise RnnlabError(f"a {config.cell} model does not export to ONNX (its parallel scan has no ONNX form "
                          f"here); the cells that do are {', '.join(CLASSIC)}")
    if config.softmax != "full":
        raise RnnlabError("a model with the adaptive softmax does not export to ONNX yet; train it with --softmax full")
    if model.tokenizer.kind == "bpe":
        raise RnnlabError("a BPE model's tokenizer needs the tokenizers library to decode; export char or word models")


def export_onnx(model: TextModel, out: str | Path) -> Path:
    """Write the one-step ONNX graph, the tokenizer, export.json, generate.py and a README into `out`,
    a new or empty folder."""
    exportable(model)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RnnlabError(f"--out {out} exists and is not an empty folder; export into a new folder")
    out = output_dir(out)
    net = model.net.cpu().eval()
    config = net.config
    state = ["h", "c"] if config.cell == "lstm" else ["h"]
    step = OneStep(net).eval()
    zeros = torch.zeros(config.layers, 1, config.hidden)
    args = (torch.zeros(1, dtype=torch.long), *([zeros] * len(state)))
    names_out = ["logits", *(f"{name}_out" for name in state)]

    def write(tmp: str) -> None:
        with warnings.catch_warnings():  # the exporter's deprecation and batch-size notes concern other uses
            warnings.simplefilter("ignore")
            torch.onnx.export(step, args, tmp, dynamo=False, opset_version=OPSET, input_names=["token", *state],
                              output_names=names_out)

    atomic_write(out / "model.onnx", write)
    shutil.copyfile(Path(model.path) / checkpoint.TOKENIZER, out / checkpoint.TOKENIZER)
    write_json(out / "export.json", {
        "format": "onnx", "opset": OPSET, "cell": config.cell, "layers": config.layers, "hidden": config.hidden,
        "vocab_size": config.vocab_size, "level": model.tokenizer.kind,
        "inputs": {"token": "int64 (1,)", **{name: f"float32 ({config.layers}, 1, {config.hidden})" for name in state}},
        "outputs": {"logits": f"float32 (1, {config.vocab_size})",
                    **{f"{name}_out": f"float32 ({config.layers}, 1, {config.hidden})" for name in state}},
        "source": str(model.path)})
    template = files("rnnlab").joinpath("static", "onnx_generate.py.txt").read_text(encoding="utf-8")
    write_text(out / "generate.py", template)
    write_text(out / "README.md", _readme(config, model.tokenizer.kind, state))
    return out


def _readme(config, level: str, state: list[str]) -> str:
    return f"""# {config.layers}x{config.hidden} {config.cell.upper()} ({level} level), exported by rnnlab

`model.onnx` is one step of the network: `(token, {", ".join(state)}) -> (logits, {", ".join(s + "_out" for s in state)})`,
with `token` an int64 array of shape (1,) and each state a float32 array of shape ({config.layers}, 1, {config.hidden}),
zeros at the start. Carry the state from one step to the next; read a prompt by stepping through its tokens.
`tokenizer.json` holds the vocabulary (`"vocab"`: token id -> text; id 0 is `<unk>`). `export.json` says all this
as data.

## Run it with Python, onnxruntime and numpy alone

```console
$ pip install onnxruntime numpy
$ python generate.py --prompt "ROMEO:" --length 200 --temperature 0.8 --seed 1
$ python generate.py --prompt "ROMEO:" --length 200 --greedy
```

`generate.py` is the whole loop (about 40 lines): encode the prompt, step through it, then sample a token from the
logits, feed it back, repeat. Greedy output is exactly `rnnlab generate MODEL --greedy`'s for a char model; for a
word model the script joins words with spaces, where rnnlab's detokenizer also glues punctuation.

## Run it in a browser

onnxruntime-web runs the same file: load it with `ort.InferenceSession.create("model.onnx")`, feed
`new ort.Tensor("int64", BigInt64Array.from([BigInt(id)]), [1])` and `new ort.Tensor("float32", state, [{config.layers}, 1,
{config.hidden}])` for each state, and carry the `*_out` tensors into the next call, exactly as generate.py does.
"""
