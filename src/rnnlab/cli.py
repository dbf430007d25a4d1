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
    g.add_argument("--level", default=SUPPRESS, metavar="LEVEL", help="char | word (default: char)")
    g.add_argument("--max-vocab", type=int, metavar="N", default=SUPPRESS, help="word level: vocabulary cap incl. <unk>, <eos> (default: 20000)")
    g.add_argument("--min-freq", type=int, metavar="N", default=SUPPRESS, help="word level: drop words seen fewer times (default: 1)")
    g.add_argument("--lowercase", action="store_true", default=SUPPRESS, help="word level: lowercase the text")
    g.add_argument("--input", default=SUPPRESS, metavar="KIND",
                   help=f"input layer: learned embedding or the textbook's one-hot x_t (default: {model_d['input']})")
    g.add_argument("--embed-dim", type=int, metavar="N", default=SUPPRESS, help=f"embedding width (default: {model_d['embed_dim']})")
    g = p.add_argument_group("model")
    g.add_argument("--cell", default=SUPPRESS, metavar="CELL", help=f"rnn | rnn-relu | lstm | gru (default: {model_d['cell']})")
    g.add_argument("--hidden", type=int, metavar="N", default=SUPPRESS, help=f"units per layer (default: {model_d['hidden']})")
    g.add_argument("--layers", type=int, metavar="N", default=SUPPRESS, help=f"recurrent layers (default: {model_d['layers']})")
    g.add_argument("--dropout", type=float, metavar="P", default=SUPPRESS, help=f"dropout on input, between layers, on output (default: {model_d['dropout']})")
    g.add_argument("--tie-weights", action="store_true", default=SUPPRESS, help="share embedding and softmax weights")
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
        ("seed", int, "random seed"), ("device", str, "auto | cpu | cuda | mps"),
    ):
        default = train_d[name.replace("-", "_")]
        g.add_argument(f"--{name}", type=kind, default=SUPPRESS, metavar="MINUTES" if name == "time-budget" else {int: "N", float: "X"}.get(kind, "NAME"),
                       help=text + ("" if "default:" in text or default is None else f" (default: {default})"))
    g.add_argument("--clip", type=_clip, default=SUPPRESS, metavar="NORM",
                   help=f"global gradient-norm clip, or 'none' (default: {train_d['clip']})")
    g.add_argument("--skip-nonfinite", action="store_true", default=SUPPRESS,
                   help="skip steps with a NaN/inf loss instead of stopping")
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

    # -- corpora, download, info ---------------------------------------------------------------------
    sub.add_parser("corpora", help="list the built-in and named corpora and where they are cached")
    p = sub.add_parser("download", help="download named corpora into the cache now")
    p.add_argument("names", nargs="+", metavar="NAME")
    p = sub.add_parser("info", help="show a model directory's card: config and results")
    p.add_argument("model", metavar="MODEL")
    return parser


# ---------------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from rnnlab.train import train
    options = {k: v for k, v in vars(args).items() if k not in ("command", "corpus", "quiet")}
    lm = train(args.corpus or None, progress=not args.quiet,
               command="rnnlab " + " ".join(shlex.quote(a) for a in sys.argv[1:]), **options)
    print(f"model saved in {lm.path}")
    print(f"try: rnnlab generate {shlex.quote(str(lm.path))} --length 300")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from rnnlab.evaluate import evaluate
    from rnnlab.lm import load
    lm = load(args.model, device=args.device)
    options = {k: getattr(args, k) for k in ("valid", "test", "valid_fraction", "glob", "encoding", "pretokenized")
               if hasattr(args, k)}
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


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "generate": cmd_generate, "corpora": cmd_corpora,
            "download": cmd_download, "info": cmd_info}


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"rnnlab: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _show_warning
    warnings.simplefilter("always", RnnlabWarning)
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
