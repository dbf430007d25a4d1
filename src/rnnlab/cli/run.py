"""`rnnlab train`, `evaluate`, `generate` and `serve`: each parser beside the function that runs it."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import warnings
from pathlib import Path

from rnnlab.cli.flags import add_config_flags, given
from rnnlab.errors import RnnlabError, RnnlabWarning
from rnnlab.models.config import ModelConfig
from rnnlab.training.config import BaselineConfig, DataConfig, EmbeddingConfig, TrainConfig
from rnnlab.training.presets import PRESETS

CORPUS_FLAGS = ("valid", "test", "valid_fraction", "glob", "encoding", "pretokenized")
DEVICE_HELP = "cpu | cuda | mps (default: cpu)"


def train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a language model on a corpus",
                       description="Train a recurrent language model. CORPUS is a file, a folder, several "
                                   "of them, or a named corpus: pydocs (built in), tinyshakespeare, ptb, wikitext-2.")
    p.add_argument("corpus", nargs="*", metavar="CORPUS", help="text to learn from (omit with --resume)")
    p.add_argument("--out", metavar="DIR", default=argparse.SUPPRESS, help="model directory (default: a new folder "
                                                                            "in runs/)")
    p.add_argument("--overwrite", action="store_true", default=argparse.SUPPRESS,
                   help="replace an existing model in --out")
    p.add_argument("--resume", metavar="DIR", default=argparse.SUPPRESS,
                   help="continue the run in DIR from its last checkpoint")
    p.add_argument("--init-from", metavar="MODEL", default=argparse.SUPPRESS,
                   help="fine-tune: start from MODEL's weights and tokenizer, with a fresh optimiser and schedule")
    p.add_argument("--keep-vocab", action="store_true", default=argparse.SUPPRESS,
                   help="with --init-from, char level: read new characters as <unk> instead of adding them")
    p.add_argument("--extend-vocab", type=int, metavar="N", default=argparse.SUPPRESS,
                   help="with --init-from, word level: add the N most frequent new words")
    p.add_argument("--preset", metavar="NAME", default=argparse.SUPPRESS,
                   help="a documented recipe whose settings your own options override: " + ", ".join(PRESETS))
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_flags(p.add_argument_group("corpus and tokens"), DataConfig)
    add_config_flags(p.add_argument_group("input vectors"), EmbeddingConfig)
    add_config_flags(p.add_argument_group("model"), ModelConfig)
    add_config_flags(p.add_argument_group("baselines"), BaselineConfig)
    add_config_flags(p.add_argument_group("training"), TrainConfig)
    p.set_defaults(run=train_command)


def train_command(args: argparse.Namespace) -> int:
    from rnnlab.training.pipeline import train
    options = {k: v for k, v in vars(args).items() if k not in ("command", "command_line", "run", "corpus", "quiet")}
    lm = train(args.corpus or None, progress=not args.quiet, command=args.command_line, **options)
    from rnnlab.training.distributed import launched_rank
    if launched_rank() == 0:  # of a DDP job's processes, only rank 0 saved
        print(f"model saved in {lm.path}")
        print(f"try: rnnlab generate {shlex.quote(str(lm.path))} --length 300")
    return 0


def evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="loss, perplexity and bits per token on held-out text",
                       description="Evaluate MODEL on the whole of CORPUS (or one --split of it; without "
                                   "CORPUS, the corpus it was trained on), reading the text as one stream.")
    p.add_argument("model", metavar="MODEL", help="model directory")
    p.add_argument("corpus", nargs="*", metavar="CORPUS", help="corpus (default: the model's own)")
    p.add_argument("--split", choices=["train", "valid", "test"], default=None,
                   help="which split (default: the whole of CORPUS when one is given; valid of the model's own)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    dynamic = p.add_argument_group("dynamic evaluation (Krause et al. 2017): the model adapts by SGD on the text "
                                   "as it reads it; reported apart from the static score")
    dynamic.add_argument("--dynamic", action="store_true", help="score by dynamic evaluation")
    dynamic.add_argument("--dynamic-lr", type=float, default=0.3, metavar="X",
                         help="SGD step on each segment's mean loss (default 0.3, the best of 0.1-3 on PTB valid; "
                              "choose it on your valid split)")
    dynamic.add_argument("--dynamic-decay", type=float, default=0.0, metavar="X",
                         help="pull towards the trained weights after each step, in [0, 1) (default 0)")
    dynamic.add_argument("--dynamic-segment", type=int, default=50, metavar="N",
                         help="tokens scored before each update (default 50)")
    add_config_flags(p.add_argument_group("corpus"), DataConfig, only=CORPUS_FLAGS)
    p.set_defaults(run=evaluate_command)


def evaluate_command(args: argparse.Namespace) -> int:
    from rnnlab.inference.evaluate import evaluate, scored_split
    from rnnlab.inference.loading import load
    lm = load(args.model, device=args.device)
    options = given(args, DataConfig, only=CORPUS_FLAGS)
    dynamic = (dict(lr=args.dynamic_lr, decay=args.dynamic_decay, segment=args.dynamic_segment)
               if args.dynamic else None)
    result = evaluate(lm, args.corpus or None, split=args.split, progress=not args.json, dynamic=dynamic, **options)
    if dynamic is not None:
        result = {"dynamic": {**result, **dynamic}}  # never to be read as the static score
    if args.json:
        print(json.dumps(result))
        return 0
    unit = "character" if lm.tokenizer.kind == "char" else "token"
    which = scored_split(args.corpus or None, args.split, options)
    what = ", ".join(args.corpus) if args.corpus else "the model's corpus"
    print(f"text:             {f'{which} split of ' if which else 'all of '}{what}")
    if dynamic is not None:
        print(f"dynamic evaluation (the model adapting as it reads: not a static score): lr {dynamic['lr']:g}, "
              f"decay {dynamic['decay']:g}, segments of {dynamic['segment']} tokens")
        result = result["dynamic"]
    print_metrics(result, unit, "tokens:          ")
    return 0


def print_metrics(result: dict, unit: str, tokens_label: str) -> None:
    """The four lines evaluate and score print: tokens, loss, perplexity, bits per token."""
    print(f"{tokens_label} {result['tokens']:,}")
    print(f"loss:             {result['loss']:.4f} nats/{unit}")
    print(f"perplexity:       {result['perplexity']:.2f}")
    print(f"bits per {unit}: {result['bits_per_token']:.4f}")


def score_parser(sub) -> None:
    p = sub.add_parser("score", help="score a text token by token: surprisal, per-line perplexity, odd lines",
                       description="Score FILE with MODEL, reading it as one stream: the whole text's loss and "
                                   "perplexity, each line's perplexity, and the most surprising lines (--top); "
                                   "--tokens lists every token's surprisal; --json gives it all as one object.")
    p.add_argument("model", metavar="MODEL", help="model directory")
    p.add_argument("file", metavar="FILE", help="a text file")
    p.add_argument("--top", type=int, default=10, metavar="N", help="show the N most surprising lines (default: 10; "
                   "0: none)")
    p.add_argument("--tokens", action="store_true", help="also list every token with its surprisal in bits")
    p.add_argument("--json", action="store_true", help="print one JSON object: the totals, per_token and lines")
    p.add_argument("--encoding", default="utf-8", help="text encoding (default: utf-8)")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    p.set_defaults(run=score_command)


def score_command(args: argparse.Namespace) -> int:
    from rnnlab.data.corpus import read_file
    from rnnlab.inference.loading import load
    if args.top < 0:
        raise RnnlabError(f"--top must be >= 0, got {args.top}")
    text = read_file(Path(args.file), args.encoding)
    lm = load(args.model, device=args.device)
    result = lm.score(text)
    if args.json:
        print(json.dumps(result))
        return 0
    unit = "character" if lm.tokenizer.kind == "char" else "token"
    print(f"text:             {args.file} ({len(result['lines']):,} lines)")
    print_metrics(result, unit, "tokens scored:   ")
    if args.tokens:
        print("\ntoken surprisal (bits), in order:")
        for item in result["per_token"]:
            print(f"  {item['surprisal_bits']:6.2f}  {item['token']!r}")
    scored = [line for line in result["lines"] if line["tokens"]]
    if args.top and scored:
        print(f"\nthe {min(args.top, len(scored))} most surprising lines (perplexity per {unit}):")
        for line in sorted(scored, key=lambda line: -line["loss"])[:args.top]:
            shown = line["text"] if len(line["text"]) <= 80 else line["text"][:77] + "..."
            print(f"  line {line['line']:>6} | ppl {line['perplexity']:>9.2f} | {line['tokens']:>5} {unit}s | {shown}")
    return 0


def generate_parser(sub) -> None:
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
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="end the text before TEXT would appear (repeatable; \\n and \\t read as a newline and a tab)")
    p.add_argument("--repetition-penalty", type=float, default=1.0, metavar="P",
                   help="> 1 makes tokens of the last --repetition-window tokens less likely (CTRL; 1.0: off)")
    p.add_argument("--repetition-window", type=int, default=64, metavar="N",
                   help="tokens --repetition-penalty looks back over (default: 64)")
    p.add_argument("--no-repeat-ngram", type=int, default=0, metavar="N",
                   help="never repeat an N-token sequence of the text (0: off; char models: 8-16)")
    p.add_argument("--from-start", action="store_true",
                   help="start at the beginning of a document (a model trained on several files); the prompt, if "
                        "any, is its first words")
    p.add_argument("-i", "--interactive", action="store_true",
                   help="a conversation: type text, the model continues it, the state runs through all of it; "
                        "/help lists the commands; Ctrl-D ends")
    p.add_argument("--beam", type=int, default=None, metavar="N",
                   help="beam search with N beams: the most likely continuation, to the end of the line or --length")
    p.add_argument("--length-penalty", type=float, default=1.0, metavar="A",
                   help="with --beam: rank beams by log-probability / length ** A (default: 1.0)")
    p.add_argument("--out", metavar="FILE", default=None, help="also write the text to FILE (a new file, or any "
                   "file with --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="with --out: replace FILE if it exists")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="the steps' matrix products: bf16 is faster on a CPU with AMX, and gives slightly different "
                        "text for a seed (default: fp32)")
    p.add_argument("--compile", action="store_true",
                   help="plain sampling (temperature only) through torch.compile: up to ~1.6x faster for a small "
                        "model's long texts, after a compile of ~20 s the first time (seconds after: cached); needs a "
                        "C++ compiler; CPU, fp32")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    p.set_defaults(run=generate_command)


def generate_command(args: argparse.Namespace) -> int:
    from rnnlab.files import output_file, reported_write_errors, write_text
    from rnnlab.inference.loading import load
    from rnnlab.inference.sampling import check_repetition, check_sampling
    from rnnlab.options import MAX_GENERATION_SEED, check_seed
    # every option checked before the (slower) model load
    check_sampling(args.temperature, args.top_k, args.top_p)
    check_seed(args.seed, maximum=MAX_GENERATION_SEED)
    check_repetition(args.repetition_penalty, args.repetition_window, args.no_repeat_ngram)
    stops = [text.replace("\\n", "\n").replace("\\t", "\t") for text in args.stop]  # a shell passes \n as is
    if args.num_samples < 1:
        raise RnnlabError(f"--num-samples must be at least 1, got {args.num_samples}")
    if args.beam is not None:
        from rnnlab.inference.beam import check_beam
        check_beam(args.beam, args.length_penalty)
        sampling = [flag for flag, on in (("--greedy", args.greedy), ("--top-k", args.top_k is not None),
                                          ("--top-p", args.top_p is not None), ("--temperature", args.temperature != 1.0),
                                          ("--num-samples", args.num_samples != 1), ("--stop", bool(args.stop)))
                    if on]
        if sampling:
            raise RnnlabError(f"--beam searches for the likeliest text; it does not combine with {', '.join(sampling)}")
    if args.compile:
        if args.precision != "fp32":
            raise RnnlabError("--compile runs fp32 steps; drop --precision bf16 or --compile")
        other = [flag for flag, on in (("-i", args.interactive), ("--beam", args.beam is not None),
                                       ("--greedy", args.greedy), ("--top-k", args.top_k is not None),
                                       ("--top-p", args.top_p is not None),
                                       ("--repetition-penalty", args.repetition_penalty != 1.0),
                                       ("--no-repeat-ngram", args.no_repeat_ngram > 0)) if on]
        if other:
            raise RnnlabError(f"--compile speeds up plain sampling (temperature only) and would do nothing with "
                              f"{', '.join(other)}; drop one or the other")
    if args.out:  # checked before anything runs; the file itself is written only once the text exists
        output_file(args.out, overwrite=args.overwrite)
    lm = load(args.model, device=args.device, precision=args.precision)
    if args.compile:
        if not hasattr(lm, "compiled"):
            raise RnnlabError(f"--compile needs an RNN model; {args.model} is a {lm.model_type} baseline")
        lm.compiled = True
    if args.interactive:
        return interactive(lm, args)
    if args.beam is not None:
        if not hasattr(lm, "beam"):
            raise RnnlabError(f"--beam needs an RNN model; {args.model} is a {lm.model_type} baseline")
        text = lm.beam(args.prompt, length=args.length, width=args.beam, length_penalty=args.length_penalty)
        print(text)
        if args.out:
            with reported_write_errors(Path(args.out).parent):
                write_text(Path(args.out), text + "\n")
        return 0
    texts = []
    for i in range(args.num_samples):
        if i:
            print("\n" + "-" * 40, flush=True)
        seed = None if args.seed is None else args.seed + i
        pieces = []
        # warnings (unknown prompt words) are shown after the text's last line, never inside it
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RnnlabWarning)
            for piece in lm.stream(args.prompt, length=args.length, temperature=args.temperature, top_k=args.top_k,
                                   top_p=args.top_p, greedy=args.greedy, seed=seed, stop=stops,
                                   repetition_penalty=args.repetition_penalty,
                                   repetition_window=args.repetition_window, no_repeat_ngram=args.no_repeat_ngram,
                                   from_start=args.from_start):
                pieces.append(piece)
                sys.stdout.write(piece)
                sys.stdout.flush()
        print(flush=True)
        for warning in caught:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
        texts.append("".join(pieces))
    if args.out:
        with reported_write_errors(Path(args.out).parent):
            write_text(Path(args.out), "\n\n".join(texts) + "\n")
    return 0


INTERACTIVE_HELP = """commands (anything else is text for the model to continue):
  /temperature T   /length N   /top-k K|off   /top-p P|off   /greedy on|off
  /reset           forget the conversation so far
  /help            this list; Ctrl-D ends"""


def interactive(lm, args: argparse.Namespace) -> int:
    """`generate -i`: read a line, let the model continue it, repeat; the state is carried throughout."""
    from rnnlab.inference.sampling import check_sampling
    from rnnlab.inference.session import Session
    session = Session(lm, seed=args.seed)
    settings = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p, "greedy": args.greedy}
    length = args.length if args.length != 500 else 200   # a turn is shorter than a whole generation
    print(f"{lm}: type text and press Enter; the model continues it. /help for commands, Ctrl-D to end.",
          file=sys.stderr, flush=True)
    if args.prompt:
        session.read(args.prompt)
    while True:
        try:
            line = input("> " if sys.stdin.isatty() else "")
        except EOFError:
            print(file=sys.stderr)
            return 0
        if line.startswith("/"):
            name, _, value = line[1:].partition(" ")
            try:
                if name == "help":
                    print(INTERACTIVE_HELP)
                elif name == "reset":
                    session.reset()
                elif name == "length":
                    length = int(value)
                    if length < 0:
                        raise ValueError
                elif name in ("temperature", "top-k", "top-p", "greedy"):
                    key, off = name.replace("-", "_"), value.strip() in ("off", "none", "")
                    changed = {**settings, key: (value.strip() in ("on", "true", "1")) if key == "greedy" else
                               None if off and key != "temperature" else (int if key == "top_k" else float)(value)}
                    check_sampling(changed["temperature"], changed["top_k"], changed["top_p"])
                    settings = changed
                else:
                    print(f"unknown command /{name}; /help lists them", file=sys.stderr)
                    continue
                print(f"({name} {value.strip()})" if value else f"({name})", file=sys.stderr)
            except (ValueError, RnnlabError) as e:
                print(f"cannot set /{name} {value}: {e if isinstance(e, RnnlabError) else 'not a valid value'}",
                      file=sys.stderr)
            continue
        session.read(line)
        for piece in session.write(length, **settings):
            sys.stdout.write(piece)
            sys.stdout.flush()
        print(flush=True)


def serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve a model over HTTP: a JSON/SSE API and a web page",
                       description="Serve MODEL at http://HOST:PORT/: a page to try it, POST /v1/generate (JSON, or "
                                   "Server-Sent Events with \"stream\": true), GET /v1/model, GET /healthz, /docs.")
    p.add_argument("model", metavar="MODEL", help="model directory")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0: any free port)")
    p.add_argument("--max-prompt-chars", type=int, default=argparse.SUPPRESS, metavar="N",
                   help="longest prompt (default: 4000)")
    p.add_argument("--max-tokens", type=int, default=argparse.SUPPRESS, metavar="N",
                   help="most tokens per request (default: 2000)")
    p.add_argument("--max-concurrent", type=int, default=argparse.SUPPRESS, metavar="N",
                   help="generations running at once; later requests wait their turn (default: 8)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch threads for the model's steps, always (default: all the cores while at most 16 "
                        "streams run, one fewer when more do, that one left to the HTTP side)")
    p.add_argument("--engine", choices=["process", "thread"], default="process",
                   help="step the streams in a process of their own (no interpreter lock shared with the HTTP side; "
                        "the model is loaded twice), or on a thread of this one (default: process)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="the engine's matrix products: bf16 is several times faster on a CPU with AMX, and gives "
                        "slightly different text for a seed (default: fp32)")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    p.set_defaults(run=serve_command)


def serve_command(args: argparse.Namespace) -> int:
    try:
        from rnnlab.inference.launch import main_serve
    except ImportError as e:
        raise RnnlabError(f"rnnlab serve needs FastAPI and uvicorn ({e.name} is missing): "
                          "pip install 'rnnlab[serve]'") from None
    limits = {k: getattr(args, k) for k in ("max_prompt_chars", "max_tokens", "max_concurrent") if hasattr(args, k)}
    return main_serve(args.model, args.host, args.port, device=args.device, threads=args.threads,
                      precision=args.precision, engine=args.engine, **limits)


PARSERS = (train_parser, evaluate_parser, score_parser, generate_parser, serve_parser)
