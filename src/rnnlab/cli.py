"""The `rnnlab` command: argparse sub-commands over the library, nothing more.

Options a user does not give are left out (argparse.SUPPRESS), so the library's dataclass
defaults are the only defaults, and `--resume` can tell a given option from a default one.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import warnings
from dataclasses import fields
from pathlib import Path

from rnnlab import __version__
from rnnlab.errors import RnnlabError, RnnlabWarning

SUPPRESS = argparse.SUPPRESS


def _defaults():
    # imported lazily so that `rnnlab --help` does not pay for importing torch
    from rnnlab.model import ModelConfig
    from rnnlab.train import TrainConfig
    return ({f.name: f.default for f in fields(ModelConfig)}, {f.name: f.default for f in fields(TrainConfig)})


def _presets():
    from rnnlab.train import PRESETS
    return PRESETS


def _clip(value: str) -> float | None:
    if value.lower() in ("none", "off", "0"):
        return None
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {value!r}") from None


def _add_corpus_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("corpus")
    g.add_argument("--valid", metavar="FILE", default=SUPPRESS, help="validation text (file or folder)")
    g.add_argument("--test", metavar="FILE", default=SUPPRESS, help="test text (file or folder)")
    g.add_argument("--valid-fraction", type=float, metavar="F", default=SUPPRESS,
                   help="hold out the last F of the text as validation (default 0.1 when no split is given)")
    g.add_argument("--glob", default=SUPPRESS, help="files to read inside folders (default: *.txt)")
    g.add_argument("--encoding", default=SUPPRESS, help="text encoding (default: utf-8)")
    g.add_argument("--pretokenized", action="store_true", default=SUPPRESS,
                   help="the text is already tokenised: split words on whitespace only (PTB, WikiText)")


def _corpus_options(args: argparse.Namespace) -> dict:
    """The corpus options the user gave (the others stay the library's defaults)."""
    return {k: getattr(args, k) for k in ("valid", "test", "valid_fraction", "glob", "encoding", "pretokenized")
            if hasattr(args, k)}


def build_parser() -> argparse.ArgumentParser:
    model_d, train_d = _defaults()
    parser = argparse.ArgumentParser(
        prog="rnnlab", description="Recurrent neural network language models: train, evaluate, generate.",
        epilog="Start with: rnnlab train pydocs --time-budget 2 --out runs/demo && rnnlab generate runs/demo")
    parser.add_argument("--version", action="version", version=f"rnnlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # -- train -----------------------------------------------------------------------------------
    p = sub.add_parser("train", help="train a language model on a corpus",
                       description="Train a recurrent language model. CORPUS is a file, a folder, several "
                                   "of them, or a named corpus: pydocs (built in), tinyshakespeare, ptb, wikitext-2.")
    p.add_argument("corpus", nargs="*", metavar="CORPUS", help="text to learn from (omit with --resume)")
    p.add_argument("--out", metavar="DIR", default=SUPPRESS, help="model directory (default: a new folder in runs/)")
    p.add_argument("--overwrite", action="store_true", default=SUPPRESS, help="replace an existing model in --out")
    p.add_argument("--resume", metavar="DIR", default=SUPPRESS, help="continue the run in DIR from its last checkpoint")
    p.add_argument("--preset", metavar="NAME", default=SUPPRESS,
                   help="a documented recipe whose settings your own options override: " + ", ".join(_presets()))
    _add_corpus_options(p)
    g = p.add_argument_group("encoding")
    g.add_argument("--level", default=SUPPRESS, metavar="LEVEL",
                   help="char | word | bpe (default: char; word for tokenised corpora)")
    g.add_argument("--max-vocab", type=int, metavar="N", default=SUPPRESS, help="word level: vocabulary cap incl. <unk>, <eos> (default: 20000)")
    g.add_argument("--min-freq", type=int, metavar="N", default=SUPPRESS, help="word level: drop words seen fewer times (default: 1)")
    g.add_argument("--lowercase", action="store_true", default=SUPPRESS, help="word level: lowercase the text")
    g.add_argument("--input", default=SUPPRESS, metavar="KIND",
                   help=f"input layer: learned embedding or the textbook's one-hot x_t (default: {model_d['input']})")
    g.add_argument("--embedding", default=SUPPRESS, metavar="KIND",
                   help="learned (default) | onehot | word2vec (trained on the training split) | PATH of GloVe or "
                        "word2vec vectors")
    g.add_argument("--embedding-format", default=SUPPRESS, metavar="FMT",
                   help="glove | word2vec | word2vec-binary (default: detected)")
    g.add_argument("--freeze-embeddings", action="store_true", default=SUPPRESS, help="keep the embedding fixed")
    g.add_argument("--w2v-cbow", dest="w2v_skipgram", action="store_false", default=SUPPRESS,
                   help="word2vec: CBOW instead of skip-gram")
    g.add_argument("--w2v-window", type=int, default=SUPPRESS, metavar="N", help="word2vec: context window (default: 5)")
    g.add_argument("--w2v-epochs", type=int, default=SUPPRESS, metavar="N", help="word2vec: epochs (default: 5)")
    g.add_argument("--w2v-min-count", type=int, default=SUPPRESS, metavar="N",
                   help="word2vec: ignore rarer tokens (default: 1)")
    g.add_argument("--vocab-size", dest="max_vocab", type=int, default=SUPPRESS, metavar="N",
                   help="bpe: vocabulary size (default: 4096)")
    g.add_argument("--embed-dim", type=int, metavar="N", default=SUPPRESS, help=f"embedding width (default: {model_d['embed_dim']})")
    g = p.add_argument_group("model")
    g.add_argument("--model", default=SUPPRESS, metavar="KIND",
                   help="rnn (default) | hmm (Hidden Markov Model baseline) | ngram (Kneser-Ney baseline)")
    g.add_argument("--states", type=int, default=SUPPRESS, metavar="K", help="hmm: hidden states (default: 64)")
    g.add_argument("--em-iterations", type=int, default=SUPPRESS, metavar="N",
                   help="hmm: Baum-Welch iterations (default: 20)")
    g.add_argument("--order", type=int, default=SUPPRESS, metavar="N", help="ngram: order (default: 5)")
    g.add_argument("--cell", default=SUPPRESS, metavar="CELL", help=f"rnn | rnn-relu | lstm | gru | mingru | minlstm (default: {model_d['cell']})")
    g.add_argument("--hidden", type=int, metavar="N", default=SUPPRESS, help=f"units per layer (default: {model_d['hidden']})")
    g.add_argument("--layers", type=int, metavar="N", default=SUPPRESS, help=f"recurrent layers (default: {model_d['layers']})")
    g.add_argument("--dropout", type=float, metavar="P", default=SUPPRESS, help=f"dropout on input, between layers, on output (default: {model_d['dropout']})")
    g.add_argument("--tie-weights", action="store_true", default=SUPPRESS, help="share embedding and softmax weights")
    g.add_argument("--impl", default=SUPPRESS, metavar="IMPL",
                   help="torch (fused kernels) | explicit (the textbook equations of cells.py; slow) (default: torch)")
    g.add_argument("--softmax", default=SUPPRESS, metavar="KIND",
                   help="full | adaptive (Grave et al. 2017, for large word vocabularies) (default: full)")
    g.add_argument("--cutoffs", type=lambda v: tuple(int(x) for x in v.split(",")), default=SUPPRESS, metavar="N,N",
                   help="adaptive softmax cluster boundaries, e.g. 2000,10000 (default: chosen from the vocabulary)")
    g.add_argument("--init-range", type=float, metavar="R", default=SUPPRESS, help="uniform(-r, r) init of recurrent weights (default: torch's)")
    g = p.add_argument_group("training")
    for name, kind, text in (
        ("batch-size", int, "parallel streams"), ("bptt", int, "tokens per BPTT window"),
        ("optimizer", str, "sgd | adam | adamw"), ("lr", float, "peak learning rate"),
        ("momentum", float, "sgd momentum"), ("weight-decay", float, "weight decay"),
        ("schedule", str, "constant | cosine | plateau | step"), ("warmup", int, "linear warm-up steps"),
        ("lr-floor", float, "cosine: final lr as a fraction of --lr"),
        ("lr-decay", float, "plateau/step: lr multiplier"), ("decay-start", int, "step: epochs before decaying"),
        ("epochs", int, "passes over the training split"), ("max-steps", int, "optimiser steps"),
        ("time-budget", float, "minutes of training, then validate and save"),
        ("eval-every", int, "steps between validations (default: every epoch)"),
        ("eval-batch-size", int, "streams when validating"), ("patience", int, "early stop after N bad validations"),
        ("save-every", int, "steps between checkpoints (default: at validations)"),
        ("sample-every", int, "steps between printed samples"), ("log-every", int, "steps between metrics lines"),
        ("precision", str, "fp32 | bf16 (autocast)"), ("seed", int, "random seed"),
        ("device", str, "auto | cpu | cuda | mps"),
    ):
        default = train_d[name.replace("-", "_")]
        g.add_argument(f"--{name}", type=kind, default=SUPPRESS, metavar="MINUTES" if name == "time-budget" else {int: "N", float: "X"}.get(kind, "NAME"),
                       help=text + ("" if "default:" in text or default is None else f" (default: {default})"))
    g.add_argument("--clip", type=_clip, default=SUPPRESS, metavar="NORM",
                   help=f"global gradient-norm clip, or 'none' (default: {train_d['clip']})")
    g.add_argument("--skip-nonfinite", action="store_true", default=SUPPRESS,
                   help="skip steps with a NaN/inf loss instead of stopping")
    p.add_argument("--no-cache", dest="cache", action="store_false", default=SUPPRESS,
                   help="tokenise the corpus again instead of reading (and writing) the token cache in "
                        "$RNNLAB_CACHE (default ~/.cache/rnnlab/tokens)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    # -- evaluate --------------------------------------------------------------------------------
    p = sub.add_parser("evaluate", help="loss, perplexity and bits per token on held-out text",
                       description="Evaluate MODEL on a split of CORPUS (default: the corpus it was trained on), "
                                   "reading the text as one stream.")
    p.add_argument("model", metavar="MODEL", help="model directory")
    p.add_argument("corpus", nargs="*", metavar="CORPUS", help="corpus (default: the model's own)")
    p.add_argument("--split", choices=["train", "valid", "test"], default="valid", help="which split (default: valid)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--device", default="cpu", help="cpu | cuda | mps (default: cpu)")
    _add_corpus_options(p)

    # -- generate --------------------------------------------------------------------------------
    p = sub.add_parser("generate", help="write new text from a prompt",
                       description="Generate text with MODEL, streaming it to stdout.")
    p.add_argument("model", metavar="MODEL", help="model directory")
    p.add_argument("--prompt", default=None, help="seed text (default: a random vocabulary word)")
    p.add_argument("--length", type=int, default=500, help="new tokens to write (default: 500)")
    p.add_argument("--temperature", type=float, default=1.0, help="< 1 safer, > 1 wilder (default: 1.0)")
    p.add_argument("--top-k", type=int, default=None, help="sample from the K most likely tokens")
    p.add_argument("--top-p", type=float, default=None, help="sample from the smallest set with mass P")
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--num-samples", type=int, default=1, help="independent samples (default: 1)")
    p.add_argument("--seed", type=int, default=None, help="same seed, same text")
    p.add_argument("--out", metavar="FILE", default=None, help="also write the text to FILE")
    p.add_argument("--device", default="cpu", help="cpu | cuda | mps (default: cpu)")

    # -- compare ----------------------------------------------------------------------------------
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
    _add_corpus_options(p)

    # -- why plain RNNs fail --------------------------------------------------------------------
    p = sub.add_parser("gradients", help="measure vanishing/exploding gradients through time, per cell",
                       description="Measure ||dL_T/dh_t||, the gradient of the last step's loss with respect to each "
                                   "earlier hidden state, for fresh models of each --cell (or a trained MODEL), and "
                                   "plot it. With --train-steps, train a tanh RNN with and without gradient clipping "
                                   "and plot both loss curves (Pascanu et al. 2013).")
    p.add_argument("model", nargs="?", metavar="MODEL", help="a trained model directory (default: fresh models)")
    p.add_argument("--cell", default="rnn,lstm,gru", help="cells to compare (default: rnn,lstm,gru)")
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
    p.add_argument("--seed", type=int, default=0, metavar="N")
    p.add_argument("--out", metavar="DIR", default="runs/gradients", help="default: runs/gradients")

    p = sub.add_parser("longrange", help="long-range tasks on which tanh RNNs fail and LSTM/GRU succeed",
                       description="The adding problem (Hochreiter & Schmidhuber 1997) or the copy-memory task "
                                   "(Arjovsky et al. 2016) for each cell and sequence length: accuracy or loss "
                                   "against the memoryless baseline.")
    p.add_argument("--task", default="adding", help="adding | copy (default: adding)")
    p.add_argument("--cells", default="rnn,lstm,gru", help="default: rnn,lstm,gru")
    p.add_argument("--lengths", default=None, metavar="LIST",
                   help="sequence lengths (default: 10,50,100,200 for adding, 10,20,50 for copy)")
    p.add_argument("--steps", type=int, default=None, metavar="N", help="training steps per run (default: the task's)")
    p.add_argument("--hidden", type=int, default=64, metavar="N", help="units (default: 64)")
    p.add_argument("--time-budget", type=float, default=None, metavar="MINUTES",
                   help="cap for the whole sweep, shared evenly by its runs")
    p.add_argument("--seed", type=int, default=0, metavar="N")
    p.add_argument("--out", metavar="DIR", default=None, help="write longrange.csv and longrange.png here")

    # -- study: the NumPy reference RNN and the Hopfield network ----------------------------------
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
    p.add_argument("--seed", type=int, default=0, metavar="N")
    p.add_argument("--encoding", default="utf-8")

    p = sub.add_parser("hopfield", help="the 1982 Hopfield network: store text snippets, recall them, measure capacity",
                       description="Store short text snippets as +/-1 bit patterns with Hebb's rule, recall them from "
                                   "corrupted copies by asynchronous updates, and measure recall against the number "
                                   "of stored random patterns (the capacity limit near 0.14 N).")
    p.add_argument("--snippets", nargs="+", metavar="TEXT",
                   default=["to be or not to be, that is", "the quick brown fox jumps ov", "all that glitters is not g"],
                   help="snippets to store (ASCII; padded to the longest)")
    p.add_argument("--noise", type=float, default=0.1, metavar="F", help="fraction of bits flipped (default: 0.1)")
    p.add_argument("--units", type=int, default=200, metavar="N", help="units in the capacity sweep (default: 200)")
    p.add_argument("--trials", type=int, default=10, metavar="N", help="trials per point of the sweep (default: 10)")
    p.add_argument("--seed", type=int, default=0, metavar="N")
    p.add_argument("--out", metavar="DIR", default=None, help="write hopfield.csv and hopfield.png here")

    # -- serve --------------------------------------------------------------------------------------
    p = sub.add_parser("serve", help="serve a model over HTTP: a JSON/SSE API and a web page",
                       description="Serve MODEL at http://HOST:PORT/: a page to try it, POST /v1/generate (JSON, or "
                                   "Server-Sent Events with \"stream\": true), GET /v1/model, GET /healthz, /docs.")
    p.add_argument("model", metavar="MODEL", help="model directory")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0: any free port)")
    p.add_argument("--max-prompt-chars", type=int, default=SUPPRESS, metavar="N", help="longest prompt (default: 4000)")
    p.add_argument("--max-tokens", type=int, default=SUPPRESS, metavar="N", help="most tokens per request (default: 2000)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | mps (default: cpu)")

    # -- corpora, download, info ---------------------------------------------------------------------
    sub.add_parser("corpora", help="list the built-in and named corpora and where they are cached")
    p = sub.add_parser("download", help="download named corpora into the cache now")
    p.add_argument("names", nargs="+", metavar="NAME")
    p = sub.add_parser("info", help="show a model directory's card: config and results")
    p.add_argument("model", metavar="MODEL")
    p = sub.add_parser("neighbors", help="nearest words to WORD in a model's input embedding")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("word", metavar="WORD")
    p.add_argument("-k", type=int, default=10, help="how many (default: 10)")
    p = sub.add_parser("embeddings", help="export a model's input embedding as a word2vec text file")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--out", metavar="FILE", required=True)
    return parser


# ---------------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from rnnlab.train import train
    options = {k: v for k, v in vars(args).items() if k not in ("command", "command_line", "corpus", "quiet")}
    lm = train(args.corpus or None, progress=not args.quiet, command=args.command_line, **options)
    print(f"model saved in {lm.path}")
    print(f"try: rnnlab generate {shlex.quote(str(lm.path))} --length 300")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from rnnlab.evaluate import evaluate
    from rnnlab.lm import load
    lm = load(args.model, device=args.device)
    options = _corpus_options(args)
    result = evaluate(lm, args.corpus or None, split=args.split, progress=not args.json, **options)
    if args.json:
        print(json.dumps(result))
    else:
        unit = "character" if lm.tokenizer.kind == "char" else "token"
        print(f"split:            {args.split}")
        print(f"tokens:           {result['tokens']:,}")
        print(f"loss:             {result['loss']:.4f} nats/{unit}")
        print(f"perplexity:       {result['perplexity']:.2f}")
        print(f"bits per {unit}: {result['bits_per_token']:.4f}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from rnnlab.generate import check_sampling
    from rnnlab.lm import load
    check_sampling(args.temperature, args.top_k, args.top_p)  # before the (slower) model load
    if args.num_samples < 1:
        raise RnnlabError(f"--num-samples must be at least 1, got {args.num_samples}")
    if args.out:
        try:
            open(args.out, "a").close()
        except OSError as e:
            raise RnnlabError(f"cannot write --out {args.out}: {e.strerror}") from None
    lm = load(args.model, device=args.device)
    texts = []
    for i in range(args.num_samples):
        if i:
            print("\n" + "-" * 40, flush=True)
        seed = None if args.seed is None else args.seed + i
        pieces = []
        for piece in lm.stream(args.prompt, length=args.length, temperature=args.temperature, top_k=args.top_k,
                               top_p=args.top_p, greedy=args.greedy, seed=seed):
            pieces.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
        print()
        texts.append("".join(pieces))
    if args.out:
        from rnnlab.checkpoint import write_text
        write_text(Path(args.out), "\n\n".join(texts) + "\n")
    return 0


def cmd_corpora(args: argparse.Namespace) -> int:
    from rnnlab.corpus import NAMED, cache_dir
    print(f"cache: {cache_dir()}  (set RNNLAB_CACHE to move it)")
    print(f"  {'pydocs':<16} built in: English docstrings of this Python's standard library (~1 MB)")
    for name, spec in NAMED.items():
        cached = all((cache_dir() / f.path).is_file() for f in spec.files)
        print(f"  {name:<16} {'cached' if cached else 'downloads on first use'}: {spec.description}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from rnnlab.corpus import NAMED, fetch
    for name in args.names:
        if name not in NAMED:
            raise RnnlabError(f"unknown corpus {name!r}; named corpora: {', '.join(NAMED)}")
        for remote in NAMED[name].files:
            print(fetch(remote))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from rnnlab.checkpoint import CARD, read_config
    read_config(Path(args.model))
    card = Path(args.model) / CARD
    print(card.read_text(encoding="utf-8") if card.is_file() else json.dumps(read_config(Path(args.model)), indent=2))
    return 0


def _int_list(text: str, option: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise RnnlabError(f"{option} takes whole numbers separated by commas, got {text!r}") from None


def cmd_gradients(args: argparse.Namespace) -> int:
    from rnnlab import gradients
    from rnnlab.plots import plot_gradient_norms, plot_loss_curves
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cells = [c for c in args.cell.split(",") if c]
    if args.train_steps is not None:
        clips = [_clip(c) for c in args.clip.split(",")]
        curves = gradients.clip_experiment(clips, cell=cells[0], corpus=args.corpus or "pydocs", hidden=args.hidden,
                                           seq_len=args.seq_len, steps=args.train_steps, lr=args.lr, seed=args.seed,
                                           recurrent_init_scale=args.recurrent_init_scale or 1.5)
        for label, losses in curves.items():
            diverged = gradients.first_divergence(losses)
            print(f"{label:<12} first loss {losses[0]:.3f}  last loss {losses[-1]:.3f}  "
                  + (f"diverged at step {diverged}" if diverged is not None else "never diverged"))
        gradients.write_json(out / "clipping.json", curves)
        plot_loss_curves(curves, out / "clipping.png",
                         title=f"{cells[0]} training loss, spectral radius {args.recurrent_init_scale or 1.5}")
        print(f"wrote {out / 'clipping.json'} and {out / 'clipping.png'}")
        return 0
    result = gradients.measure(cells, model_dir=args.model, corpus=args.corpus, hidden=args.hidden,
                               layers=args.layers, seq_len=args.seq_len, batches=args.batches,
                               batch_size=args.batch_size, recurrent_init_scale=args.recurrent_init_scale,
                               seed=args.seed)
    print(gradients.format_table(result))
    gradients.write_json(out / "gradients.json", result)
    plot_gradient_norms(result, out / "gradients.png")
    print(f"wrote {out / 'gradients.json'} and {out / 'gradients.png'}")
    return 0


def cmd_longrange(args: argparse.Namespace) -> int:
    from rnnlab import longrange
    cells = [c for c in args.cells.split(",") if c]
    lengths = _int_list(args.lengths, "--lengths") if args.lengths else None
    runs = len(cells) * len(lengths or longrange.TASKS.get(args.task, longrange.TASKS["adding"]).lengths)
    budget = None if args.time_budget is None else 60 * args.time_budget / max(runs, 1)
    rows = longrange.run(args.task, cells, lengths, steps=args.steps, hidden=args.hidden, time_budget_s=budget,
                         seed=args.seed, log=lambda m: print(m, flush=True))
    print(longrange.format_table(rows))
    if args.out:
        from rnnlab.plots import plot_longrange
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        longrange.write_csv(rows, out / "longrange.csv")
        plot_longrange(rows, out / "longrange.png")
        print(f"wrote {out / 'longrange.csv'} and {out / 'longrange.png'}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from rnnlab import compare
    from rnnlab.corpus import load_corpus
    from rnnlab.plots import plot_compare
    models, sizes = compare.parse_models(args.models), compare.parse_sizes(args.train_tokens)
    options = _corpus_options(args)
    corpus = load_corpus(args.corpus, **options)
    tokenizer = compare.fixed_tokenizer(corpus, args.level or ("word" if corpus.pretokenized else "char"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = compare.run(corpus, tokenizer, models, sizes, out, time_budget=args.time_budget,
                       log=lambda m: print(m, flush=True))
    from rnnlab.checkpoint import write_text
    write_text(out / "compare.csv", compare.to_csv(rows))
    write_text(out / "compare.md", compare.to_markdown(rows))
    plot_compare(rows, out / "compare.png", title=f"{corpus.name}: validation perplexity")
    print()
    print(compare.to_markdown(rows))
    print(f"wrote {out / 'compare.md'}, {out / 'compare.csv'} and {out / 'compare.png'}")
    return 0


def cmd_reference_train(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from rnnlab.corpus import read_file
    from rnnlab.reference import train_text
    text = read_file(Path(args.file), args.encoding)
    if len(text) > 200_000:
        print(f"rnnlab: note: {len(text):,} characters; the NumPy reference reads only the first 200,000",
              file=sys.stderr)
        text = text[:200_000]
    with tqdm(total=args.steps, desc="numpy rnn", file=sys.stderr, dynamic_ncols=True) as bar:
        def progress(step, loss):
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss:.3f}")
        model, chars, losses = train_text(text, hidden=args.hidden, seq_len=args.seq_len, steps=args.steps,
                                          lr=args.lr, seed=args.seed, progress=progress)
    first, last = np.mean(losses[:50]), np.mean(losses[-50:])
    print(f"vocabulary {len(chars)} characters, {args.hidden} hidden units; "
          f"mean loss {first:.3f} (first 50 steps) -> {last:.3f} (last 50 steps) nats/char")
    ids = model.sample(chars.index(text[0]), args.length, np.random.default_rng(args.seed), args.temperature)
    print(text[0] + "".join(chars[i] for i in ids))
    return 0


def cmd_hopfield(args: argparse.Namespace) -> int:
    import numpy as np

    from rnnlab import hopfield
    if not 0 <= args.noise < 0.5:
        raise RnnlabError(f"--noise must be in [0, 0.5), got {args.noise}")
    rng = np.random.default_rng(args.seed)
    width = max(len(s) for s in args.snippets)
    patterns = np.stack([hopfield.encode_text(s, width) for s in args.snippets])       # (P, 8 * width)
    weights = hopfield.store(patterns)
    n = patterns.shape[1]
    print(f"stored {len(patterns)} snippets in {n} units ({len(patterns) / n:.3f} patterns per unit); "
          f"recalling from copies with {args.noise:.0%} of bits flipped:")
    for pattern in patterns:
        probe = hopfield.corrupt(pattern, args.noise, rng)
        final = hopfield.recall(weights, probe, rng)
        ok = "recalled" if (final == pattern).all() else "FAILED  "
        print(f"  {ok}  {hopfield.decode_text(probe)!r:<{width + 2}} -> {hopfield.decode_text(final)!r}  "
              f"(energy {hopfield.energy(weights, probe):.1f} -> {hopfield.energy(weights, final):.1f})")
    counts = sorted({max(1, round(f * args.units)) for f in (0.02, 0.05, 0.08, 0.1, 0.12, 0.14, 0.16, 0.2, 0.25, 0.3)})
    rows = hopfield.capacity_experiment(args.units, counts, args.trials, args.noise, rng)
    print(f"\ncapacity, {args.units} units, random patterns, {args.noise:.0%} noise, {args.trials} trials:")
    print("  patterns  P/N    recall rate")
    for count, rate in rows:
        print(f"  {count:>8}  {count / args.units:.3f}  {rate:.2f}")
    if args.out:
        from rnnlab.plots import plot_hopfield
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "hopfield.csv").write_text("units,patterns,patterns_per_unit,recall_rate\n" + "".join(
            f"{args.units},{c},{c / args.units:.4f},{r:.4f}\n" for c, r in rows))
        plot_hopfield(rows, args.units, out / "hopfield.png")
        print(f"wrote {out / 'hopfield.csv'} and {out / 'hopfield.png'}")
    return 0


def _embedding_table(path: str):
    from rnnlab.lm import load
    lm = load(path)
    if getattr(lm, "net", None) is None or lm.net.config.input != "learned":
        raise RnnlabError(f"{path} has no learned input embedding (one-hot input or a baseline model)")
    return lm


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from rnnlab.serve import main_serve
    except ImportError as e:
        raise RnnlabError(f"rnnlab serve needs FastAPI and uvicorn ({e.name} is missing): "
                          "pip install 'rnnlab[serve]'") from None
    limits = {k: getattr(args, k) for k in ("max_prompt_chars", "max_tokens") if hasattr(args, k)}
    return main_serve(args.model, args.host, args.port, device=args.device, **limits)


def cmd_neighbors(args: argparse.Namespace) -> int:
    from rnnlab.embeddings import nearest
    lm = _embedding_table(args.model)
    for word, similarity in nearest(lm.net.encoder.weight, lm.tokenizer.vocab, args.word, args.k):
        print(f"{similarity:7.3f}  {word}")
    return 0


def cmd_embeddings(args: argparse.Namespace) -> int:
    from rnnlab.embeddings import export
    lm = _embedding_table(args.model)
    if lm.tokenizer.kind == "char":
        raise RnnlabError("a char-level vocabulary has whitespace tokens, which word2vec text files cannot hold")
    export(lm.net.encoder.weight, lm.tokenizer.vocab, args.out)
    print(f"wrote {lm.tokenizer.vocab_size:,} vectors of {lm.net.encoder.weight.size(1)} dimensions to {args.out}")
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "generate": cmd_generate, "corpora": cmd_corpora,
            "download": cmd_download, "info": cmd_info, "reference-train": cmd_reference_train,
            "hopfield": cmd_hopfield, "compare": cmd_compare, "neighbors": cmd_neighbors,
            "embeddings": cmd_embeddings, "serve": cmd_serve, "gradients": cmd_gradients,
            "longrange": cmd_longrange}


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"rnnlab: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.command_line = "rnnlab " + " ".join(shlex.quote(a) for a in argv)
    # warnings print as one line while a command runs; the caller's settings come back afterwards
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        warnings.simplefilter("always", RnnlabWarning)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        return COMMANDS[args.command](args)
    except RnnlabError as e:
        from rnnlab.train import TrainingInterrupted
        print(f"rnnlab: error: {e}", file=sys.stderr)
        return 130 if isinstance(e, TrainingInterrupted) else 1
    except KeyboardInterrupt:
        print("rnnlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
