"""The batched generation engine: many streams of one RNN stepped together, each as if it ran alone."""

from __future__ import annotations

import itertools
import threading

import pytest

import rnnlab
from rnnlab.errors import RnnlabError
from rnnlab.inference.engine import Engine


@pytest.fixture(scope="session")  # session: xdist may interleave modules
def lm(tiny_model):
    return rnnlab.load(tiny_model)


def text_of(lm, prompt: str, stream) -> str:
    return prompt + lm.tokenizer.decode(list(stream))


def test_a_stream_writes_what_generate_writes(lm):
    engine = Engine(lm, max_batch=4)
    try:
        for seed, options in ((1, dict(temperature=0.8)), (2, dict(top_k=5)), (3, dict(top_p=0.9)), (4, {})):
            stream = engine.submit(lm.encode_prompt("ROMEO:"), length=80, seed=seed, **options)
            assert text_of(lm, "ROMEO:", stream) == lm.generate("ROMEO:", length=80, seed=seed, **options)
    finally:
        engine.close()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_same_request_gives_the_same_text_whatever_runs_beside_it(tiny_model, precision):
    lm = rnnlab.load(tiny_model, precision=precision)
    alone = lm.generate("JULIET:", length=150, seed=7, temperature=0.9)
    engine = Engine(lm, max_batch=16)
    results: dict[int, str] = {}

    def client(i: int) -> None:
        if i % 3 == 0:  # the probe request, again and again, among others with their own seeds and settings
            results[i] = text_of(lm, "JULIET:", engine.submit(lm.encode_prompt("JULIET:"), length=150, seed=7,
                                                              temperature=0.9))
        else:
            results[i] = text_of(lm, "ROMEO:", engine.submit(lm.encode_prompt("ROMEO:"), length=50 + 7 * i,
                                                             seed=i, top_k=3 + i))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(18)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    engine.close()
    assert engine.largest_batch > 1                                     # they did share batches
    assert [results[i] for i in range(0, 18, 3)] == [alone] * 6
    assert len({results[i] for i in range(18) if i % 3}) == 12          # the others are their own


def test_the_engine_steps_on_its_own_threads_and_on_its_busy_count_while_many_streams_run(lm, monkeypatch):
    import time

    import torch

    from rnnlab.inference import engine as engine_module
    monkeypatch.setattr(engine_module, "BUSY_BATCH", 2)
    monkeypatch.setattr(engine_module, "CALM_SECONDS", 0.5)
    before = torch.get_num_threads()
    engine = Engine(lm, max_batch=8, threads=2, busy_threads=1)
    try:
        first = iter(engine.submit(lm.encode_prompt("ROMEO:"), length=10**6, seed=1))
        next(first)
        assert engine.threads_now == 2
        others = [engine.submit(lm.encode_prompt("ROMEO:"), length=10**6, seed=s) for s in (2, 3)]
        for stream in others:
            next(iter(stream))
        assert engine.threads_now == 1            # three streams: past the busy batch
        assert torch.get_num_threads() == before  # the caller's thread keeps its own count
        for stream in others:
            stream.cancel()
        next(first)
        assert engine.threads_now == 1            # one stream again, but not yet for CALM_SECONDS
        deadline = time.monotonic() + 30
        while engine.threads_now != 2 and time.monotonic() < deadline:
            next(first)
        assert engine.threads_now == 2
    finally:
        engine.close()
    with pytest.raises(RnnlabError, match="--threads must be at least 1"):
        Engine(lm, threads=0)


def test_a_failed_warm_up_costs_only_the_head_start(lm, monkeypatch):
    from rnnlab.inference import engine as engine_module
    made = engine_module.block_stepper

    def failing_first(stepper):
        block, calls = made(stepper), []

        def run(*args):
            calls.append(1)
            if len(calls) == 1:  # the warm-up's first call
                raise RuntimeError("no head start today")
            return block(*args)
        return run
    monkeypatch.setattr(engine_module, "block_stepper", failing_first)
    engine = Engine(lm, max_batch=4)
    try:
        stream = engine.submit(lm.encode_prompt("ROMEO:"), length=60, seed=3)
        assert text_of(lm, "ROMEO:", stream) == lm.generate("ROMEO:", length=60, seed=3)
    finally:
        engine.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread ends with its error
