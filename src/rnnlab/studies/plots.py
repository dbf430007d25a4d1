"""Plots: gradient norms, loss curves, long-range results, model comparisons, Hopfield recall, and a
training curve that redraws as training runs (`LiveCurves`, for notebooks).

Figures are drawn with matplotlib's object API, never pyplot: nothing opens a window, nothing touches
global state, and the plots work on a machine without a display. Each function returns its Figure
(a notebook shows it) and, given a path, also writes it as a PNG. Backgrounds are opaque white, so
a figure reads the same in light and dark notebook themes. matplotlib is optional for rnnlab; these
functions say how to install it when it is missing.
"""

from __future__ import annotations

import math
from pathlib import Path

from rnnlab.errors import RnnlabError
from rnnlab.files import atomic_write
from rnnlab.models.registry import CELLS
from rnnlab.studies.gradients import first_divergence
from rnnlab.studies.longrange import TASKS

# one colour per cell, the same in every plot
COLORS = {name: cell.color for name, cell in CELLS.items()}


def _figure(panels: int = 1, *, width: float = 7.0, height: float = 4.5):
    """A figure of `panels` side by side -> (figure, list of axes)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise RnnlabError("plots need matplotlib; install it with: pip install matplotlib") from None
    fig = Figure(figsize=(width * panels, height), dpi=120, layout="constrained")
    return fig, list(fig.subplots(1, panels, squeeze=False)[0])


def _save(fig, path: str | Path | None):
    """Write `fig` to `path` as a PNG, if a path is given; return the figure."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    return fig


def plot_gradient_norms(result: dict[str, list[float]], path: str | Path | None = None, *, title: str | None = None):
    """`result` as from gradients.measure: cell -> mean ||dL_T/dh_t|| for t = T, ..., 1.
    x: steps back from T; y: the norm, log scale; one line per cell."""
    fig, (ax,) = _figure()
    for cell, norms in result.items():
        # non-finite (overflowed) and zero (underflowed) norms cannot be drawn on a log axis
        points = [(k, v) for k, v in enumerate(norms) if v is not None and math.isfinite(v) and v > 0]
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, label=cell, color=COLORS.get(cell), linewidth=1.8)
    ax.set_yscale("log")
    ax.set_xlabel("steps back from the last time step T  (T - t)")
    ax.set_ylabel(r"mean $\|\partial L_T / \partial h_t\|$")
    length = max((len(norms) for norms in result.values()), default=0)
    ax.set_title(title or f"Gradient of the last step's loss through time (T = {length})")
    ax.set_xlim(0, max(length - 1, 1))
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(title="cell")
    return _save(fig, path)


