"""`rnnlab compare`: HMM, n-gram and RNN language models on growing prefixes of one corpus.

The textbook's claim, made runnable: an HMM is cheap and holds its own on small data; an RNN
needs data (and time) to pay off. Every model is trained on the first N tokens of the training
split for each N, and all are scored on the same validation split with the same vocabulary
(fitted once on the whole training split, so perplexities are comparable across sizes).

    rnnlab compare ptb --models hmm:64,ngram:5,rnn,lstm,gru --train-tokens 10k,100k,1M --out runs/compare
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from rnnlab.data.corpus import Corpus
from rnnlab.errors import RnnlabError
from rnnlab.files import output_dir, reported_write_errors, write_text
from rnnlab.models.registry import COMPARED

COLUMNS = ("model", "train_tokens", "valid_perplexity", "train_seconds", "parameters")

# the recipe every RNN of the comparison uses: small enough to train in minutes, with dropout and
# early stopping so that small prefixes do not simply overfit
RNN_RECIPE = dict(layers=1, hidden=256, embed_dim=256, dropout=0.3, batch_size=20, bptt=35, optimizer="adamw",
                  lr=3e-3, schedule="plateau", lr_decay=0.25, epochs=100, patience=2, clip=1.0)


def parse_models(spec: str) -> list[tuple[str, dict]]:
    """'hmm:64,ngram:5,rnn,lstm,gru' -> [(label, rnnlab.train options), ...]."""
    models = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, arg = item.partition(":")
        if name in ("hmm", "ngram") and arg and not (arg.isdigit() and int(arg) > 0):
            raise RnnlabError(f"in --models, {item!r} needs a whole number > 0 after the colon (hmm:64, ngram:5)")
        if name == "hmm":
            models.append((item, {"model": "hmm", "states": int(arg or 64)}))
        elif name == "ngram":
            models.append((item, {"model": "ngram", "order": int(arg or 5)}))
        elif name in COMPARED:
            models.append((item, {"model": "rnn", "cell": name, **RNN_RECIPE}))
        else:
            raise RnnlabError(f"unknown model {item!r} in --models; use hmm[:K], ngram[:N], rnn, lstm, gru")
    if not models:
        raise RnnlabError("--models is empty")
    return models


def parse_sizes(spec: str) -> list[int]:
    """'10k,100k,1M' -> [10000, 100000, 1000000]."""
    sizes = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmM]?)", item)
        if not match:
            raise RnnlabError(f"cannot read {item!r} in --train-tokens; use numbers like 10k, 250k, 1M")
        sizes.append(int(float(match[1]) * {"": 1, "k": 10**3, "m": 10**6}[match[2].lower()]))
    if not sizes or min(sizes) < 1:
        raise RnnlabError(f"--train-tokens needs sizes of at least 1 token, got {spec!r}")
    return sorted(set(sizes))


def prefix(text: str, tokenizer, tokens: int) -> str:
    """The shortest prefix of `text` (whole lines for word level) with at least `tokens` tokens."""
    if tokenizer.kind == "char":
        return text[:tokens]
    count, end = 0, 0
    for line in text.splitlines(keepends=True):
        count += len(tokenizer.words(line)) + 1
        end += len(line)
        if count >= tokens:
            break
    return text[:end]


def study(sources, models: str, sizes: str, out: str | Path, *, level: str | None = None,
          time_budget: float | None = 2.0, corpus_options: dict | None = None, log=None) -> list[dict]:
    """`rnnlab compare`: parse the specs, read the corpus, train and score every model on every size,
    and write compare.csv, compare.md and compare.png into `out`."""
    log = log or (lambda message: None)
    from rnnlab.data.corpus import load_corpus
    from rnnlab.studies.plots import plot_compare
    parsed_models, parsed_sizes = parse_models(models), parse_sizes(sizes)
    corpus = load_corpus(sources, **(corpus_options or {}))
    tokenizer = fixed_tokenizer(corpus, level or ("word" if corpus.pretokenized else "char"))
    out = output_dir(out)
    rows = run(corpus, tokenizer, parsed_models, parsed_sizes, out, time_budget=time_budget, log=log)
    with reported_write_errors(out):
        write_text(out / "compare.csv", to_csv(rows))
        write_text(out / "compare.md", to_markdown(rows))
        plot_compare(rows, out / "compare.png", title=f"{corpus.name}: validation perplexity")
    return rows


def run(corpus: Corpus, tokenizer, models: list[tuple[str, dict]], sizes: list[int], out: Path, *,
        time_budget: float | None = 2.0, log=None) -> list[dict]:
    """Train every model on every prefix; return rows with the COLUMNS keys."""
    log = log or (lambda message: None)
    from rnnlab.training.pipeline import train

    if not corpus.valid:
        raise RnnlabError("the comparison needs a validation split")
    total = len(tokenizer.encode(corpus.train))
    rows = []
    for size in sizes:
        if size > total:
            log(f"--train-tokens {size:,} is more than the {total:,} the training split has; using all of it")
        text = prefix(corpus.train, tokenizer, min(size, total))
        part = Corpus(corpus.name, text, corpus.valid, pretokenized=corpus.pretokenized, sources=[])  # a prefix: not re-readable from the sources
        for label, options in models:
            log(f"== {label} on {min(size, total):,} training tokens ==")
            options = {**options}
            if options["model"] == "rnn" or options["model"] == "hmm":
                options["time_budget"] = time_budget
            lm = train(part, out / "models" / f"{label.replace(':', '')}-{size}", overwrite=True,
                              tokenizer=tokenizer, progress=False, log=lambda m: None, **options)
            config = lm.config
            rows.append({"model": label, "train_tokens": config["corpus"]["train_tokens"],
                         "valid_perplexity": config["results"]["valid"]["perplexity"],
                         "train_seconds": config["train_seconds"], "parameters": lm.num_parameters()})
            log(f"   valid perplexity {rows[-1]['valid_perplexity']:.1f} in {rows[-1]['train_seconds']:.0f} s")
    return rows


def to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "valid_perplexity": f"{row['valid_perplexity']:.2f}",
                         "train_seconds": f"{row['train_seconds']:.1f}"})
    return buffer.getvalue()


def to_markdown(rows: list[dict]) -> str:
    lines = ["| model | train tokens | valid perplexity | training seconds | parameters |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['train_tokens']:,} | {r['valid_perplexity']:.1f} | {r['train_seconds']:.1f} | "
              f"{r['parameters']:,} |" for r in rows]
    return "\n".join(lines) + "\n"


def fixed_tokenizer(corpus: Corpus, level: str, max_vocab: int = 20_000):
    from rnnlab.data.tokenizers import build_tokenizer
    return build_tokenizer(level, corpus.train, max_vocab=max_vocab, pretokenized=corpus.pretokenized)

