"""`LanguageModel`: a trained network with its tokenizer; what `rnnlab.load` and `rnnlab.train` return.

`TextModel` is what every model directory loads as — an RNN, or one of the baselines in
`inference/baseline_models.py` (HMM, Kneser-Ney n-gram): a tokenizer plus two abilities, scoring a token stream
and continuing one. Prompts, sampling options, streaming text and evaluation are written once,
here, on top of those two.

    lm = rnnlab.load("runs/shakespeare")
    print(lm.generate("ROMEO:", length=300, temperature=0.8, seed=1))
    print(lm.evaluate(open("valid.txt").read()))
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from rnnlab.errors import RnnlabError, RnnlabWarning
from rnnlab.inference.metrics import stream_loss, summarize, token_log_probs
from rnnlab.inference.sampling import Repetition, check_repetition, check_sampling, sample_ids
from rnnlab.options import MAX_GENERATION_SEED, check_seed
from rnnlab.models.rnnlm import RNNLM
from rnnlab.data.tokenizers import END_OF_DOCUMENT, EOD, EOS, UNK


MAX_PROMPT_TOKENS = 10_000  # an RNN reads any length, but a pasted book as a prompt is a mistake


class TextModel:
    """A tokenizer and a model that can score and continue token streams."""

    model_type = "?"

    def __init__(self, tokenizer, config: dict, path: Path | None = None):
        self.tokenizer = tokenizer
        self.config = config
        self.path = path

    # what a model provides -----------------------------------------------------------------------

    def continue_ids(self, ids: list[int], steps: int, *, generator: torch.Generator,
                     **sampling) -> Iterator[int]:
        """Yield `steps` new token ids after `ids`, sampled with `sampling.next_token` options."""
        raise NotImplementedError

    def stream_loss(self, ids) -> tuple[float, int]:
        """Mean nats per predicted token over the stream (each token after the first), and the count."""
        raise NotImplementedError

    def token_log_probs(self, ids) -> np.ndarray:
        """(n - 1,) natural-log p(x_t | x_1..x_{t-1}) for each token after the first."""
        raise NotImplementedError

    def num_parameters(self) -> int:
        raise NotImplementedError

    # text in -------------------------------------------------------------------------------------

    def encode_prompt(self, prompt: str) -> list[int]:
        """Prompt text -> ids, without the <eos> a final line would get; warns about unknown words."""
        ids = self.tokenizer.encode(prompt).tolist()
        if self.tokenizer.kind == "word" and ids and not prompt.endswith("\n"):
            ids = ids[:-1]
        unknown = self.tokenizer.unknown(prompt)
        if unknown:
            shown = ", ".join(repr(w) for w in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            warnings.warn(f"{len(unknown)} prompt {'word' if self.tokenizer.kind == 'word' else 'character'}"
                          f"{'s' if len(unknown) > 1 else ''} not in the vocabulary, read as {UNK}: {shown}",
                          RnnlabWarning, stacklevel=3)
        if len(ids) > MAX_PROMPT_TOKENS:
            warnings.warn(f"the prompt has {len(ids)} tokens; keeping the last {MAX_PROMPT_TOKENS}",
                          RnnlabWarning, stacklevel=3)
            ids = ids[-MAX_PROMPT_TOKENS:]
        return ids

    # text out ------------------------------------------------------------------------------------

    def stream(self, prompt: str | None = None, *, length: int = 200, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None, greedy: bool = False,
               seed: int | None = None, stop: str | list[str] | tuple[str, ...] = (),
               repetition_penalty: float = 1.0, repetition_window: int = 64,
               no_repeat_ngram: int = 0, from_start: bool = False) -> Iterator[str]:
        """Yield the text piece by piece: first the prompt (or the random start word), then each new token.

        `stop`: generation ends before the first of these strings would appear in the new text (the
        string itself is not yielded). `repetition_penalty`, `repetition_window` and
        `no_repeat_ngram` steer away from loops (`sampling.Repetition`). A model trained on many files
        stops at the end of a document; `from_start` starts at the beginning of one (the prompt, if
        any, is then a document's first words)."""
        check_sampling(temperature, top_k, top_p)
        check_seed(seed, maximum=MAX_GENERATION_SEED)
        check_repetition(repetition_penalty, repetition_window, no_repeat_ngram)
        stops = [stop] if isinstance(stop, str) else list(stop)
        if any(not isinstance(s, str) or not s for s in stops):
            raise RnnlabError("--stop needs a non-empty string")
        if length < 0:
            raise RnnlabError(f"--length must be >= 0, got {length}")
        generator = torch.Generator().manual_seed(seed if seed is not None else torch.seed())
        detok = self.tokenizer.detokenizer()
        document = getattr(self.tokenizer, "doc_id", None)
        if document is not None:
            stops = [*stops, END_OF_DOCUMENT]     # past a document's end is another document
        ids, first = self.start(prompt, generator, detok, from_start=from_start)
        yield first
        repetition = Repetition(ids, penalty=repetition_penalty, window=repetition_window,
                                no_repeat_ngram=no_repeat_ngram)
        pieces = (detok(token) for token in self.continue_ids(
            ids, length, temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy, generator=generator,
            repetition=repetition if repetition.active else None))
        yield from until_stop(pieces, stops) if stops else pieces

    def start(self, prompt: str | None, generator: torch.Generator, detok, *,
              from_start: bool = False) -> tuple[list[int], str]:
        """The ids generation continues from, and the text they stand for: the prompt's, or without one
        a random vocabulary word (drawn with `generator`, as the textbook's generator does); with
        `from_start`, after an end-of-document marker. `detok` is brought up to their end."""
        ids = self.encode_prompt(prompt) if prompt else []
        if from_start:
            document = getattr(self.tokenizer, "doc_id", None)
            if document is None:
                raise RnnlabError("--from-start needs a model trained on several files (this one has no "
                                  "end-of-document marker)")
            ids = [document, *ids]
        elif not ids:
            unknown = getattr(self.tokenizer, "unknown_ids", ())
            choices = [i for i, tok in enumerate(self.tokenizer.vocab)
                       if tok not in (UNK, EOS, EOD, END_OF_DOCUMENT) and i not in unknown]
            ids = [choices[int(torch.randint(len(choices), (1,), generator=generator))]]
            return ids, detok(ids[0]).lstrip(" ")
        for i in ids:
            detok(i)  # the detokenizer's spacing state at the prompt's end
        return ids, prompt or ""

    def generate(self, prompt: str | None = None, *, beam: int | None = None, length_penalty: float = 1.0,
                 **options) -> str:
        """The prompt and `length` new tokens as one string; options as in `stream`. With `beam=N`, the
        most likely continuation by beam search instead (`LanguageModel.beam`; `length` is its only option)."""
        if beam is None:
            return "".join(self.stream(prompt, **options))
        if not hasattr(self, "beam"):
            raise RnnlabError(f"beam search needs an RNN model, not a {self.model_type} baseline")
        if set(options) - {"length"}:
            raise RnnlabError(f"beam search takes no sampling options ({', '.join(sorted(set(options) - {'length'}))})")
        return self.beam(prompt, width=beam, length_penalty=length_penalty, **options)

    # measuring -----------------------------------------------------------------------------------

    def evaluate(self, text: str, *, dynamic: dict | None = None) -> dict:
        """loss, perplexity, bits_per_token and tokens on `text`, reading it as one stream. With `dynamic`
        ({"lr", "decay", "segment"}), by dynamic evaluation instead: the model adapts as it reads
        (inference/dynamic.py; an RNN only)."""
        if dynamic is None:
            return summarize(*self.stream_loss(self.tokenizer.encode(text)))
        if not hasattr(self, "net"):
            raise RnnlabError(f"dynamic evaluation adapts an RNN by gradient steps; a {self.model_type} baseline "
                              f"has none")
        from rnnlab.inference.dynamic import dynamic_stream_loss
        return summarize(*dynamic_stream_loss(self.net, self.tokenizer.encode(text), device=self.device, **dynamic))

    def score(self, text: str) -> dict:
        """`evaluate`'s numbers plus each token's log-probability and surprisal, and each line's perplexity
        (`inference/scoring.py`)."""
        from rnnlab.inference.scoring import score
        return score(self, text)


def held_back(held: str, stops: list[str]) -> int:
    """How many characters at the end of `held` must wait: the longest end that begins a stop string."""
    return max((k for s in stops for k in range(1, min(len(s), len(held) + 1)) if held.endswith(s[:k])), default=0)


def until_stop(pieces: Iterator[str], stops: list[str]) -> Iterator[str]:
    """The pieces, up to (not including) the first stop string in their concatenation. A piece that
    could be the start of a stop string is held back until the next shows whether it is."""
    held = ""
    for piece in pieces:
        held += piece
        found = [i for i in (held.find(s) for s in stops) if i >= 0]
        if found:
            if min(found):
                yield held[:min(found)]
            return
        keep = held_back(held, stops)
        if len(held) > keep:
            yield held[:len(held) - keep]
            held = held[len(held) - keep:]
    if held:
        yield held


class LanguageModel(TextModel):
    """A recurrent network (`RNNLM`) with its tokenizer."""

    model_type = "rnn"

    def __init__(self, net: RNNLM, tokenizer, config: dict, path: Path | None = None):
        super().__init__(tokenizer, config, path)
        self.net = net
        # the matrix products of generation's one-token steps: "bf16" is several times faster on a CPU with AMX
        # (rnnlab generate/serve --precision; scores are computed in float32 either way)
        self.precision = "fp32"
        self.compiled = False  # plain sampling in torch.compile'd blocks (rnnlab generate --compile; blocks.py)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: str | torch.device) -> LanguageModel:
        self.net.to(device)
        return self

    def __repr__(self) -> str:
        m = self.net.config
        return (f"LanguageModel({m.layers}x{m.hidden} {m.cell}, {self.tokenizer.kind} level, "
                f"vocab {self.tokenizer.vocab_size}, {self.net.num_parameters():,} parameters)")

    def num_parameters(self) -> int:
        return self.net.num_parameters()

    def continue_ids(self, ids, steps, *, generator, **sampling):
        prompt = torch.tensor([ids], dtype=torch.long, device=self.device)
        for token in sample_ids(self.net, prompt, steps, generator=generator, precision=self.precision,
                                compiled=self.compiled, **sampling):
            yield int(token[0])

    def stream_loss(self, ids, batch_size: int = 1):
        return stream_loss(self.net, ids, batch_size=batch_size, device=self.device)

    def token_log_probs(self, ids):
        return token_log_probs(self.net, ids, device=self.device)

    def beam(self, prompt: str | None = None, *, length: int = 50, width: int = 4,
             length_penalty: float = 1.0) -> str:
        """The prompt and its most likely continuation by beam search (`inference/beam.py`): at most
        `length` tokens, ending early at a line end (<eos> for a word model, a newline for a char model)."""
        from rnnlab.inference.beam import beam_search, check_beam
        check_beam(width, length_penalty)
        if length < 0:
            raise RnnlabError(f"--length must be >= 0, got {length}")
        detok = self.tokenizer.detokenizer()
        ids = (self.encode_prompt(prompt) if prompt else []) or [self.tokenizer.eos_id or 0]  # none: a line's start
        for i in ids:
            detok(i)  # the detokenizer's spacing state at the prompt's end
        tokens = beam_search(self.net, ids, length, width=width, length_penalty=length_penalty,
                             eos_id=self.tokenizer.eos_id)
        return (prompt or "") + "".join(detok(t) for t in tokens)
