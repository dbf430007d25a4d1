"""`ModelConfig`: what a recurrent language model is made of. Torch-free: the command line reads its
fields (and their help) without importing torch."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields

from rnnlab.errors import RnnlabError
from rnnlab.models.registry import CELLS, CLASSIC, names
from rnnlab.options import check_at_least_one, check_types, option, parse_int_list

INPUTS = ("learned", "onehot")
IMPLS = ("torch", "explicit")
SOFTMAXES = ("full", "adaptive", "auto")
AUTO_ADAPTIVE = 4000  # softmax "auto": adaptive above this vocabulary size, full at or below it
# AWD-LSTM's regularisers (models/regularization.py): five rates in [0, 1), and the AR/TAR weights
RATES = ("dropout_embed", "dropout_input", "dropout_hidden", "dropout_output", "weight_drop")
REGULARIZERS = (*RATES, "ar", "tar")


@dataclass
class ModelConfig:
    vocab_size: int = option(0, "tokens the model reads and predicts (the tokenizer's vocabulary)", cli=False)
    cell: str = option("lstm", f"{names()}; LSTM is the robust default", metavar="CELL")
    input: str = option("learned", "input layer: learned (an embedding table) or onehot (the textbook's one-hot "
                        "x_t)", metavar="KIND")
    embed_dim: int = option(256, "width of the learned embedding (onehot ignores it)", metavar="N")
    hidden: int = option(256, "units per recurrent layer", metavar="N")
    layers: int = option(2, "stacked recurrent layers", metavar="N")
    dropout: float = option(0.0, "dropout on the input, between layers and before the softmax (Zaremba et al. "
                            "2014)", metavar="P")
    dropout_embed: float = option(0.0, "embedding dropout: drop whole words, rows of the embedding table (Gal & "
                                  "Ghahramani 2016; AWD-LSTM: 0.1)", metavar="P")
    dropout_input: float = option(0.0, "locked (variational) dropout on the embedded input: one mask per sequence, "
                                  "the same at every step (Gal & Ghahramani 2016; AWD-LSTM: 0.65)", metavar="P")
    dropout_hidden: float = option(0.0, "locked dropout between recurrent layers (none with one layer; AWD-LSTM: "
                                   "0.3)", metavar="P")
    dropout_output: float = option(0.0, "locked dropout on the last layer's output, before the softmax (AWD-LSTM: "
                                   "0.4)", metavar="P")
    weight_drop: float = option(0.0, "DropConnect on the hidden-to-hidden weights, one mask per forward pass; the "
                                "recurrence stays torch's fused kernel (Merity et al. 2017; AWD-LSTM: 0.5)",
                                metavar="P")
    ar: float = option(0.0, "activation regularisation: AR * mean(h^2) of the last layer's dropped output is added "
                       "to the training loss (Merity et al. 2017: 2)", metavar="AR")
    tar: float = option(0.0, "temporal activation regularisation: TAR * mean((h_t - h_{t-1})^2) of the last "
                        "layer's output (Merity et al. 2017: 1)", metavar="TAR")
    tie_weights: bool = option(False, "share the input embedding and softmax weights (Press & Wolf 2017)")
    freeze_embeddings: bool = option(False, "keep the input embedding fixed (pretrained vectors stay as they are)")
    init_range: float | None = option(None, "uniform(-r, r) for embedding and recurrent weights (Zaremba: 0.1); "
                                      "default: torch's", metavar="R")
    embed_init: str = option("normal", "a learned embedding without init_range: torch's N(0, 1), or uniform "
                             "(+-0.1)", cli=False)
    impl: str = option("torch", "torch: the fused nn.RNN/LSTM/GRU kernels; explicit: the equations of "
                       "models/cells.py (slow, for study)", metavar="IMPL")
    softmax: str = option("full", "full | adaptive (Grave et al. 2017): frequent words get the full width, rare "
                          f"ones less | auto: adaptive for vocabularies over {AUTO_ADAPTIVE:,}", metavar="KIND")
    cutoffs: tuple[int, ...] = option((), "adaptive softmax cluster boundaries, e.g. 2000,10000 (default: chosen "
                                      "from the vocabulary)", metavar="N,N", parse=parse_int_list)

    def __post_init__(self):
        check_types(self)
        if self.cell not in CELLS:
            raise RnnlabError(f"unknown cell {self.cell!r}; choose one of {', '.join(CELLS)}")
        if self.impl not in IMPLS:
            raise RnnlabError(f"unknown impl {self.impl!r}; choose one of {', '.join(IMPLS)}")
        if self.impl == "explicit" and self.cell not in CLASSIC:
            raise RnnlabError(f"--impl explicit covers {', '.join(CLASSIC)}; {self.cell} has only its scan form")
        if self.input not in INPUTS:
            raise RnnlabError(f"unknown input {self.input!r}; choose one of {', '.join(INPUTS)}")
        check_at_least_one(self, ("vocab_size", "embed_dim", "hidden", "layers"), flag="")
        for name in ("dropout", *RATES):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise RnnlabError(f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(self, name)}")
        for name in ("ar", "tar"):
            if not 0.0 <= getattr(self, name) < math.inf:
                raise RnnlabError(f"--{name} must be a number >= 0, got {getattr(self, name)}")
        used = [name for name in REGULARIZERS if getattr(self, name)]
        if used and (self.impl != "torch" or self.cell not in CLASSIC):
            raise RnnlabError(f"--{used[0].replace('_', '-')} needs one of the cells {', '.join(CLASSIC)} with --impl "
                              f"torch (the fused kernels)")
        if self.dropout_embed and self.input != "learned":
            raise RnnlabError("--dropout-embed drops rows of a learned embedding: it needs --input learned")
        if self.init_range is not None and not 0 < self.init_range < math.inf:
            raise RnnlabError(f"--init-range must be a number > 0, got {self.init_range}")
        if self.tie_weights and (self.input != "learned" or self.embed_dim != self.hidden):
            raise RnnlabError("--tie-weights needs --input learned and --embed-dim equal to --hidden")
        if self.freeze_embeddings and (self.tie_weights or self.input != "learned"):
            raise RnnlabError("--freeze-embeddings needs a learned (or pretrained) embedding and no --tie-weights")
        if self.embed_init not in ("normal", "uniform"):
            raise RnnlabError(f"unknown embedding init {self.embed_init!r}; choose normal or uniform")
        if self.softmax not in SOFTMAXES:
            raise RnnlabError(f"unknown softmax {self.softmax!r}; choose full, adaptive or auto")
        if self.softmax == "auto":  # resolved here, once the vocabulary is known; config.json keeps the result
            self.softmax = "adaptive" if self.vocab_size > AUTO_ADAPTIVE and not self.tie_weights else "full"
        if self.softmax == "adaptive":
            if self.tie_weights:
                raise RnnlabError("--softmax adaptive cannot be combined with --tie-weights")
            self.cutoffs = tuple(self.cutoffs) or default_cutoffs(self.vocab_size)
            if list(self.cutoffs) != sorted(set(self.cutoffs)) or not 0 < self.cutoffs[0] or \
                    self.cutoffs[-1] >= self.vocab_size:
                raise RnnlabError(f"--cutoffs must increase strictly between 0 and the vocabulary size "
                                  f"({self.vocab_size}), got {list(self.cutoffs)}")

    def approx_parameters(self) -> int:
        """The parameter count from arithmetic alone (an upper bound within a few percent; no tensor is
        made): enough to refuse a model that cannot fit in memory before torch tries to allocate it."""
        gates, V, H = CELLS[self.cell].gates, self.vocab_size, self.hidden
        width = gates * H if self.input == "onehot" else self.embed_dim
        table = V * width
        recurrent = gates * H * (width + H + 2) + (self.layers - 1) * gates * H * (2 * H + 2)
        if self.softmax == "adaptive":  # nn.AdaptiveLogSoftmaxWithLoss: a head, and a narrower tail per cluster
            edges = [*self.cutoffs, V]
            output = H * (edges[0] + len(edges) - 1) + sum(int(H // 4.0 ** (i + 1)) * (H + edges[i + 1] - edges[i])
                                                            for i in range(len(edges) - 1))
        else:
            output = H * V + V
        return table + recurrent + output

    def check_fits(self, memory_bytes: int, copies: int, what: str,
                   fix: str = "choose a smaller --hidden, --embed-dim, --layers or --max-vocab", *,
                   batch: int = 0, steps: int = 0, extra_bytes: int = 0) -> None:
        """Refuse a model whose `copies` float32 copies (weights, gradients, optimiser moments), plus
        the activations one batch keeps for backward (every layer's gates and the logits, at each of
        `steps` steps of `batch` sequences) and `extra_bytes`, exceed `memory_bytes`."""
        per_token = self.layers * CELLS[self.cell].gates * self.hidden * 2 + self.vocab_size * 2
        need = 4 * (copies * self.approx_parameters() + batch * steps * per_token) + extra_bytes
        if need > memory_bytes:
            raise RnnlabError(f"a {self.layers}x{self.hidden} {self.cell} with embedding {self.embed_dim} and "
                              f"vocabulary {self.vocab_size:,} has about {self.approx_parameters():.3g} parameters"
                              f"{f' and batches of {batch:,} x {steps:,} tokens' if batch else ''}: {what} needs "
                              f"{need / 1e9:,.3g} GB, more than this machine's {memory_bytes / 1e9:,.3g} GB of "
                              f"memory; {fix}")

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        if not isinstance(data, dict):
            raise RnnlabError(f"a model config is a JSON object, got {type(data).__name__}")
        cutoffs = data.get("cutoffs") or ()
        data = {**data, "cutoffs": tuple(cutoffs) if isinstance(cutoffs, list) else cutoffs}
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)


def default_cutoffs(vocab_size: int) -> tuple[int, ...]:
    """Cluster boundaries for the adaptive softmax: a head of the most frequent ~2-4k words."""
    cutoffs = tuple(c for c in (2000, 10_000, 50_000) if c < vocab_size)
    if not cutoffs:
        raise RnnlabError(f"a vocabulary of {vocab_size} is too small for --softmax adaptive; use full")
    return cutoffs


def memory_bytes() -> int:
    """This machine's physical memory."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: no check
