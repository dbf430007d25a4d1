"""`rnnlab corpora`, `download`, `info`, `neighbors` and `embeddings`: corpora, model cards and input vectors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rnnlab.errors import RnnlabError


def corpora_parser(sub) -> None:
    p = sub.add_parser("corpora", help="list the built-in and named corpora and where they are cached")
    p.set_defaults(run=corpora_command)


def corpora_command(args: argparse.Namespace) -> int:
    from rnnlab.data.corpus import NAMED, cache_dir
    print(f"cache: {cache_dir()}  (set RNNLAB_CACHE to move it)")
    print(f"  {'pydocs':<16} built in: English docstrings of this Python's standard library (~1 MB)")
    for name, spec in NAMED.items():
        cached = all((cache_dir() / f.path).is_file() for f in spec.files)
        print(f"  {name:<16} {'cached' if cached else 'downloads on first use'}: {spec.description}")
    return 0


def download_parser(sub) -> None:
    p = sub.add_parser("download", help="download named corpora into the cache now")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(run=download_command)


def download_command(args: argparse.Namespace) -> int:
    from rnnlab.data.corpus import NAMED, fetch
    for name in args.names:
        if name not in NAMED:
            raise RnnlabError(f"unknown corpus {name!r}; named corpora: {', '.join(NAMED)}")
        for remote in NAMED[name].files:
            print(fetch(remote))
    return 0


def info_parser(sub) -> None:
    p = sub.add_parser("info", help="show a model directory's card: config and results")
    p.add_argument("model", metavar="MODEL")
    p.set_defaults(run=info_command)


def info_command(args: argparse.Namespace) -> int:
    from rnnlab.models.checkpoint import CARD, read_config
    config = read_config(Path(args.model))
    card = Path(args.model) / CARD
    # a README.md that is a link is not the model's card: it could point anywhere (/etc/shadow, say)
    readable = card.is_file() and not card.is_symlink()
    print(card.read_text(encoding="utf-8") if readable else json.dumps(config, indent=2))
    return 0


def neighbors_parser(sub) -> None:
    p = sub.add_parser("neighbors", help="nearest words to WORD in a model's input embedding")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("word", metavar="WORD")
    p.add_argument("-k", type=int, default=10, help="how many (default: 10)")
    p.set_defaults(run=neighbors_command)


def neighbors_command(args: argparse.Namespace) -> int:
    from rnnlab.models.embeddings import nearest
    lm = _embedding_table(args.model)
    for word, similarity in nearest(lm.net.encoder.weight, lm.tokenizer.vocab, args.word, args.k):
        print(f"{similarity:7.3f}  {word}")
    return 0


def embeddings_parser(sub) -> None:
    p = sub.add_parser("embeddings", help="export a model's input embedding as a word2vec text file")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--out", metavar="FILE", required=True)
    p.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    p.set_defaults(run=embeddings_command)


def embeddings_command(args: argparse.Namespace) -> int:
    from rnnlab.files import output_file, reported_write_errors
    from rnnlab.models.embeddings import export
    output_file(args.out, overwrite=args.overwrite)
    lm = _embedding_table(args.model)
    if lm.tokenizer.kind == "char":
        raise RnnlabError("a char-level vocabulary has whitespace tokens, which word2vec text files cannot hold")
    with reported_write_errors(Path(args.out).parent):
        export(lm.net.encoder.weight, lm.tokenizer.vocab, args.out)
    print(f"wrote {lm.tokenizer.vocab_size:,} vectors of {lm.net.encoder.weight.size(1)} dimensions to {args.out}")
    return 0


def export_parser(sub) -> None:
    p = sub.add_parser("export", help="export a model to run without PyTorch (ONNX)",
                       description="Export MODEL's network for one token, (token, state) -> (logits, state), as an "
                                   "ONNX graph, with its tokenizer, a plain-Python generation loop on onnxruntime "
                                   "and a README, into a new folder DIR.")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="onnx (the only one so far)")
    p.add_argument("--out", metavar="DIR", required=True, help="a new or empty folder")
    p.set_defaults(run=export_command)


def export_command(args: argparse.Namespace) -> int:
    from rnnlab.files import reported_write_errors
    from rnnlab.inference.export import export_onnx, exportable
    from rnnlab.inference.loading import load
    lm = load(args.model)
    exportable(lm)
    with reported_write_errors(Path(args.out)):
        out = export_onnx(lm, args.out)
    print(f"wrote {out / 'model.onnx'}, tokenizer.json, export.json, generate.py and README.md; try:\n"
          f"  python {out / 'generate.py'} --length 200")
    return 0


def _embedding_table(path: str):
    from rnnlab.inference.loading import load
    lm = load(path)
    if getattr(lm, "net", None) is None or lm.net.config.input != "learned":
        raise RnnlabError(f"{path} has no learned input embedding (one-hot input or a baseline model)")
    return lm


PARSERS = (corpora_parser, download_parser, info_parser, neighbors_parser, embeddings_parser, export_parser)
