"""One stream's token step: the eager Stepper against torch.compile of it, and 1 against 2 torch threads.

    .venv/bin/python benchmarks/step_compile.py

A char LSTM (65 symbols, random weights: speed does not depend on training), 2000 tokens of
`Stepper.step` + `next_token`, each measurement twice. First 2x256, eager and compiled (the compile
time is printed); then 2x256 and 2x384, eager, with 1 and 2 threads. Results: benchmarks/RESULTS.md,
"Serving many writers at once".
"""

from __future__ import annotations

import time

import torch

from rnnlab.inference.sampling import Stepper, next_token
from rnnlab.models.config import ModelConfig
from rnnlab.models.rnnlm import RNNLM


def tokens_per_second(stepper: Stepper, step, hidden: int, n: int = 2000) -> float:
    generator = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        state = stepper.begin((torch.zeros(2, 1, hidden), torch.zeros(2, 1, hidden)))
        token = torch.tensor([1])
        started = time.perf_counter()
        for _ in range(n):
            logits, state = step(token, state)
            token = next_token(logits, generator=generator)
        return n / (time.perf_counter() - started)


def model(hidden: int) -> Stepper:
    torch.manual_seed(0)
    return Stepper(RNNLM(ModelConfig(vocab_size=65, cell="lstm", hidden=hidden, layers=2, embed_dim=64)).eval())


def main() -> None:
    stepper = model(256)
    eager = [tokens_per_second(stepper, stepper.step, 256) for _ in range(2)]
    started = time.perf_counter()
    compiled = torch.compile(stepper.step, dynamic=False)
    tokens_per_second(stepper, compiled, 256, n=2)  # the compile happens on the first call
    print(f"compile: {time.perf_counter() - started:.1f} s")
    compiled_rates = [tokens_per_second(stepper, compiled, 256) for _ in range(2)]
    print("2x256 eager:    " + ", ".join(f"{r:,.0f}" for r in eager) + " tok/s")
    print("2x256 compiled: " + ", ".join(f"{r:,.0f}" for r in compiled_rates) + " tok/s")
    for hidden in (256, 384):
        stepper = model(hidden)
        for threads in (2, 1, 2, 1):
            torch.set_num_threads(threads)
            print(f"2x{hidden} eager, {threads} thread(s): {tokens_per_second(stepper, stepper.step, hidden):,.0f} tok/s")


if __name__ == "__main__":
    main()
