"""What a training run is told: the training loop (`TrainConfig`), the text and its tokens
(`DataConfig`), pretrained input vectors (`EmbeddingConfig`) and the non-neural baselines
(`BaselineConfig`). With `ModelConfig` (models/config.py) they are every option of `rnnlab
train`; each field's help is the command line's. Torch-free, like the help it feeds."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from rnnlab.errors import RnnlabError
from rnnlab.options import check_at_least_one, check_seed, check_types, option, parse_or_none

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "wsd", "plateau", "step")
PRECISIONS = ("fp32", "bf16")
LEVELS = ("char", "word", "bpe")
BASELINES = ("hmm", "ngram")


@dataclass
class TrainConfig:
    batch_size: int = option(32, "parallel token streams (rows of batchify)", metavar="N")
    bptt: int = option(128, "tokens per truncated-BPTT window: how far back gradients flow", metavar="N")
    optimizer: str = option("adamw", "sgd | adam | adamw; adamw is forgiving, sgd reproduces Zaremba et al.",
                            metavar="NAME")
    lr: float = option(3e-3, "peak learning rate", metavar="X")
    momentum: float = option(0.0, "sgd momentum", metavar="X")
    weight_decay: float = option(0.0, "weight decay: decoupled for adamw, L2 for sgd and adam", metavar="X")
    schedule: str = option("cosine", "constant | cosine (to lr-floor at the end) | wsd (constant, then a linear "
                           "decay to lr-floor over the last decay-fraction of the run) | plateau | step", metavar="NAME")
    warmup: int = option(0, "steps of linear warm-up", metavar="N")
    lr_floor: float = option(0.1, "cosine, wsd: the final lr as a fraction of --lr", metavar="X")
    decay_fraction: float = option(0.2, "wsd: the last fraction of the run (of its steps, epochs or time budget) "
                                   "over which the lr decays", metavar="X")
    lr_decay: float = option(0.25, "plateau: lr multiplier when validation stops improving; step: each epoch",
                             metavar="X")
    decay_start: int = option(4, "step: epochs at full lr before decaying every epoch (Zaremba: 4)", metavar="N")
    clip: float | None = option(1.0, "global gradient-norm clip, the remedy for exploding gradients; 'none' for "
                                "off", metavar="NORM", parse=parse_or_none)
    epochs: int | None = option(None, "passes over the training split (10 if no other limit is set)", metavar="N")
    max_steps: int | None = option(None, "optimiser steps", metavar="N")
    time_budget: float | None = option(None, "minutes of training; stops cleanly, then validates and saves",
                                       metavar="MINUTES")
    eval_every: int | None = option(None, "steps between validations (default: at the end of every epoch)",
                                    metavar="N")
    eval_batch_size: int = option(16, "parallel streams when validating during training", metavar="N")
    patience: int | None = option(None, "stop after N validations without improvement", metavar="N")
    save_every: int | None = option(None, "steps between saves of last/ (default: at every validation)",
                                    metavar="N")
    sample_every: int | None = option(None, "steps between printed samples", metavar="N")
    log_every: int = option(50, "steps between metrics.jsonl lines", metavar="N")
    variable_bptt: bool = option(False, "vary each window's length around --bptt (one window in twenty around "
                                 "half of it, jittered by N(0, 5)), the lr scaled with it (AWD-LSTM)")
    ema: float | None = option(None, "keep an exponential moving average of the weights with this decay (e.g. "
                               "0.999); validation, the saved model and generation use the average (Polyak "
                               "averaging; AWD-LSTM averages with NT-ASGD); 'none' for off", metavar="DECAY",
                               parse=parse_or_none)
    nt_asgd: int | None = option(None, "NT-ASGD's trigger (AWD-LSTM: 5): once a validation is worse than the best "
                                 "of all but the last N, average the weights uniformly from then on; validation, "
                                 "the saved model and generation use the average", metavar="N")
    dropout_from: float = option(1.0, "curriculum dropout: every dropout rate starts at this fraction of its value "
                                 "and rises in a straight line to its full value as the run ends (after Morerio "
                                 "et al. 2017); 1 = constant", metavar="X")
    state_limit: float | None = option(None, "LSTM: a stream whose carried cell state grows past this magnitude "
                                       "starts its next window from zero, as at an epoch's start: for a state "
                                       "stuck counting up (ptb-1h: 50); 'none' for off", metavar="X",
                                       parse=parse_or_none)
    skip_nonfinite: bool = option(False, "skip a step whose loss or gradient is NaN/inf instead of stopping")
    precision: str = option("fp32", "fp32 | bf16: autocast matmuls and recurrences to bfloat16 (weights stay "
                            "fp32)", metavar="NAME")
    seed: int = option(1337, "random seed", metavar="N")
    device: str = option("auto", "auto | cpu | cuda | mps", metavar="NAME")

    def __post_init__(self):
        check_types(self)
        check_seed(self.seed)
        if self.optimizer not in OPTIMIZERS:
            raise RnnlabError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.precision not in PRECISIONS:
            raise RnnlabError(f"unknown precision {self.precision!r}; choose fp32 or bf16")
        if self.schedule not in SCHEDULES:
            raise RnnlabError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        check_at_least_one(self, ("batch_size", "bptt", "eval_batch_size", "log_every", "epochs", "max_steps",
                                  "eval_every", "patience", "save_every", "sample_every", "nt_asgd"))
        if not 0 < self.lr < math.inf:
            raise RnnlabError(f"--lr must be a positive number, got {self.lr}")
        for name in ("momentum", "weight_decay"):
            if not 0 <= getattr(self, name) < math.inf:
                raise RnnlabError(f"--{name.replace('_', '-')} must be a number >= 0, got {getattr(self, name)}")
        if not 0 <= self.lr_floor <= 1:
            raise RnnlabError(f"--lr-floor is a fraction of --lr in [0, 1], got {self.lr_floor}")
        if not 0 < self.decay_fraction <= 1:
            raise RnnlabError(f"--decay-fraction is a fraction of the run in (0, 1], got {self.decay_fraction}")
        if not 0 < self.lr_decay <= 1:
            raise RnnlabError(f"--lr-decay is a multiplier in (0, 1], got {self.lr_decay}")
        for name in ("warmup", "decay_start"):
            if getattr(self, name) < 0:
                raise RnnlabError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.dropout_from <= 1:
            raise RnnlabError(f"--dropout-from is a fraction of the dropout rates in [0, 1], got {self.dropout_from}")
        if self.ema is not None and not 0 < self.ema < 1:
            raise RnnlabError(f"--ema is a decay in (0, 1), e.g. 0.999; got {self.ema}")
        if self.nt_asgd is not None and self.ema is not None:
            raise RnnlabError("--ema and --nt-asgd both average the weights; choose one")
        if self.state_limit is not None and not self.state_limit > 0:
            raise RnnlabError(f"--state-limit must be > 0 (or 'none'), got {self.state_limit}")
        if self.clip is not None and not self.clip > 0:
            raise RnnlabError(f"--clip must be > 0 (or 'none'), got {self.clip}")
        if self.time_budget is not None and not 0 < self.time_budget < math.inf:
            raise RnnlabError(f"--time-budget must be a number of minutes > 0, got {self.time_budget}")
        if self.epochs is None and self.max_steps is None and self.time_budget is None:
            self.epochs = 10


@dataclass
class DataConfig:
    valid: str | None = option(None, "validation text (file or folder)", metavar="FILE")
    test: str | None = option(None, "test text (file or folder)", metavar="FILE")
    valid_fraction: float | None = option(None, "hold out the last F of the text as validation (default 0.1 when "
                                          "no split is given)", metavar="F")
    glob: str | None = option(None, "files to read inside folders (default: *.txt)", metavar="GLOB")
    encoding: str | None = option(None, "text encoding (default: utf-8)", metavar="NAME")
    pretokenized: bool | None = option(None, "the text is already tokenised: split words on whitespace only (PTB, "
                                       "WikiText); default: named corpora say")
    level: str | None = option(None, "char | word | bpe (default: char; word for tokenised corpora)",
                               metavar="LEVEL")
    max_vocab: int | None = option(None, "word level: vocabulary cap incl. <unk>, <eos> (default: 20000); bpe: "
                                   "vocabulary size (default: 4096)", metavar="N", aliases=("--vocab-size",))
    min_freq: int | None = option(None, "word level: drop words seen fewer times (default: 1)", metavar="N")
    lowercase: bool | None = option(None, "word level: lowercase the text")
    stream: bool | None = option(None, "read the corpus a block at a time into the token store on disk and train "
                                 "from its memory map (default: for corpora over 256 MB)")
    cache: bool = option(True, "tokenise the corpus again instead of reading (and writing) the token cache in "
                         "$RNNLAB_CACHE (default ~/.cache/rnnlab/tokens)", flag="--no-cache", negate=True)

    def __post_init__(self):
        check_types(self)
        if self.level is not None and self.level not in LEVELS:
            raise RnnlabError(f"unknown level {self.level!r}; choose char, word or bpe")
        if self.valid_fraction is not None and not 0 < self.valid_fraction < 1:
            raise RnnlabError(f"--valid-fraction must be between 0 and 1, got {self.valid_fraction}")
        check_at_least_one(self, ("max_vocab", "min_freq"))

    def vocab_settings(self, level: str) -> dict:
        """max_vocab, min_freq and lowercase with their defaults filled in (a BPE vocabulary defaults smaller)."""
        return {"max_vocab": self.max_vocab or (4096 if level == "bpe" else 20_000), "min_freq": self.min_freq or 1,
                "lowercase": bool(self.lowercase)}

    def corpus_options(self) -> dict:
        """The options `load_corpus` takes, as given (None: its defaults)."""
        return {k: getattr(self, k) for k in ("valid", "test", "valid_fraction", "glob", "encoding", "pretokenized")}


@dataclass
class EmbeddingConfig:
    embedding: str | None = option(None, "learned (default) | onehot | word2vec (trained on the training split) "
                                   "| PATH of GloVe or word2vec vectors", metavar="KIND")
    embedding_format: str | None = option(None, "glove | word2vec | word2vec-binary (default: detected)",
                                          metavar="FMT")
    w2v_skipgram: bool = option(True, "word2vec: CBOW instead of skip-gram", flag="--w2v-cbow", negate=True)
    w2v_window: int = option(5, "word2vec: context window", metavar="N")
    w2v_epochs: int = option(5, "word2vec: epochs", metavar="N")
    w2v_min_count: int = option(1, "word2vec: ignore rarer tokens", metavar="N")

    @property
    def pretrained(self) -> bool:
        """Vectors from a file or trained by word2vec (not a learned table or one-hot input)."""
        return self.embedding not in (None, "learned", "onehot")

    def __post_init__(self):
        check_types(self)
        check_at_least_one(self, ("w2v_window", "w2v_epochs", "w2v_min_count"))


@dataclass
class BaselineConfig:
    model: str = option("rnn", "rnn | hmm (Hidden Markov Model baseline) | ngram (Kneser-Ney baseline)",
                        metavar="KIND")
    states: int = option(64, "hmm: hidden states", metavar="K")
    em_iterations: int = option(20, "hmm: Baum-Welch iterations", metavar="N")
    order: int = option(5, "ngram: order", metavar="N")

    def __post_init__(self):
        check_types(self)
        if self.model not in ("rnn", *BASELINES):
            raise RnnlabError(f"unknown model {self.model!r}; choose rnn, hmm or ngram")
        check_at_least_one(self, ("states", "em_iterations", "order"))


def field_names(config_class) -> set[str]:
    return {f.name for f in fields(config_class)}


def split_options(options: dict, *config_classes) -> list[dict]:
    """Sort keyword options by the config dataclass they belong to; an unknown one is an error."""
    groups = [{k: v for k, v in options.items() if k in field_names(c)} for c in config_classes]
    unknown = set(options) - set().union(*(field_names(c) for c in config_classes))
    if unknown:
        raise RnnlabError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    return groups
