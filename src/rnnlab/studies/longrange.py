"""Long-range memory tasks: where a tanh RNN fails and the gated cells (LSTM, GRU) succeed.

    adding problem  Hochreiter & Schmidhuber 1997, "Long Short-Term Memory", experiment 4
                    https://www.bioinf.jku.at/publications/older/2604.pdf
    copy memory     Arjovsky, Shah & Bengio 2016, "Unitary Evolution Recurrent Neural Networks"
                    https://arxiv.org/abs/1511.06464

In both tasks what the answer needs is seen up to T steps before the answer is due, with noise
in between, so the gradient that would teach the model to keep it has to flow back T steps.
The tanh RNN's gradient shrinks geometrically on the way (Bengio et al. 1994; see
gradients.py), so beyond some T it learns only the memoryless baseline; the LSTM's cell and
the GRU's update gate give the gradient an additive path and they keep learning.

    adding, T = 8:  value   .31 .72 .05 .90 .44 .18 .63 .27
                    marker   0   1   0   0   0   1   0   0     ->  target .72 + .18 = .90

    copy, T = 5:    input   3 1 4 1 5 2 6 5 1 7  _ _ _ _ :  _ _ _ _ _ _ _ _ _ _
                    target  _ _ _ _ _ _ _ _ _ _  _ _ _ _ _  3 1 4 1 5 2 6 5 1 7
                    (10 symbols, T-1 blanks, the delimiter ':', 10 blanks while the model recalls)

    run("adding", ["rnn", "lstm", "gru"], [10, 50, 100, 200]) -> one row per (cell, length):
        {task, cell, length, metric, value, baseline, solved}

The recurrent layers are torch's fused `nn.RNN/LSTM/GRU`, trained with Adam and gradient
clipping; each run trains until its task is solved on a validation batch (twice in a row),
`steps` are done or its time budget is spent, then reports its metric on a fresh test batch.
"""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from rnnlab.errors import RnnlabError
from rnnlab.files import write_text
from rnnlab.models.config import ModelConfig, memory_bytes
from rnnlab.models.registry import COMPARED
from rnnlab.models.rnnlm import evaluating

Tensor = torch.Tensor

COLUMNS = ("task", "cell", "length", "metric", "value", "baseline", "solved")
RECURRENT = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}  # the registry's COMPARED cells; "rnn" is tanh


# ---------------------------------------------------------------------------------------------
# The adding problem

