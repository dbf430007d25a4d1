"""The one list of recurrent cells: every option, help text, table and plot legend reads it.

Torch-free on purpose: `rnnlab --help` lists the cells without importing torch. The modules
that implement each cell are bound to these names in `rnnlm.py` (torch's fused kernels),
`cells.py` (the textbook equations) and `minrnn.py` (parallel-scan cells).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cell:
    name: str
    gates: int          # weight blocks per unit: the rows of W_ih are gates x hidden
    color: str          # its colour in every plot
    summary: str        # one line for help texts and the README


CELLS: dict[str, Cell] = {c.name: c for c in (
    Cell("rnn", 1, "tab:red", "vanilla RNN, h_t = tanh(W x_t + U h_{t-1} + b) (Elman 1990)"),
    Cell("rnn-relu", 1, "tab:orange", "vanilla RNN with ReLU instead of tanh"),
    Cell("lstm", 4, "tab:blue", "long short-term memory (Hochreiter & Schmidhuber 1997): the robust default"),
    Cell("gru", 3, "tab:green", "gated recurrent unit (Cho et al. 2014)"),
    # Feng et al. 2024, "Were RNNs All We Needed?": gates from x_t only, trained by a parallel scan
    Cell("mingru", 2, "tab:purple", "minGRU (Feng et al. 2024): gates read only x_t, trained by a parallel scan"),
    Cell("minlstm", 3, "tab:brown", "minLSTM (Feng et al. 2024): gates read only x_t, trained by a parallel scan"),
)}
CLASSIC = ("rnn", "rnn-relu", "lstm", "gru")      # the cells with a step-by-step recurrence (explicit, torch.*_cell)
SCAN = ("mingru", "minlstm")                       # the cells trained by a parallel scan
COMPARED = ("rnn", "lstm", "gru")                  # the default line-up of the studies


def names(cells=tuple(CELLS)) -> str:
    """'rnn | lstm | gru' for help texts."""
    return " | ".join(cells)


def parse_cells(text: str, allowed=tuple(CELLS)) -> list[str]:
    """'rnn,lstm' -> ['rnn', 'lstm'], with a clear error for an unknown name (the --cell flag of every command)."""
    from rnnlab.errors import RnnlabError
    cells = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in cells if c not in allowed]
    if unknown or not cells:
        raise RnnlabError(f"unknown cell {(unknown or [text])[0]!r}; choose from {', '.join(allowed)}")
    return cells