def test_an_engine_whose_thread_has_died_refuses_requests_instead_of_keeping_them(lm, monkeypatch):
    from rnnlab.inference import engine as engine_module

    def broken(net, precision="fp32"):
        raise RuntimeError("no stepper today")
    monkeypatch.setattr(engine_module.Stepper, "of", broken)
    engine = Engine(lm, max_batch=4)  # returns once its thread has ended
    with pytest.raises(RnnlabError, match="the generation engine has stopped"):
        engine.submit(lm.encode_prompt("ROMEO:"), length=10, seed=1)
    engine.close()


def test_plain_streams_step_in_blocks_and_each_writes_what_it_writes_alone(lm, monkeypatch):
    """With every stream sampling plainly, the engine takes several steps a call (blocks.py): streams joining,
    reading their prompts and ending inside a block still write exactly what lm.generate writes."""
    blocks = []
    real = Engine._step_block
    monkeypatch.setattr(Engine, "_step_block", lambda self, block, steps, *rest: (blocks.append(steps),
                                                                                   real(self, block, steps, *rest))[1])
    prompts = ["ROMEO:", "A", "JULIET: Good", "Wh"]
    requests = [(prompts[i % 4], 30 + 11 * i, i, 0.6 + 0.1 * i) for i in range(10)]   # prompt, length, seed, T
    engine = Engine(lm, max_batch=6)
    results: dict[int, str] = {}

    def client(i: int) -> None:
        prompt, length, seed, temperature = requests[i]
        results[i] = text_of(lm, prompt, engine.submit(lm.encode_prompt(prompt), length=length, seed=seed,
                                                       temperature=temperature))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(10)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        engine.close()
    assert blocks and max(blocks) > 1 and engine.largest_batch > 1              # blocks were taken, streams shared them
    assert [results[i] for i in range(10)] == [lm.generate(p, length=n, seed=s, temperature=t) for p, n, s, t in requests]


def test_penalties_and_logprobs_are_applied_though_they_keep_the_batch_out_of_blocks(lm):
    """A stream with penalties or logprobs needs its logits each step: the batch it is in steps one at a time."""
    engine = Engine(lm, max_batch=4)
    try:
        with engine.wake:  # each beside a plain stream, in one batch
            plain = engine.submit(lm.encode_prompt("ROMEO:"), length=120, seed=1)
            penalised = engine.submit(lm.encode_prompt("ROMEO:"), length=120, seed=1, frequency_penalty=2.0)
        plain_text, penalised_text = text_of(lm, "", plain), text_of(lm, "", penalised)
        with engine.wake:
            engine.submit(lm.encode_prompt("ROMEO:"), length=60, seed=2)
            scored = engine.submit(lm.encode_prompt("ROMEO:"), length=30, seed=3, logprobs=2)
        items = list(scored)
    finally:
        engine.close()
    assert plain_text == lm.generate("ROMEO:", length=120, seed=1)[len("ROMEO:"):]
    assert penalised_text != plain_text                                  # the same seed, penalised: another text
    assert max(penalised_text.count(c) for c in set(penalised_text)) < max(plain_text.count(c) for c in set(plain_text))
    assert len(items) == 30 and all(len(alternatives) == 2 and logprob <= 0 for _, logprob, alternatives in items)


def test_prompts_admitted_together_are_read_together_and_each_stream_writes_what_it_writes_alone(lm, monkeypatch):
    from rnnlab.inference import sampling
    calls = []
    real = sampling.Stepper.prefill
    monkeypatch.setattr(sampling.Stepper, "prefill", lambda self, prompts: (calls.append(len(prompts)),
                                                                            real(self, prompts))[1])
    # the long ones in one packed call; the short ones (<= 16 tokens) fed through the batch's own steps
    prompts = ["ROMEO: speak again, bright angel", "A", "JULIET: Good night, good night!", "To be, or not to be", "Wh"]
    engine = Engine(lm, max_batch=8)
    try:
        with engine.wake:  # the worker waits for this lock: all five are waiting when it next looks
            streams = [engine.submit(lm.encode_prompt(p), length=60, seed=i, temperature=0.9)
                       for i, p in enumerate(prompts)]
        texts = [text_of(lm, p, s) for p, s in zip(prompts, streams)]
    finally:
        engine.close()
    assert calls == [3]
    assert texts == [lm.generate(p, length=60, seed=i, temperature=0.9) for i, p in enumerate(prompts)]


