"""A conversation with a model: `rnnlab generate MODEL -i`, or `Session(lm)` from Python.

    session = Session(rnnlab.load("runs/shakespeare"), seed=1)
    session.read("ROMEO:")
    print("".join(session.write(100, temperature=0.8)))
    session.read("\\nJULIET:")                 # continues from everything so far: nothing is read twice
    print("".join(session.write(100)))

The hidden state runs through the whole conversation, the user's text and the model's alike, as
if it were one long text: each turn costs only its own tokens, however long the conversation.
"""

from __future__ import annotations

from typing import Iterator

import torch

from rnnlab.errors import RnnlabError
from rnnlab.inference.lm import LanguageModel
from rnnlab.inference.sampling import Stepper, check_sampling, next_token
from rnnlab.models.rnnlm import evaluating
from rnnlab.options import MAX_GENERATION_SEED, check_seed


class Session:
    def __init__(self, lm: LanguageModel, *, seed: int | None = None):
        if not isinstance(lm, LanguageModel):
            raise RnnlabError(f"an interactive session needs an RNN model, not a {lm.model_type} baseline")
        check_seed(seed, maximum=MAX_GENERATION_SEED)
        self.lm = lm
        self.generator = torch.Generator().manual_seed(seed if seed is not None else torch.seed())
        self.reset()

    def reset(self) -> None:
        """Forget the conversation: the next text starts from a fresh state."""
        self.hidden, self.logits = None, None
        self.detok = self.lm.tokenizer.detokenizer()

    @torch.inference_mode()
    def read(self, text: str) -> None:
        """Run the network over `text` (one fused call), from the state the conversation has reached."""
        ids = self.lm.encode_prompt(text) if text else []
        if not ids:
            return
        for i in ids:
            self.detok(i)
        with evaluating(self.lm.net):
            logits, _, self.hidden = self.lm.net(torch.tensor([ids], device=self.lm.device), self.hidden)
        self.logits = logits[:, -1]

    @torch.inference_mode()
    def write(self, length: int, *, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
              greedy: bool = False) -> Iterator[str]:
        """Yield `length` new pieces of text, each fed back into the state as it is written."""
        check_sampling(temperature, top_k, top_p)
        if length < 0:
            raise RnnlabError(f"--length must be >= 0, got {length}")
        if self.logits is None:  # nothing read yet: start from a line's start
            self.read("\n")
        stepper = Stepper.of(self.lm.net, self.lm.precision)
        with evaluating(self.lm.net):
            for _ in range(length):
                token = next_token(self.logits, temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy,
                                   generator=self.generator)
                yield self.detok(int(token[0]))
                self.logits, self.hidden = stepper(token, self.hidden)
