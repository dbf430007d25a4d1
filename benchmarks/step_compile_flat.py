"""One stream's token step as one flat function of tensors, eager against torch.compile (issue 16's 2x target).

    .venv/bin/python benchmarks/step_compile_flat.py [--threads 2] [--wrapper python|cpp]

A 2x256 char LSTM (65 symbols, random weights: speed does not depend on training). First, eager: the
Stepper with sampling, the Stepper alone, and the flat step (table lookup, an `addmm` and the gate
arithmetic per layer, the decoder, Gumbel-max) with the noise drawn each step or for 64 steps at once.
Then the flat step compiled (fullgraph, static shapes; `--wrapper cpp` = inductor's C++ wrapper, meant
to cut per-call overhead). Tokens/s, twice each, in the same process. Results: benchmarks/RESULTS.md,
"Single-stream speed".
"""

from __future__ import annotations

import argparse
import time

import torch

from rnnlab.inference.sampling import Stepper, next_token
from rnnlab.models.config import ModelConfig
from rnnlab.models.rnnlm import RNNLM

H, V, BLOCK = 256, 65, 64


def tokens_per_second(run, n: int = 3000) -> float:
    with torch.inference_mode():
        run(50)
        started = time.perf_counter()
        run(n)
        return n / (time.perf_counter() - started)


def flat_weights(net: RNNLM) -> dict:
    rnn = net.rnn
    with torch.no_grad():
        return {"table": torch.addmm(rnn.bias_ih_l0 + rnn.bias_hh_l0, net.encoder.weight, rnn.weight_ih_l0.t()),
                "w_hh0": rnn.weight_hh_l0.t().contiguous(),
                "w1": torch.cat([rnn.weight_ih_l1, rnn.weight_hh_l1], 1).t().contiguous(),
                "b1": rnn.bias_ih_l1 + rnn.bias_hh_l1,
                "w_out": net.decoder.weight.t().contiguous(), "b_out": net.decoder.bias.detach()}


def make_flat_step(w: dict):
    def cell(gates, c):
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def step(token, h0, c0, h1, c1, noise):
        h0, c0 = cell(torch.addmm(w["table"][token], h0, w["w_hh0"]), c0)
        h1, c1 = cell(torch.addmm(w["b1"], torch.cat([h0, h1], 1), w["w1"]), c1)
        logits = torch.addmm(w["b_out"], h1, w["w_out"])
        return (logits - noise.log()).argmax(-1), h0, c0, h1, c1   # Gumbel-max, exponential form
    return step


def flat_loop(step, noise_block: int):
    def run(n: int) -> None:
        generator = torch.Generator().manual_seed(1)
        zero = torch.zeros(1, H)
        token, state = torch.tensor([1]), (zero, zero, zero, zero)
        for i in range(n):
            if i % noise_block == 0:
                noise = torch.empty(noise_block, 1, V).exponential_(generator=generator)
            token, *state = step(token, *state, noise[i % noise_block])
    return run


def stepper_loop(stepper: Stepper, sample: bool):
    def run(n: int) -> None:
        generator = torch.Generator().manual_seed(1)
        state, token = stepper.begin((torch.zeros(2, 1, H), torch.zeros(2, 1, H))), torch.tensor([1])
        for _ in range(n):
            logits, state = stepper.step(token, state)
            if sample:
                token = next_token(logits, generator=generator)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--wrapper", choices=("python", "cpp"), default="python")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = RNNLM(ModelConfig(vocab_size=V, cell="lstm", hidden=H, layers=2, embed_dim=64)).eval()
    stepper, step = Stepper(net), make_flat_step(flat_weights(net))
    print(f"{args.threads} thread(s), torch {torch.__version__}")
    for _ in range(2):
        print(f"eager: Stepper + sampling {tokens_per_second(stepper_loop(stepper, True)):,.0f} | Stepper alone "
              f"{tokens_per_second(stepper_loop(stepper, False)):,.0f} | flat {tokens_per_second(flat_loop(step, 1)):,.0f}"
              f" | flat, noise for {BLOCK} steps {tokens_per_second(flat_loop(step, BLOCK)):,.0f} tok/s")
    import torch._inductor.config as inductor_config
    inductor_config.cpp_wrapper = args.wrapper == "cpp"
    started = time.perf_counter()
    compiled = torch.compile(step, fullgraph=True, dynamic=False)
    tokens_per_second(flat_loop(compiled, 1), n=3)   # the compile happens on the first call
    print(f"compile ({args.wrapper} wrapper): {time.perf_counter() - started:.1f} s")
    for _ in range(2):
        print(f"compiled: flat {tokens_per_second(flat_loop(compiled, 1)):,.0f} | flat, noise for {BLOCK} steps "
              f"{tokens_per_second(flat_loop(compiled, BLOCK)):,.0f} tok/s")


if __name__ == "__main__":
    main()