def test_in_bf16_a_stream_still_writes_what_generate_writes(tiny_model):
    lm = rnnlab.load(tiny_model, precision="bf16")
    engine = Engine(lm, max_batch=4)
    try:
        streams = [engine.submit(lm.encode_prompt("ROMEO:"), length=80, seed=seed) for seed in range(3)]
        texts = [text_of(lm, "ROMEO:", stream) for stream in streams]
    finally:
        engine.close()
    from rnnlab.inference.sampling import _SHARED
    assert list(_SHARED[lm.net]) == ["bf16"]                           # the engine stepped with the bf16 stepper
    assert texts == [lm.generate("ROMEO:", length=80, seed=seed) for seed in range(3)]


def test_at_most_max_batch_streams_step_together_and_the_rest_wait_in_order(lm):
    engine = Engine(lm, max_batch=2)
    prompt = lm.encode_prompt("A")
    streams = [engine.submit(prompt, length=10, seed=i) for i in range(5)]
    outputs = [list(s) for s in streams]
    engine.close()
    assert [len(o) for o in outputs] == [10] * 5
    assert engine.largest_batch == 2 and engine.steps >= 25             # 5 x 10 tokens, 2 at a time


def test_a_cancelled_stream_leaves_the_batch_and_the_others_go_on(lm):
    engine = Engine(lm, max_batch=4)
    prompt = lm.encode_prompt("A")
    long = engine.submit(prompt, length=1_000_000, seed=1)
    short = engine.submit(prompt, length=30, seed=2)
    first = list(itertools.islice(iter(long), 5))
    long.cancel()
    rest = list(long)                                                   # ends: the reader hung up
    assert len(first) == 5 and len(rest) < 1_000
    assert len(list(short)) == 30
    engine.close()


def test_bad_requests_are_refused_in_one_line(lm, tmp_path):
    engine = Engine(lm)
    try:
        for kwargs, message in ((dict(prompt=[], length=5, seed=1), "at least one prompt token"),
                                (dict(prompt=[1], length=-1, seed=1), "--length must be >= 0"),
                                (dict(prompt=[1], length=5, seed=-1), "--seed must be"),
                                (dict(prompt=[1], length=5, seed=1, temperature=0), "--temperature must be > 0")):
            with pytest.raises(RnnlabError, match=message):
                engine.submit(**kwargs)
    finally:
        engine.close()
    with pytest.raises(RnnlabError, match="--max-batch must be at least 1"):
        Engine(lm, max_batch=0)
    from conftest import QUIET, shakespeare
    from rnnlab.data.corpus import Corpus
    ngram = rnnlab.train(Corpus("s", shakespeare(5000), shakespeare(5000)), tmp_path / "ng", model="ngram", **QUIET)
    with pytest.raises(RnnlabError, match="baseline is served one by one"):
        Engine(ngram)


def test_a_request_that_fails_fails_alone_and_the_engine_goes_on(lm):
    engine = Engine(lm, max_batch=4)
    try:
        bad = engine.submit([lm.tokenizer.vocab_size + 5], length=10, seed=1)   # no such token: prefill raises
        good = engine.submit(lm.encode_prompt("A"), length=10, seed=2)
        with pytest.raises(IndexError):
            list(bad)
        assert bad.take() is None                                             # the end stays the end
        assert len(list(good)) == 10
        assert len(list(engine.submit(lm.encode_prompt("B"), length=5, seed=3))) == 5
    finally:
        engine.close()
    with pytest.raises(RnnlabError, match="engine has stopped"):
        engine.submit([1], length=1, seed=1)


