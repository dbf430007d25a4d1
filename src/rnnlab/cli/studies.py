"""The chapter's experiments: `rnnlab gradients`, `longrange`, `compare`, `reference-train`, `hopfield`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rnnlab.cli.flags import add_config_flags, given
from rnnlab.cli.run import CORPUS_FLAGS
from rnnlab.errors import RnnlabError
from rnnlab.files import output_dir, reported_write_errors
from rnnlab.models.registry import COMPARED
from rnnlab.options import parse_or_none, parse_seed
from rnnlab.training.config import DataConfig

DEFAULT_CELLS = ",".join(COMPARED)
SNIPPETS = ("to be or not to be, that is", "the quick brown fox jumps ov", "all that glitters is not g")


def _int_list(text: str, option: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise RnnlabError(f"{option} takes whole numbers separated by commas, got {text!r}") from None


def gradients_parser(sub) -> None:
    p = sub.add_parser("gradients", help="measure vanishing/exploding gradients through time, per cell",
                       description="Measure ||dL_T/dh_t||, the gradient of the last step's loss with respect to each "
                                   "earlier hidden state, for fresh models of each --cell (or a trained MODEL), and "
                                   "plot it. With --train-steps, train a tanh RNN with and without gradient clipping "
                                   "and plot both loss curves (Pascanu et al. 2013).")
    p.add_argument("model", nargs="?", metavar="MODEL", help="a trained model directory (default: fresh models)")
    p.add_argument("--cell", default=DEFAULT_CELLS, help=f"cells to compare, comma-separated (default: {DEFAULT_CELLS})")
    p.add_argument("--hidden", type=int, default=128, metavar="N", help="units (default: 128)")
    p.add_argument("--layers", type=int, default=1, metavar="N", help="layers (default: 1)")
    p.add_argument("--corpus", nargs="+", default=None, metavar="CORPUS", help="text to read (default: pydocs)")
    p.add_argument("--seq-len", type=int, default=100, metavar="T", help="time steps T (default: 100)")
    p.add_argument("--batches", type=int, default=8, metavar="N", help="batches averaged (default: 8)")
    p.add_argument("--batch-size", type=int, default=16, metavar="N", help="sequences per batch (default: 16)")
    p.add_argument("--recurrent-init-scale", type=float, default=None, metavar="R",
                   help="set each recurrent matrix's spectral radius to R (> 1: exploding)")
    p.add_argument("--train-steps", type=int, default=None, metavar="N",
                   help="instead: train N steps per --clip value and plot the loss curves")
    p.add_argument("--clip", default="none,1.0", metavar="LIST", help="with --train-steps (default: none,1.0)")
    p.add_argument("--lr", type=float, default=1.0, metavar="X", help="with --train-steps: SGD lr (default: 1.0)")
    p.add_argument("--seed", type=parse_seed, default=0, metavar="N")
    p.add_argument("--out", metavar="DIR", default="runs/gradients", help="default: runs/gradients")
    p.set_defaults(run=gradients_command)


def gradients_command(args: argparse.Namespace) -> int:
    from rnnlab.models.registry import parse_cells
    from rnnlab.studies import gradients, plots
    cells = parse_cells(args.cell)
    try:
        clips = [parse_or_none(c) for c in args.clip.split(",")]
    except argparse.ArgumentTypeError as e:
        raise RnnlabError(f"--clip: {e}") from None
    out = output_dir(args.out)
    if args.train_steps is not None:
        radius = args.recurrent_init_scale or 1.5
        curves = gradients.clip_experiment(clips, cell=cells[0], corpus=args.corpus or "pydocs", hidden=args.hidden,
                                           seq_len=args.seq_len, steps=args.train_steps, lr=args.lr, seed=args.seed,
                                           recurrent_init_scale=radius)
        for label, losses in curves.items():
            diverged = gradients.first_divergence(losses)
            print(f"{label:<12} first loss {losses[0]:.3f}  last loss {losses[-1]:.3f}  "
                  + (f"diverged at step {diverged}" if diverged is not None else "never diverged"))
        with reported_write_errors(out):
            gradients.write_json(out / "clipping.json", curves)
            plots.plot_loss_curves(curves, out / "clipping.png",
                                   title=f"{cells[0]} training loss, spectral radius {radius}")
        print(f"wrote {out / 'clipping.json'} and {out / 'clipping.png'}")
        return 0
    result = gradients.measure(cells, model_dir=args.model, corpus=args.corpus, hidden=args.hidden,
                               layers=args.layers, seq_len=args.seq_len, batches=args.batches,
                               batch_size=args.batch_size, recurrent_init_scale=args.recurrent_init_scale,
                               seed=args.seed)
    print(gradients.format_table(result))
    with reported_write_errors(out):
        gradients.write_json(out / "gradients.json", result)
        plots.plot_gradient_norms(result, out / "gradients.png")
    print(f"wrote {out / 'gradients.json'} and {out / 'gradients.png'}")
    return 0


def longrange_parser(sub) -> None:
    p = sub.add_parser("longrange", help="long-range tasks on which tanh RNNs fail and LSTM/GRU succeed",
                       description="The adding problem (Hochreiter & Schmidhuber 1997) or the copy-memory task "
                                   "(Arjovsky et al. 2016) for each cell and sequence length: accuracy or loss "
                                   "against the memoryless baseline.")
    p.add_argument("--task", default="adding", help="adding | copy (default: adding)")
    p.add_argument("--cell", "--cells", dest="cell", default=DEFAULT_CELLS,
                   help=f"cells to compare, comma-separated (default: {DEFAULT_CELLS})")
    p.add_argument("--lengths", default=None, metavar="LIST",
                   help="sequence lengths (default: 10,50,100,200 for adding, 10,20,50 for copy)")
    p.add_argument("--steps", type=int, default=None, metavar="N", help="training steps per run (default: the task's)")
    p.add_argument("--hidden", type=int, default=64, metavar="N", help="units (default: 64)")
    p.add_argument("--time-budget", type=float, default=None, metavar="MINUTES",
                   help="cap for the whole sweep, shared evenly by its runs")
    p.add_argument("--seed", type=parse_seed, default=0, metavar="N")
    p.add_argument("--out", metavar="DIR", default=None, help="write longrange.csv and longrange.png here")
    p.set_defaults(run=longrange_command)


def longrange_command(args: argparse.Namespace) -> int:
    from rnnlab.studies import longrange
    lengths = _int_list(args.lengths, "--lengths") if args.lengths else None
    rows = longrange.sweep(args.task, [c for c in args.cell.split(",") if c], lengths, steps=args.steps,
                           hidden=args.hidden, time_budget_min=args.time_budget, seed=args.seed,
                           log=lambda message: print(message, flush=True))
    print(longrange.format_table(rows))
    if args.out:
        from rnnlab.studies.plots import plot_longrange
        out = output_dir(args.out)
        with reported_write_errors(out):
            longrange.write_csv(rows, out / "longrange.csv")
            plot_longrange(rows, out / "longrange.png")
        print(f"wrote {out / 'longrange.csv'} and {out / 'longrange.png'}")
    return 0


def compare_parser(sub) -> None:
    p = sub.add_parser("compare", help="HMM, n-gram and RNNs on growing amounts of the same corpus",
                       description="Train each model on the first N tokens of the training split for each N, "
                                   "score all on the same validation split (one vocabulary), and write a table "
                                   "and plots: compare.md, compare.csv, compare.png.")
    p.add_argument("corpus", nargs="+", metavar="CORPUS")
    p.add_argument("--models", default="hmm:64,ngram:5,rnn,lstm,gru", help="default: hmm:64,ngram:5,rnn,lstm,gru")
    p.add_argument("--train-tokens", default="10k,100k,1M", metavar="SIZES", help="default: 10k,100k,1M")
    p.add_argument("--time-budget", type=float, default=2.0, metavar="MINUTES",
                   help="cap per RNN or HMM training run (default: 2)")
    p.add_argument("--level", default=None, metavar="LEVEL", help="char | word (default: word for tokenised corpora)")
    p.add_argument("--out", metavar="DIR", default="runs/compare", help="default: runs/compare")
    add_config_flags(p.add_argument_group("corpus"), DataConfig, only=CORPUS_FLAGS)
    p.set_defaults(run=compare_command)


def compare_command(args: argparse.Namespace) -> int:
    from rnnlab.studies import compare
    rows = compare.study(args.corpus, args.models, args.train_tokens, args.out, level=args.level,
                         time_budget=args.time_budget, corpus_options=given(args, DataConfig, only=CORPUS_FLAGS),
                         log=lambda message: print(message, flush=True))
    out = Path(args.out)
    print()
    print(compare.to_markdown(rows))
    print(f"wrote {out / 'compare.md'}, {out / 'compare.csv'} and {out / 'compare.png'}")
    return 0


def reference_train_parser(sub) -> None:
    p = sub.add_parser("reference-train", help="train the plain-NumPy textbook RNN (hand-written BPTT) on a file",
                       description="Train the textbook vanilla RNN written in plain NumPy (one-hot inputs, tanh, "
                                   "softmax, backpropagation through time by hand, Adagrad), then sample from it. "
                                   "Slow on purpose: it is for reading, not for speed.")
    p.add_argument("file", metavar="FILE", help="a short text file (a few kB is plenty)")
    p.add_argument("--hidden", type=int, default=64, metavar="N", help="hidden units (default: 64)")
    p.add_argument("--seq-len", type=int, default=25, metavar="N", help="BPTT window (default: 25)")
    p.add_argument("--steps", type=int, default=2000, metavar="N", help="training steps (default: 2000)")
    p.add_argument("--lr", type=float, default=0.1, metavar="X", help="Adagrad learning rate (default: 0.1)")
    p.add_argument("--length", type=int, default=300, metavar="N", help="characters to sample (default: 300)")
    p.add_argument("--temperature", type=float, default=1.0, metavar="T", help="sampling temperature (default: 1.0)")
    p.add_argument("--seed", type=parse_seed, default=0, metavar="N")
    p.add_argument("--encoding", default="utf-8")
    p.set_defaults(run=reference_train_command)


def reference_train_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from rnnlab.data.corpus import read_file
    from rnnlab.studies import reference
    reference.check_settings(hidden=args.hidden, seq_len=args.seq_len, steps=args.steps, lr=args.lr,
                             length=args.length, temperature=args.temperature)
    text = read_file(Path(args.file), args.encoding)
    if len(text) > reference.MAX_CHARS:
        print(f"rnnlab: note: {len(text):,} characters; the NumPy reference reads only the first "
              f"{reference.MAX_CHARS:,}", file=sys.stderr)
        text = text[:reference.MAX_CHARS]
    with tqdm(total=args.steps, desc="numpy rnn", file=sys.stderr, dynamic_ncols=True) as bar:
        def progress(step, loss):
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss:.3f}")
        model, chars, losses = reference.train_text(text, hidden=args.hidden, seq_len=args.seq_len, steps=args.steps,
                                                    lr=args.lr, seed=args.seed, progress=progress)
    first, last = sum(losses[:50]) / len(losses[:50]), sum(losses[-50:]) / len(losses[-50:])
    print(f"vocabulary {len(chars)} characters, {args.hidden} hidden units; "
          f"mean loss {first:.3f} (first 50 steps) -> {last:.3f} (last 50 steps) nats/char")
    print(reference.sample_text(model, chars, text[0], args.length, seed=args.seed, temperature=args.temperature))
    return 0


def hopfield_parser(sub) -> None:
    p = sub.add_parser("hopfield", help="the 1982 Hopfield network: store text snippets, recall them, measure capacity",
                       description="Store short text snippets as +/-1 bit patterns with Hebb's rule, recall them from "
                                   "corrupted copies by asynchronous updates, and measure recall against the number "
                                   "of stored random patterns (the capacity limit near 0.14 N).")
    p.add_argument("--snippets", nargs="+", metavar="TEXT", default=list(SNIPPETS),
                   help="snippets to store (ASCII; padded to the longest)")
    p.add_argument("--noise", type=float, default=0.1, metavar="F", help="fraction of bits flipped (default: 0.1)")
    p.add_argument("--units", type=int, default=200, metavar="N", help="units in the capacity sweep (default: 200)")
    p.add_argument("--trials", type=int, default=10, metavar="N", help="trials per point of the sweep (default: 10)")
    p.add_argument("--seed", type=parse_seed, default=0, metavar="N")
    p.add_argument("--out", metavar="DIR", default=None, help="write hopfield.csv and hopfield.png here")
    p.set_defaults(run=hopfield_command)


def hopfield_command(args: argparse.Namespace) -> int:
    import numpy as np

    from rnnlab.studies import hopfield
    hopfield.check_sweep(args.units, args.trials)  # before the snippets: the sweep's settings are checked first
    rng = np.random.default_rng(args.seed)
    results = hopfield.recall_snippets(args.snippets, args.noise, rng)
    width = max(len(s) for s in args.snippets)
    print(f"stored {len(results)} snippets in {8 * width} units ({len(results) / (8 * width):.3f} patterns per "
          f"unit); recalling from copies with {args.noise:.0%} of bits flipped:")
    for r in results:
        print(f"  {'recalled' if r['exact'] else 'FAILED  '}  {r['probe']!r:<{width + 2}} -> {r['recalled']!r}  "
              f"(energy {r['energy'][0]:.1f} -> {r['energy'][1]:.1f})")
    rows = hopfield.capacity_sweep(args.units, args.trials, args.noise, rng)
    print(f"\ncapacity, {args.units} units, random patterns, {args.noise:.0%} noise, {args.trials} trials:")
    print("  patterns  P/N    recall rate")
    for count, rate in rows:
        print(f"  {count:>8}  {count / args.units:.3f}  {rate:.2f}")
    if args.out:
        from rnnlab.studies.plots import plot_hopfield
        out = output_dir(args.out)
        with reported_write_errors(out):
            hopfield.write_csv(rows, args.units, out / "hopfield.csv")
            plot_hopfield(rows, args.units, out / "hopfield.png")
        print(f"wrote {out / 'hopfield.csv'} and {out / 'hopfield.png'}")
    return 0


PARSERS = (gradients_parser, longrange_parser, compare_parser, reference_train_parser, hopfield_parser)