def plot_loss_curves(curves: dict[str, list[float]], path: str | Path | None = None, title: str = "Training loss"):
    """One line per label (e.g. from gradients.clip_experiment), x: step, y: loss. A cross marks
    where a curve first diverges (`gradients.first_divergence`: above the dashed line at twice
    its first loss); a curve that ends in nan or inf says so where it stops."""
    from matplotlib.ticker import ScalarFormatter

    fig, (ax,) = _figure()
    finite = [v for losses in curves.values() for v in losses if math.isfinite(v)]
    # a log axis when the losses span more than a factor of 10: a blow-up and the slow descent
    # of a good run then both stay readable
    if finite and min(finite) > 0 and max(finite) / min(finite) > 10:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(ScalarFormatter())
    colors = iter(["tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:brown"])
    first_losses = set()
    for label, losses in curves.items():
        if not losses:
            continue
        color = next(colors, None)
        points = [(step, v) for step, v in enumerate(losses, start=1) if math.isfinite(v)]
        if points:
            ax.plot(*zip(*points), label=label, color=color, linewidth=1.2)
        if math.isfinite(losses[0]):
            first_losses.add(round(losses[0], 6))
        step = first_divergence(losses)
        if step is not None and math.isfinite(losses[step]):
            ax.plot(step + 1, losses[step], "x", color=color, markersize=10, markeredgewidth=2.5,
                    label=f"{label}: diverged at step {step + 1}")
        if not math.isfinite(losses[-1]):  # the curve stops here: say why, where it stops
            ax.annotate(f"loss {losses[-1]} at step {len(losses)}", points[-1] if points else (1, 1),
                        color=color, xytext=(4, 4), textcoords="offset points")
    if len(first_losses) == 1:  # the runs start from the same weights: one threshold for all
        ax.axhline(2 * first_losses.pop(), color="gray", linestyle="--", linewidth=1,
                   label="2 x first loss (divergence)")
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss (nats per token)")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_longrange(rows: list[dict], path: str | Path | None = None):
    """Rows as from longrange.run (or read back from its CSV): one panel per task, x: sequence
    length T, y: the task's test metric, one line per cell; the memoryless baseline dashed, the
    solved threshold dotted; solved points filled, unsolved hollow."""

    rows = [{**row, "length": int(row["length"]), "value": float(row["value"]),
             "baseline": float(row["baseline"]), "solved": row["solved"] in (True, "True")} for row in rows]
    tasks = list(dict.fromkeys(row["task"] for row in rows))
    if not tasks:
        raise RnnlabError("no results to plot")
    fig, axes = _figure(len(tasks), width=6.0)
    for ax, task in zip(axes, tasks):
        task_rows = [row for row in rows if row["task"] == task]
        lengths = sorted({row["length"] for row in task_rows})
        baselines = {row["length"]: row["baseline"] for row in task_rows}
        ax.plot(lengths, [baselines[t] for t in lengths], "--", color="gray", label="memoryless baseline")
        if task in TASKS:
            ax.plot(lengths, [TASKS[task].threshold(t) for t in lengths], ":", color="black",
                    label=f"solved: {TASKS[task].rule}")
        for cell in dict.fromkeys(row["cell"] for row in task_rows):
            cell_rows = sorted((row for row in task_rows if row["cell"] == cell), key=lambda row: row["length"])
            color = COLORS.get(cell)
            ax.plot([r["length"] for r in cell_rows], [r["value"] for r in cell_rows], "-", color=color,
                    label=cell, linewidth=1.8)
            for r in cell_rows:
                ax.plot(r["length"], r["value"], "o", color=color, markersize=8,
                        markerfacecolor=color if r["solved"] else "white", markeredgewidth=1.8)
        metric = task_rows[0]["metric"]
        ax.set_xscale("log")
        ax.set_xticks(lengths, [str(t) for t in lengths])
        ax.minorticks_off()
        ax.set_xlabel("sequence length T (steps to remember across)")
        if metric == "accuracy":
            ax.set_ylim(-0.03, 1.03)
            ax.set_ylabel("test accuracy (fraction within 0.04 of the sum)")
        else:
            ax.set_ylim(bottom=0)
            ax.set_ylabel(f"test {metric.replace('_', '-')} (nats per step)")
        ax.set_title(f"{task} task (filled marker: solved)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    return _save(fig, path)


def plot_compare(rows: list[dict], path: str | Path | None = None, title: str = "Validation perplexity"):
    """Rows as from compare.run, two panels, one line per model, log axes: validation perplexity
    against training tokens (where each model pays off: the crossings) and against training
    seconds (what each costs)."""
    from matplotlib.ticker import ScalarFormatter

    if not rows:
        raise RnnlabError("no results to plot")
    fig, axes = _figure(2)
    others = iter(["tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray"] * 3)
    colors = {model: COLORS.get(model) or next(others)  # the cells keep their colours, baselines get others
              for model in dict.fromkeys(row["model"] for row in rows)}
    for ax, key, label in ((axes[0], "train_tokens", "training tokens"),
                           (axes[1], "train_seconds", "training seconds")):
        for model, color in colors.items():
            points = sorted((max(float(row[key]), 0.1), float(row["valid_perplexity"]))
                            for row in rows if row["model"] == model)
            ax.plot(*zip(*points), "o-", label=model, color=color, linewidth=1.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(ScalarFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel("validation perplexity (lower is better)")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_title(f"{title} against training data")
    axes[1].set_title(f"{title} against training time")
    axes[0].legend(title="model")
    return _save(fig, path)


def plot_hopfield(rows: list[tuple[int, float]], units: int, path: str | Path | None = None):
    """Rows as from hopfield.capacity_experiment, [(patterns stored, recall rate), ...]: the recall
    rate against patterns per unit, with the theoretical capacity 0.138 N (Amit, Gutfreund &
    Sompolinsky 1985) marked."""
    if not rows:
        raise RnnlabError("no results to plot")
    fig, (ax,) = _figure()
    ax.plot([count / units for count, _ in rows], [rate for _, rate in rows], "o-", color="tab:purple",
            linewidth=1.8, label=f"{units} units")
    ax.axvline(0.138, color="gray", linestyle="--", linewidth=1, label="capacity 0.138 N (Amit et al. 1985)")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("stored patterns per unit (P / N)")
    ax.set_ylabel("fraction of noisy probes recalled exactly")
    ax.set_title("Hopfield network: recall against load")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return _save(fig, path)


class LiveCurves:
    """The training and validation loss, redrawn under a notebook cell as training runs:

        curves = LiveCurves()
        lm = rnnlab.train("pydocs", "runs/nb", time_budget=1, on_metrics=curves)

    Each call takes one record as metrics.jsonl holds them ({"step", "train_loss", ...} or
    {"step", "valid_loss", ...}). The figure is redrawn at most once a second, and at every
    validation; `figure()` draws it once more, whole, after training."""

    def __init__(self, title: str = "Training", min_interval: float = 1.0):
        self.title, self.min_interval = title, min_interval
        self.train: list[tuple[int, float]] = []
        self.valid: list[tuple[int, float]] = []
        self._handle = None
        self._drawn = 0.0

    def __call__(self, record: dict) -> None:
        import time

        if "train_loss" in record:
            self.train.append((record["step"], record["train_loss"]))
        elif "valid_loss" in record:
            self.valid.append((record["step"], record["valid_loss"]))
        else:
            return
        if "valid_loss" in record or time.monotonic() - self._drawn >= self.min_interval:
            self.show()
            self._drawn = time.monotonic()

    def figure(self):
        fig, (ax,) = _figure(height=3.8)
        if self.train:
            ax.plot(*zip(*self.train), color="tab:blue", linewidth=1.2, label="training (mean since the last log)")
        if self.valid:
            ax.plot(*zip(*self.valid), "o-", color="tab:orange", linewidth=1.8, label="validation")
        ax.set_xlabel("training step")
        ax.set_ylabel("loss (nats per token)")
        ax.set_title(self.title)
        ax.grid(True, alpha=0.3)
        if self.train or self.valid:
            ax.legend()
        return fig

    def show(self) -> None:
        """Draw the curves under the running cell, replacing the previous drawing."""
        try:
            from IPython.display import display
        except ImportError:
            raise RnnlabError("LiveCurves draws in a Jupyter notebook: pip install 'rnnlab[notebooks]'") from None
        fig = self.figure()
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)