def test_readers_on_an_event_loop_get_the_same_tokens_at_most_every_interval(lm):
    import asyncio
    import time

    async def read(stream, every: float) -> tuple[list[list[int]], float]:
        batches, started = [], time.monotonic()
        while (tokens := await stream.next_tokens(every=every)) is not None:
            batches.append(tokens)
        return batches, time.monotonic() - started

    async def main(engine):  # 8 streams read at once on one loop, no thread per reader
        prompt = lm.encode_prompt("ROMEO:")
        streams = [engine.submit(prompt, length=300, seed=seed) for seed in range(8)]
        return await asyncio.gather(*(read(s, every=0.05 if seed % 2 else 0.0) for seed, s in enumerate(streams)))

    engine = Engine(lm, max_batch=8)
    try:
        results = asyncio.run(main(engine))
    finally:
        engine.close()
    for seed, (batches, seconds) in enumerate(results):
        assert lm.tokenizer.decode([t for b in batches for t in b]) == lm.generate("ROMEO:", length=300, seed=seed)[6:]
        if seed % 2:  # the first batch at once, then at most one every 50 ms (and one for the end)
            assert len(batches) <= seconds / 0.05 + 2, (len(batches), seconds)


def test_a_reader_gathering_tokens_gets_the_end_at_once(lm):
    # a reader that takes what is ready at most every 30 s still sees a short stream end as soon as it ends:
    # waiting out the interval made every short request last 0.1-0.2 s
    import asyncio
    import time

    async def read(stream) -> tuple[list[int], float]:
        tokens, started = [], time.monotonic()
        while (batch := await stream.next_tokens(every=30.0)) is not None:
            tokens += batch
        return tokens, time.monotonic() - started

    engine = Engine(lm, max_batch=8)
    try:
        for length in (1, 5, 40):
            tokens, seconds = asyncio.run(read(engine.submit(lm.encode_prompt("ROMEO:"), length=length, seed=1)))
            assert len(tokens) == length and seconds < 15, (length, seconds)
    finally:
        engine.close()


@pytest.mark.parametrize("options", [dict(cell="lstm", input="onehot"), dict(cell="gru", layers=2)])
def test_models_the_stepper_does_or_does_not_cover_write_what_generate_writes(tmp_path, options):
    # the batch keeps the state as the stepper does: its own per-layer rows, or nn.LSTM/GRU's (layers, batch, H)
    from conftest import QUIET, TINY, shakespeare
    from rnnlab.data.corpus import Corpus
    lm = rnnlab.train(Corpus("s", shakespeare(8_000), shakespeare(2_000)), tmp_path / "m", **{**TINY, **options},
                      max_steps=3, **QUIET)
    engine = Engine(lm, max_batch=4)
    try:
        streams = [engine.submit(lm.encode_prompt("ROMEO:"), length=40 + 10 * seed, seed=seed) for seed in range(3)]
        for seed, stream in enumerate(streams):    # three rows, leaving one by one
            assert text_of(lm, "ROMEO:", stream) == lm.generate("ROMEO:", length=40 + 10 * seed, seed=seed)
    finally:
        engine.close()


def test_a_reader_gathering_tokens_is_not_woken_every_step(lm, monkeypatch):
    # the engine wakes a reader's event loop only when it waits for a token: a reader taking its tokens every
    # 50 ms costs a few wake-ups, not one a step
    import asyncio

    from rnnlab.inference import engine as module
    calls = []
    wake = module._set_all
    monkeypatch.setattr(module, "_set_all", lambda events: (calls.append(len(events)), wake(events)))

    async def read(stream) -> list[int]:
        tokens = []
        while (batch := await stream.next_tokens(every=0.05)) is not None:
            tokens += batch
        return tokens

    engine = Engine(lm, max_batch=4)
    try:
        tokens = asyncio.run(read(engine.submit(lm.encode_prompt("ROMEO:"), length=2_000, seed=3)))
    finally:
        engine.close()
    assert lm.tokenizer.decode(tokens) == lm.generate("ROMEO:", length=2_000, seed=3)[6:]
    assert engine.steps >= 2_000 and len(calls) < engine.steps / 4, (len(calls), engine.steps)
