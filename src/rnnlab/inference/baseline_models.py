"""The non-neural baselines behind the RNNs' interface (`TextModel`): load, evaluate, generate.

    rnnlab train ptb --model hmm --states 64       # Hidden Markov Model (hmm.py), Baum-Welch
    rnnlab train ptb --model ngram --order 5       # interpolated modified Kneser-Ney (ngram.py)

A baseline's model directory has the same layout as an RNN's (config.json with its
`model_type`, tokenizer.json, model.safetensors, metrics.jsonl, README.md), so `rnnlab
evaluate`, `rnnlab generate` and `rnnlab.load` take it unchanged. The algorithms are in
`rnnlab/baselines/`; fitting and saving them is `training/baselines.py`. The adapters live
here, in inference/, so that `load()` opens any model directory with imports pointing only down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import load_file

from rnnlab.baselines.hmm import HMM
from rnnlab.baselines.ngram import KneserNey
from rnnlab.data.tokenizers import tokenizer_from_dict
from rnnlab.errors import RnnlabError
from rnnlab.inference.lm import TextModel
from rnnlab.inference.sampling import next_token
from rnnlab.models import checkpoint

BASELINES = ("hmm", "ngram")


class HMMLanguageModel(TextModel):
    model_type = "hmm"

    def __init__(self, hmm: HMM, tokenizer, config: dict, path: Path | None = None):
        super().__init__(tokenizer, config, path)
        self.hmm = hmm

    def __repr__(self) -> str:
        return f"HMMLanguageModel({self.hmm.states} states, vocab {self.tokenizer.vocab_size})"

    def num_parameters(self) -> int:
        K, V = self.hmm.states, self.hmm.vocab_size
        return (K - 1) + K * (K - 1) + K * (V - 1)  # free parameters: every row sums to one

    def stream_loss(self, ids) -> tuple[float, int]:
        return self.hmm.stream_loss(ids)

    def token_log_probs(self, ids):
        return self.hmm.token_log_probs(ids)

    @torch.inference_mode()
    def continue_ids(self, ids, steps, *, generator, **sampling) -> Iterator[int]:
        pi, A, B = (p.double().cpu() for p in self.hmm.probabilities())
        # prior = p(z_{t+1} | x_1..x_t): the HMM's whole "hidden state", carried token by token
        prior = pi
        for token in ids:
            prior = _filter_step(prior, A, B, token)
        for _ in range(steps):
            predictive = prior @ B                                                # (V,) p(x_{t+1} | x_<=t)
            token = int(next_token(predictive.log()[None], generator=generator, **sampling)[0])
            yield token
            prior = _filter_step(prior, A, B, token)


def _filter_step(prior: torch.Tensor, A: torch.Tensor, B: torch.Tensor, token: int) -> torch.Tensor:
    """One step of the forward filter: condition p(z_t | past) on x_t = token, move it through A."""
    posterior = prior * B[:, token]
    return (posterior / posterior.sum()) @ A


class NGramLanguageModel(TextModel):
    model_type = "ngram"

    def __init__(self, ngram: KneserNey, tokenizer, config: dict, path: Path | None = None):
        super().__init__(tokenizer, config, path)
        self.ngram = ngram

    def __repr__(self) -> str:
        return f"NGramLanguageModel(order {self.ngram.order}, vocab {self.tokenizer.vocab_size})"

    def num_parameters(self) -> int:
        return int(sum(len(k) for k in self.ngram.keys))  # stored n-grams, each with its count

    def stream_loss(self, ids) -> tuple[float, int]:
        return self.ngram.stream_loss(ids)

    def token_log_probs(self, ids):
        if len(ids) < 2:
            raise RnnlabError(f"the text has {len(ids)} tokens; at least 2 are needed to score one")
        return self.ngram.log_probs(ids)

    def continue_ids(self, ids, steps, *, generator, **sampling) -> Iterator[int]:
        history = list(ids)
        for _ in range(steps):
            p = torch.from_numpy(self.ngram.distribution(history[-(self.ngram.order - 1):] if self.ngram.order > 1
                                                         else []))
            token = int(next_token(p.log()[None], generator=generator, **sampling)[0])
            yield token
            history.append(token)


def load_baseline(path: Path, config: dict) -> TextModel:
    kind = config.get("model_type")
    if kind not in BASELINES:
        raise RnnlabError(f"{path} holds a {kind!r} model, which this rnnlab cannot load")
    tokenizer = tokenizer_from_dict(checkpoint.read_tokenizer_dict(path))
    weights = path / checkpoint.WEIGHTS
    if not weights.is_file():
        raise RnnlabError(f"{path} has no {checkpoint.WEIGHTS}; the model directory is incomplete")
    try:
        tensors = load_file(weights, device="cpu")
        if kind == "hmm":
            return HMMLanguageModel(HMM.from_state_dict(tensors), tokenizer, config, path)
        ngram = KneserNey.from_state_dict({k: v.numpy() for k, v in tensors.items()})
        return NGramLanguageModel(ngram, tokenizer, config, path)
    except RnnlabError:
        raise
    except Exception as e:  # noqa: BLE001 — a damaged file, whatever the library says about it
        raise RnnlabError(f"{weights} is corrupt or does not match config.json ({type(e).__name__})") from None
