"""`rnnlab.load`: open a model directory, whichever model it holds, on the CPU unless told otherwise."""

from __future__ import annotations

from pathlib import Path

import torch

from rnnlab.data.tokenizers import tokenizer_from_dict
from rnnlab.devices import pick_device
from rnnlab.errors import RnnlabError
from rnnlab.inference.baseline_models import load_baseline
from rnnlab.inference.lm import LanguageModel, TextModel
from rnnlab.inference.sampling import check_precision
from rnnlab.models import checkpoint
from rnnlab.models.config import ModelConfig, memory_bytes
from rnnlab.models.rnnlm import RNNLM


def load(path: str | Path, device: str | torch.device = "cpu", precision: str = "fp32") -> TextModel:
    """Load a model directory (on the CPU unless told otherwise), whatever device trained it. `precision`:
    of an RNN's generation steps (`LanguageModel.precision`; "bf16" is faster on CPUs with AMX)."""
    path = Path(path)
    device = pick_device(device) if isinstance(device, str) else device  # before reading anything
    check_precision(precision)
    config = checkpoint.read_config(path)
    if config.get("model_type", "rnn") != "rnn":
        if precision != "fp32":
            raise RnnlabError(f"--precision {precision} is for RNN models; {path} holds a {config['model_type']} "
                              f"baseline")
        return load_baseline(path, config)
    try:
        model_config = ModelConfig.from_dict(config["model"])
    except (KeyError, TypeError, RnnlabError) as e:
        reason = f": {e}" if isinstance(e, RnnlabError) else ""
        raise RnnlabError(f"{path / checkpoint.CONFIG} has no valid 'model' section{reason}; the directory is "
                          f"corrupt") from None
    tokenizer = tokenizer_from_dict(checkpoint.read_tokenizer_dict(path))
    if tokenizer.vocab_size != model_config.vocab_size:
        raise RnnlabError(f"{path}: tokenizer.json has {tokenizer.vocab_size} tokens but config.json says "
                          f"{model_config.vocab_size}; the directory mixes two models")
    checkpoint.check_weights_match(path, model_config, RNNLM)  # before any memory is allocated for it
    model_config.check_fits(memory_bytes(), copies=1, what="loading it", fix="load it on a bigger machine")
    net = RNNLM(model_config)
    checkpoint.load_weights(net, path)
    net.eval()
    lm = LanguageModel(net, tokenizer, config, path).to(device)
    lm.precision = precision
    return lm
