"""Fitting the baselines (HMM by Baum-Welch, Kneser-Ney n-gram by counting) and saving them as model
directories like an RNN's: `rnnlab train CORPUS --model hmm|ngram`. They train in one go, so they have
no `last/` checkpoint to resume."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from rnnlab.baselines.hmm import HMM
from rnnlab.baselines.ngram import KneserNey
from rnnlab.errors import RnnlabError
from rnnlab.files import write_text
from rnnlab.inference.baseline_models import HMMLanguageModel, NGramLanguageModel
from rnnlab.inference.lm import TextModel
from rnnlab.inference.metrics import perplexity
from rnnlab.models import checkpoint
from rnnlab.training.card import model_card, score_splits
from rnnlab.version import __version__


def _initial_hmm(states: int, train_ids: np.ndarray, vocab_size: int, seed: int) -> HMM:
    """Random transitions, and emissions that start near the unigram distribution: EM from
    uniform-random emissions spends its first iterations rediscovering word frequencies."""
    hmm = HMM(states=states, vocab_size=vocab_size, seed=seed, dtype=torch.float32)
    unigram = np.bincount(train_ids, minlength=vocab_size).astype(np.float64) + 0.1
    rng = np.random.default_rng(seed)
    emission = unigram[None, :] * rng.exponential(1.0, size=(states, vocab_size))  # unigram x Dirichlet(1) noise
    pi, A, _ = (p.double() for p in hmm.probabilities())
    return hmm.set_probabilities(pi, A, emission / emission.sum(1, keepdims=True))


def fit_baseline(kind: str, out: Path, tokenizer, train_ids: np.ndarray, valid_ids: np.ndarray | None,
                   test_ids: np.ndarray | None, run_config: dict, *, states: int = 64, order: int = 5,
                   em_iterations: int = 20, time_budget: float | None = None, seed: int = 1337, log=None) -> TextModel:
    """Fit an HMM or an n-gram model on `train_ids`, save it in `out` and return it."""
    log = log or (lambda message: None)
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
                + (f" | valid loss {record['valid_loss']:.4f} | ppl {perplexity(record['valid_loss']):.2f}"
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

    results = score_splits(model, {"valid": valid_ids, "test": test_ids}, log)
    run_config.update(model_type=kind, results=results, train_seconds=round(time.perf_counter() - start, 1),
                      parameters=model.num_parameters(), rnnlab_version=__version__)
    checkpoint.save_tensors(tensors, out / checkpoint.WEIGHTS)
    write_text(out / checkpoint.METRICS, "".join(json.dumps(r) + "\n" for r in metrics))
    checkpoint.save_static(out, run_config, tokenizer.to_dict())
    write_text(out / checkpoint.CARD, _card(run_config, model))
    return model


def _card(config: dict, model: TextModel) -> str:
    what = (f"HMM with {config['hmm']['states']} states" if model.model_type == "hmm"
            else f"interpolated modified Kneser-Ney {config['ngram']['order']}-gram")
    return model_card(config, model, title=f"rnnlab baseline: {what}",
                      facts=[f"parameters: {model.num_parameters():,}; trained in {config['train_seconds']:.1f} s"])