class AddingTask:
    """Two channels: values uniform in [0, 1] and markers, exactly two 1s, one in each half of the
    sequence. The target is the sum of the two marked values; the loss is the squared error.

    A prediction is correct when it is within 0.04 of the target (Hochreiter & Schmidhuber). The
    memoryless baseline always predicts 1.0, the mean of the sum: its squared error is the
    variance of the sum of two uniforms, 2/12 = 0.167, and it is correct when the sum falls in
    (0.96, 1.04), which for the sum's triangular density happens with probability
    1 - (1 - 0.04)^2 = 0.078.
    """
    name = "adding"
    metric = "accuracy"       # fraction of test sequences predicted within TOLERANCE
    TOLERANCE = 0.04
    BASELINE_MSE = 2 / 12     # the squared error of always predicting 1.0: Var(U1 + U2)
    SOLVED = 0.9              # solved: at least 90% of test sequences correct (the baseline: 7.8%)
    rule = f"accuracy >= {SOLVED} (|error| < {TOLERANCE})"
    inputs, categorical, outputs = 2, False, 1
    lengths, steps = (10, 50, 100, 200), 3000   # defaults: the 3-cell sweep takes ~5 minutes on one core

    @staticmethod
    def batch(batch_size: int, length: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """-> x (B, T, 2): [value, marker] at each step; target (B,): the sum of the marked values."""
        if length < 2:
            raise RnnlabError(f"the adding problem needs a length of at least 2, got {length}")
        values = torch.rand(batch_size, length, generator=generator)                       # (B, T)
        half = length // 2
        first = torch.randint(0, half, (batch_size,), generator=generator)                 # in [0, T/2)
        second = torch.randint(half, length, (batch_size,), generator=generator)           # in [T/2, T)
        rows = torch.arange(batch_size)
        markers = torch.zeros(batch_size, length)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        x = torch.stack([values, markers], dim=-1)                                         # (B, T, 2)
        return x, values[rows, first] + values[rows, second]

    @staticmethod
    def loss(prediction: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(prediction, target)

    @classmethod
    def score(cls, prediction: Tensor, target: Tensor) -> float:
        return ((prediction - target).abs() < cls.TOLERANCE).float().mean().item()

    @classmethod
    def baseline(cls, length: int) -> float:
        """Accuracy of always predicting 1.0 (whatever the length)."""
        return 1 - (1 - cls.TOLERANCE) ** 2

    @classmethod
    def threshold(cls, length: int) -> float:
        return cls.SOLVED

    @classmethod
    def solved(cls, value: float, length: int) -> bool:
        return value >= cls.threshold(length)   # accuracy: higher is better


# ---------------------------------------------------------------------------------------------
# The copy-memory task

class CopyTask:
    """10 symbols from an alphabet of 8, then T-1 blanks, a delimiter, and 10 more blanks during
    which the model must output the 10 symbols; it must output blanks everywhere else. Total
    length T + 20; the loss is the cross-entropy averaged over every step.

    The memoryless baseline outputs blanks for T + 10 steps and a uniform guess over the 8 symbols
    for the last 10: cross-entropy 10 log 8 / (T + 20) per step. Solved: test cross-entropy below
    half the baseline, i.e. the model has recalled more than half of the 30 bits it was shown
    (a model that stays memoryless cannot get there however long it trains).
    """
    name = "copy"
    metric = "cross_entropy"  # nats per step on the test batch
    SYMBOLS, RECALL = 8, 10   # alphabet size, symbols to remember
    BLANK, DELIMITER = 0, 9   # symbols are 1..8
    SOLVED = 0.5              # solved: below 0.5 x baseline
    rule = f"cross-entropy < {SOLVED} x baseline"
    inputs, categorical, outputs = 10, True, 9  # inputs: blank, 8 symbols, delimiter; outputs: blank, symbols
    lengths, steps = (10, 20, 50), 8000         # ~7 minutes; the LSTM needs ~6000 steps at T = 50, more at 100

    @classmethod
    def batch(cls, batch_size: int, length: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """-> x (B, T + 20) input symbols, target (B, T + 20) the symbol to output at each step."""
        if length < 1:
            raise RnnlabError(f"the copy task needs a length of at least 1, got {length}")
        n = cls.RECALL
        symbols = torch.randint(1, cls.SYMBOLS + 1, (batch_size, n), generator=generator)  # (B, 10)
        x = torch.full((batch_size, length + 2 * n), cls.BLANK, dtype=torch.long)
        x[:, :n] = symbols
        x[:, n + length - 1] = cls.DELIMITER          # after T - 1 blanks: "now recall"
        target = torch.full_like(x, cls.BLANK)
        target[:, n + length:] = symbols              # the last 10 steps
        return x, target

    @staticmethod
    def loss(logits: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1))

    @classmethod
    def score(cls, logits: Tensor, target: Tensor) -> float:
        return cls.loss(logits, target).item()

    @classmethod
    def baseline(cls, length: int) -> float:
        return cls.RECALL * math.log(cls.SYMBOLS) / (length + 2 * cls.RECALL)

    @classmethod
    def threshold(cls, length: int) -> float:
        return cls.SOLVED * cls.baseline(length)

    @classmethod
    def solved(cls, value: float, length: int) -> bool:
        return value < cls.threshold(length)    # cross-entropy: lower is better


TASKS = {task.name: task for task in (AddingTask, CopyTask)}


# ---------------------------------------------------------------------------------------------
# The model: input projection -> recurrent layer -> linear head

class SequenceModel(nn.Module):
    def __init__(self, task, cell: str, hidden: int):
        super().__init__()
        self.task = task
        # the copy task reads symbols (a table lookup is a one-hot times a matrix), the adding
        # problem two real numbers
        self.project = nn.Embedding(task.inputs, hidden) if task.categorical else nn.Linear(task.inputs, hidden)
        self.rnn = RECURRENT[cell](hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, task.outputs)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(self.project(x))          # (B, T, H)
        if self.task.categorical:
            return self.head(out)                   # (B, T, outputs): an answer at every step
        return self.head(out[:, -1]).squeeze(-1)    # (B,): one answer at the end


# ---------------------------------------------------------------------------------------------
# Training and the sweep

def train_one(task, cell: str, length: int, *, steps: int, batch_size: int, hidden: int, lr: float,
              clip: float = 1.0, time_budget_s: float | None = None, seed: int = 0, check_every: int = 100,
              check_size: int = 500, test_size: int = 2000, log: Callable[[str], None] | None = None) -> dict:
    """Train one model on one length and test it; return its result row (keys `COLUMNS`).

    Every `check_every` steps the model is scored on a validation batch; training stops once
    that is solved at two checks in a row. With `time_budget_s`, training also stops when the next step and the final
    test would not fit in the budget: the whole run, test included, stays within it (when the
    budget can hold one check and the test at all). `log` gets one line at the end.
    """
    start = time.perf_counter()
    torch.manual_seed(seed)
    train_data = torch.Generator().manual_seed(seed)
    check_data = torch.Generator().manual_seed(seed + 1)
    test_data = torch.Generator().manual_seed(seed + 2)   # a fresh batch, seen by no step of training
    model = SequenceModel(task, cell, hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    check_batch = task.batch(check_size, length, check_data)
    check_time = step_time = 0.0
    steps_done = solved_checks = 0
    if time_budget_s is not None:
        # time one check (after a tiny warm-up call: a kernel's first call can be slow), to know
        # what the checks and the final test will cost; re-measured at every check
        evaluate(model, task, *task.batch(2, length, check_data))
        check_start = time.perf_counter()
        evaluate(model, task, *check_batch)
        check_time = time.perf_counter() - check_start
    for step in range(1, steps + 1):
        test_time = 2 * check_time * test_size / check_size  # with a margin: timings on a busy machine vary
        upcoming = step_time + (check_time if step % check_every == 0 else 0.0) + test_time
        if time_budget_s is not None and time.perf_counter() - start + upcoming > time_budget_s:
            break
        step_start = time.perf_counter()
        x, target = task.batch(batch_size, length, train_data)
        loss = task.loss(model(x), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # the gradient of a long sequence can explode as well as vanish (Pascanu et al. 2013)
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        steps_done = step
        step_time = time.perf_counter() - step_start
        if step % check_every == 0:
            check_start = time.perf_counter()
            solved_checks = solved_checks + 1 if task.solved(evaluate(model, task, *check_batch), length) else 0
            check_time = time.perf_counter() - check_start
            if solved_checks == 2:
                break  # solved twice in a row, not by a lucky fluctuation: more steps would only polish it
    x, target = task.batch(test_size, length, test_data)
    value = evaluate(model, task, x, target)
    row = {"task": task.name, "cell": cell, "length": length, "metric": task.metric, "value": value,
           "baseline": task.baseline(length), "solved": task.solved(value, length)}
    if log:
        log(f"{task.name} T={length} {cell}: {task.metric} {value:.4f} (baseline {row['baseline']:.4f})"
            f"{', solved' if row['solved'] else ''} after {steps_done} steps, {time.perf_counter() - start:.0f} s")
    return row


@torch.no_grad()
def evaluate(model: SequenceModel, task, x: Tensor, target: Tensor) -> float:
    with evaluating(model):
        return task.score(model(x), target)


def run(task: str, cells=COMPARED, lengths=None, *, steps: int | None = None, batch_size: int = 64,
        hidden: int = 64, lr: float = 1e-2, time_budget_s: float | None = None, seed: int = 0,
        log: Callable[[str], None] | None = None) -> list[dict]:
    """Train a fresh model for every (cell, length) and return one row each, with keys `COLUMNS`.

    `lengths` and `steps` default to the task's own (`AddingTask.lengths`, `.steps`);
    `time_budget_s` caps each (cell, length) run, its test included; `log` gets a line per run.
    """
    if task not in TASKS:
        raise RnnlabError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    for cell in cells:
        if cell not in RECURRENT:
            raise RnnlabError(f"unknown cell {cell!r} for a long-range task; choose one of {', '.join(RECURRENT)}")
    for name, value in (("steps", steps), ("batch_size", batch_size), ("hidden", hidden)):
        if value is not None and value < 1:
            raise RnnlabError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if not lr > 0 or time_budget_s is not None and not time_budget_s > 0:
        raise RnnlabError(f"--lr and --time-budget must be > 0, got {lr} and {time_budget_s}")
    spec = TASKS[task]
    lengths = spec.lengths if lengths is None else lengths
    for cell in cells:  # a size this machine cannot hold fails now, not after minutes of training
        ModelConfig(max(spec.inputs, spec.outputs), cell=cell, embed_dim=hidden, hidden=hidden, layers=1).check_fits(
            memory_bytes(), copies=4, what="this task", fix="choose a smaller --hidden or shorter --lengths",
            batch=batch_size, steps=max([*lengths, 0]) if all(isinstance(n, int) for n in lengths) else 0)
    for length in lengths:
        spec.batch(1, length)  # and so does a bad length
    return [train_one(spec, cell, length, steps=spec.steps if steps is None else steps, batch_size=batch_size,
                      hidden=hidden, lr=lr, time_budget_s=time_budget_s, seed=seed, log=log)
            for length in lengths for cell in cells]


def sweep(task: str, cells: list[str], lengths: list[int] | None, *, steps: int | None, hidden: int,
          time_budget_min: float | None, seed: int, log: Callable[[str], None] | None = None) -> list[dict]:
    """`run` with one time budget (minutes) for the whole sweep, shared evenly by its runs."""
    runs = len(cells) * len(lengths or TASKS.get(task, AddingTask).lengths)
    budget = None if time_budget_min is None else 60 * time_budget_min / max(runs, 1)
    return run(task, cells, lengths, steps=steps, hidden=hidden, time_budget_s=budget, seed=seed, log=log)


def write_csv(rows: list[dict], path: str | Path) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({**row, "value": f"{row['value']:.6g}", "baseline": f"{row['baseline']:.6g}"} for row in rows)
    write_text(path, text.getvalue())


def format_table(rows: list[dict]) -> str:
    """One line per (task, length), one column per cell: the metric, with * where solved."""
    cells = list(dict.fromkeys(row["cell"] for row in rows))
    keys = list(dict.fromkeys((row["task"], row["length"]) for row in rows))
    by_key = {(row["task"], row["length"], row["cell"]): row for row in rows}
    lines = [f"{'task':<8}{'T':>6}{'metric':>15}{'baseline':>10}" + "".join(f"{c:>10}" for c in cells)]
    for task, length in keys:
        some = next(by_key[task, length, c] for c in cells if (task, length, c) in by_key)
        line = f"{task:<8}{length:>6}{some['metric']:>15}{some['baseline']:>10.4f}"
        for cell in cells:
            row = by_key.get((task, length, cell))
            line += f"{'-':>10}" if row is None else f"{row['value']:>9.4f}{'*' if row['solved'] else ' '}"
        lines.append(line)
    rules = {row["task"]: TASKS[row["task"]].rule for row in rows}
    lines.append("* solved: " + "; ".join(f"{task}: {rule}" for task, rule in rules.items()))
    return "\n".join(lines)
