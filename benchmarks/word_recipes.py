"""A word-level recipe against the Kneser-Ney 5-gram on the same text, split and tokenizer, in one run.

    python benchmarks/word_recipes.py ../shared/data/tinyshakespeare/input.txt            # --preset word-5min
    python benchmarks/word_recipes.py pydocs --preset word-5min --time-budget 5
    python benchmarks/word_recipes.py pydocs --set precision=bf16 --set lr=0.02     # the preset, changed

Prints the machine, both validation perplexities and their ratio (issue 15's target for word-5min:
the RNN at least 15% below the 5-gram, a ratio <= 0.85). Run it on a quiet machine: the budget is
wall-clock time.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time

import rnnlab
from shakespeare_char import parse_overrides   # benchmarks/ is on sys.path when run as a script


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus", help="a file, folder or named corpus (pydocs)")
    parser.add_argument("--preset", default="word-5min")
    parser.add_argument("--time-budget", type=float, default=None, help="minutes (default: the preset's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an option of rnnlab.train over the preset's, e.g. precision=bf16 (repeatable)")
    args = parser.parse_args()
    changes = parse_overrides(args.set)
    print(f"machine: {cpu_name()}; corpus {args.corpus}; --preset {args.preset} {changes or ''}")
    quiet = dict(progress=False, log=lambda message: None)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        ngram = rnnlab.train(args.corpus, f"{tmp}/ngram", level="word", model="ngram", order=5, **quiet)
        ngram_seconds = time.perf_counter() - start
        options = changes if args.time_budget is None else {**changes, "time_budget": args.time_budget}
        start = time.perf_counter()
        rnn = rnnlab.train(args.corpus, f"{tmp}/rnn", preset=args.preset, **options, **quiet)
        rnn_seconds = time.perf_counter() - start
    corpus = rnn.config["corpus"]
    ngram_ppl = ngram.config["results"]["valid"]["perplexity"]
    rnn_ppl = rnn.config["results"]["valid"]["perplexity"]
    print(f"tokens: train {corpus['train_tokens']:,}, valid {corpus['valid_tokens']:,}; "
          f"vocabulary {rnn.tokenizer.vocab_size:,}")
    print(f"Kneser-Ney 5-gram: valid perplexity {ngram_ppl:.1f} ({ngram_seconds:.0f} s)")
    print(f"RNN ({rnn}, {rnn.config.get('steps')} steps): valid perplexity {rnn_ppl:.1f} ({rnn_seconds:.0f} s)")
    print(f"ratio RNN / 5-gram: {rnn_ppl / ngram_ppl:.3f} (target <= 0.85)")


if __name__ == "__main__":
    main()
