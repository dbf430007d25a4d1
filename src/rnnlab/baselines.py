"""The non-neural baselines behind the RNNs' interface: train, save, load, evaluate, generate.

    rnnlab train ptb --model hmm --states 64       # Hidden Markov Model (hmm.py), Baum-Welch
    rnnlab train ptb --model ngram --order 5       # interpolated modified Kneser-Ney (ngram.py)

A baseline's model directory has the same layout as an RNN's (config.json with its
`model_type`, tokenizer.json, model.safetensors, metrics.jsonl, README.md), so `rnnlab
evaluate`, `rnnlab generate` and `rnnlab.load` take it unchanged. Baselines train in one go
(EM iterations or counting): they have no `last/` checkpoint to resume.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rnnlab import __version__, checkpoint
from rnnlab.errors import RnnlabError
from rnnlab.evaluate import summarize
from rnnlab.generate import next_token
from rnnlab.hmm import HMM
from rnnlab.lm import TextModel
from rnnlab.ngram import KneserNey
from rnnlab.tokenize import tokenizer_from_dict

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

    def continue_ids(self, ids, steps, *, generator, **sampling) -> Iterator[int]:
        history = list(ids)
        for _ in range(steps):
            p = torch.from_numpy(self.ngram.distribution(history[-(self.ngram.order - 1):] if self.ngram.order > 1
                                                         else []))
            token = int(next_token(p.log()[None], generator=generator, **sampling)[0])
            yield token
            history.append(token)


# ---------------------------------------------------------------------------------------------
# training


def _initial_hmm(states: int, train_ids: np.ndarray, vocab_size: int, seed: int) -> HMM:
    """Random transitions, and emissions that start near the unigram distribution: EM from
    uniform-random emissions spends its first iterations rediscovering word frequencies."""
    hmm = HMM(states=states, vocab_size=vocab_size, seed=seed, dtype=torch.float32)
    unigram = np.bincount(train_ids, minlength=vocab_size).astype(np.float64) + 0.1
    rng = np.random.default_rng(seed)
    emission = unigram[None, :] * rng.exponential(1.0, size=(states, vocab_size))  # unigram x Dirichlet(1) noise
    pi, A, _ = (p.double() for p in hmm.probabilities())
    return hmm.set_probabilities(pi, A, emission / emission.sum(1, keepdims=True))


def train_baseline(kind: str, out: Path, tokenizer, train_ids: np.ndarray, valid_ids: np.ndarray | None,
                   test_ids: np.ndarray | None, run_config: dict, *, states: int = 64, order: int = 5,
                   em_iterations: int = 20, time_budget: float | None = None, seed: int = 1337, log=print) -> TextModel:
    """Fit an HMM or an n-gram model on `train_ids`, save it in `out` and return it."""
    start = time.perf_counter()
    metrics = []
    if kind == "hmm":
        if states < 1:
            raise RnnlabError(f"--states must be at least 1, got {states}")
        hmm = _initial_hmm(states, train_ids, tokenizer.vocab_size, seed)
        best, best_valid = None, math.inf
        for iteration in range(1, em_iterations + 1):
            train_ll = hmm.fit(train_ids, iterations=1)[0]
            record = {"iteration": iteration, "train_loss": -train_ll / len(train_ids),
                      "elapsed": round(time.perf_counter() - start, 2)}
            if valid_ids is not None and len(valid_ids) > 1:
                record["valid_loss"] = hmm.stream_loss(valid_ids)[0]
                if record["valid_loss"] < best_valid:  # EM can overfit small data: keep the best
                    best_valid, best = record["valid_loss"], {k: v.clone() for k, v in hmm.state_dict().items()}
            metrics.append(record)
            log(f"EM iteration {iteration:3d} | train loss {record['train_loss']:.4f}"
                + (f" | valid loss {record['valid_loss']:.4f} | ppl {math.exp(record['valid_loss']):.2f}"
                   if "valid_loss" in record else ""))
            if time_budget is not None and time.perf_counter() - start >= 60 * time_budget:
                log(f"stopped: used the --time-budget of {time_budget:g} min")
                break
        if best is not None:
            hmm.load_state_dict(best)
        model: TextModel = HMMLanguageModel(hmm, tokenizer, run_config, out)
        tensors = {k: v.contiguous() for k, v in hmm.state_dict().items()}
        run_config["hmm"] = {"states": states, "em_iterations": len(metrics)}
    elif kind == "ngram":
        ngram = KneserNey(order, vocab_size=tokenizer.vocab_size).fit(train_ids)
        model = NGramLanguageModel(ngram, tokenizer, run_config, out)
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in ngram.state_dict().items()}
        run_config["ngram"] = {"order": order}
    else:
        raise RnnlabError(f"unknown model {kind!r}; choose rnn, hmm or ngram")

    results = {}
    for split, ids in (("valid", valid_ids), ("test", test_ids)):
        if ids is not None and len(ids) > 1:
            results[split] = summarize(*model.stream_loss(ids))
            log(f"{split}: loss {results[split]['loss']:.4f} | ppl {results[split]['perplexity']:.2f}")
    run_config.update(model_type=kind, results=results, train_seconds=round(time.perf_counter() - start, 1),
                      parameters=model.num_parameters(), rnnlab_version=__version__)
    checkpoint.atomic_write(out / checkpoint.WEIGHTS, lambda tmp: save_file(tensors, tmp))
    checkpoint.write_text(out / checkpoint.METRICS, "".join(json.dumps(r) + "\n" for r in metrics))
    checkpoint.save_static(out, run_config, tokenizer.to_dict())
    checkpoint.write_text(out / checkpoint.CARD, _card(run_config, model))
    return model


def _card(config: dict, model: TextModel) -> str:
    c, r = config["corpus"], config.get("results", {})
    what = (f"HMM with {config['hmm']['states']} states" if model.model_type == "hmm"
            else f"interpolated modified Kneser-Ney {config['ngram']['order']}-gram")
    lines = [f"# rnnlab baseline: {what} on {c['name']}", "",
             f"- tokenizer: {config['tokenizer']['level']} level, vocabulary {model.tokenizer.vocab_size:,}",
             f"- parameters: {model.num_parameters():,}; trained in {config['train_seconds']:.1f} s",
             f"- command: `{config.get('command', '')}`", "",
             "| split | loss (nats/token) | perplexity | bits per token | tokens |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {s} | {x['loss']:.4f} | {x['perplexity']:.2f} | {x['bits_per_token']:.4f} | {x['tokens']:,} |"
              for s, x in r.items()]
    return "\n".join(lines) + "\n"


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
