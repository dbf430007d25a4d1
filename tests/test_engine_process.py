"""The batched engine in a process of its own (`rnnlab serve --engine process`): the same streams as the
engine in this process, token for token, and a clear end when that process dies."""

from __future__ import annotations

import itertools
import threading

import pytest

import rnnlab
from rnnlab.errors import RnnlabError
from rnnlab.inference.engine_process import ProcessEngine


@pytest.fixture(scope="module")
def lm(tiny_model):
    return rnnlab.load(tiny_model)


@pytest.fixture(scope="module")
def engine(tiny_model):
    engine = ProcessEngine(tiny_model, max_batch=8, threads=1)
    yield engine
    engine.close()


def text_of(lm, prompt: str, stream) -> str:
    return prompt + lm.tokenizer.decode(list(stream))


def test_streams_write_what_generate_writes_also_side_by_side(lm, engine):
    import torch
    results: dict[int, str] = {}

    def client(i: int) -> None:
        generator = torch.Generator().manual_seed(i)   # the request's own generator travels with it
        stream = engine.submit(lm.encode_prompt("ROMEO:"), length=60 + 10 * i, seed=i, generator=generator,
                               temperature=0.9, top_k=None if i % 2 else 5)
        results[i] = text_of(lm, "ROMEO:", stream)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [results[i] for i in range(6)] == [
        lm.generate("ROMEO:", length=60 + 10 * i, seed=i, temperature=0.9, top_k=None if i % 2 else 5)
        for i in range(6)]


def test_logprobs_cancel_and_a_failing_request_cross_the_process(lm, engine):
    items = list(engine.submit(lm.encode_prompt("A"), length=5, seed=1, logprobs=3))
    assert len(items) == 5 and all(len(top) == 3 and logprob <= 0 for _, logprob, top in items)
    long = engine.submit(lm.encode_prompt("A"), length=1_000_000, seed=2)
    first = list(itertools.islice(iter(long), 5))
    long.cancel()
    assert len(first) == 5 and len(list(long)) < 100_000                 # it ended: the reader hung up
    bad = engine.submit([lm.tokenizer.vocab_size + 5], length=10, seed=3)   # no such token: the prefill raises
    with pytest.raises(IndexError):
        list(bad)
    assert len(list(engine.submit(lm.encode_prompt("B"), length=7, seed=4))) == 7   # the engine goes on
    with pytest.raises(RnnlabError, match="--temperature must be > 0"):   # checked here, before it travels
        engine.submit([1], length=5, seed=1, temperature=0)


def test_when_the_engines_process_dies_its_streams_end_with_an_error_and_new_ones_are_refused(lm, tiny_model):
    engine = ProcessEngine(tiny_model, max_batch=4, threads=1)
    try:
        stream = engine.submit(lm.encode_prompt("A"), length=1_000_000, seed=1)
        assert len(list(itertools.islice(iter(stream), 3))) == 3
        engine.process.kill()
        with pytest.raises(RnnlabError, match="engine's process has stopped; restart the server"):
            list(stream)
        engine.receiver.join(timeout=10)
        with pytest.raises(RnnlabError, match="engine's process has stopped"):
            engine.submit([1], length=1, seed=1)
    finally:
        engine.close()


def test_a_model_the_process_cannot_load_is_a_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RnnlabError, match="engine's process did not start: .*not a model directory"):
        ProcessEngine(tmp_path / "empty")


def test_serve_engine_process_writes_what_generate_writes_and_stops_on_ctrl_c(lm):
    import re
    import signal
    import time

    import httpx

    from conftest import Forked
    server = Forked("serve", lm.path, "--port", "0", "--engine", "process")
    try:
        deadline = time.monotonic() + 60
        while not (url := re.search(r"http://127\.0\.0\.1:\d+", server.output()[0])):
            assert server.poll() is None and time.monotonic() < deadline, server.output()
            time.sleep(0.01)
        body = {"prompt": "ROMEO:", "max_tokens": 40, "seed": 5, "temperature": 0.8}
        served = httpx.post(url.group() + "/v1/completions", json=body, timeout=60).json()["choices"][0]["text"]
        assert "ROMEO:" + served == lm.generate("ROMEO:", length=40, seed=5, temperature=0.8)
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0
    finally:
        server.kill()
