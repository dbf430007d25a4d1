"""The OpenAI-compatible API of `rnnlab serve`, driven by the official `openai` client against a live server."""

from __future__ import annotations

import importlib.util
from typing import Iterator

import pytest

pytest.importorskip("fastapi", reason="rnnlab serve needs its extra: pip install 'rnnlab[serve]'")
if importlib.util.find_spec("openai") is None:
    pytest.skip("these tests need the openai package: pip install openai", allow_module_level=True)
httpx = pytest.importorskip("httpx")

import rnnlab  # noqa: E402
from rnnlab.inference.launch import running  # noqa: E402
from rnnlab.inference.serve import Limits, create_app  # noqa: E402


@pytest.fixture(scope="session")  # session: xdist may interleave modules
def lm(tiny_model):
    return rnnlab.load(tiny_model)


@pytest.fixture(scope="session")  # session: xdist may interleave modules
def url(lm) -> Iterator[str]:
    with running(create_app(lm, Limits(max_prompt_chars=200, max_tokens=400))) as url:
        yield url


@pytest.fixture(scope="session")
def openai():
    import openai  # here, not at collection: the import takes seconds, which every xdist worker would pay

    return openai


@pytest.fixture(scope="session")  # session: xdist may interleave modules
def client(url, openai):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list().data] == ["tiny"]


def test_a_completion_is_what_generate_writes_with_the_same_seed(client, lm):
    result = client.completions.create(model="tiny", prompt="ROMEO:", max_tokens=60, seed=3, temperature=0.8)
    assert "ROMEO:" + result.choices[0].text == lm.generate("ROMEO:", length=60, seed=3, temperature=0.8)
    assert result.choices[0].finish_reason == "length"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (6, 60)
    again = client.completions.create(model="tiny", prompt="ROMEO:", max_tokens=60, seed=3, temperature=0.8)
    assert again.choices[0].text == result.choices[0].text                    # same seed, same text


def test_streaming_gives_the_same_text_in_chunks_then_done(client, url):
    whole = client.completions.create(model="tiny", prompt="JULIET:", max_tokens=50, seed=1).choices[0].text
    chunks = list(client.completions.create(model="tiny", prompt="JULIET:", max_tokens=50, seed=1, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 50
    raw = httpx.post(url + "/v1/completions", json={"prompt": "A", "max_tokens": 3, "stream": True}, timeout=30)
    assert raw.text.rstrip().endswith("data: [DONE]")


def test_n_choices_each_with_its_own_seed(client, lm):
    result = client.completions.create(model="tiny", prompt="ROMEO:", max_tokens=30, seed=10, n=3)
    texts = [c.text for c in sorted(result.choices, key=lambda c: c.index)]
    assert texts == [lm.generate("ROMEO:", length=30, seed=10 + i)[6:] for i in range(3)]
    assert result.usage.completion_tokens == 90


def test_stop_ends_each_choice_before_the_stop_string(client):
    free = client.completions.create(model="tiny", prompt="ROMEO:", max_tokens=120, seed=4).choices[0].text
    stop = free[40:42]
    cut = client.completions.create(model="tiny", prompt="ROMEO:", max_tokens=120, seed=4, stop=[stop, "zzqq"])
    assert cut.choices[0].text == free[:free.find(stop)] and cut.choices[0].finish_reason == "stop"


def test_logprobs_give_the_chosen_token_and_the_top_alternatives(client, lm):
    result = client.completions.create(model="tiny", prompt="ROMEO:", max_tokens=20, temperature=0, logprobs=3)
    logprobs = result.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs) == 20
    for chosen, top in zip(logprobs.token_logprobs, logprobs.top_logprobs):
        assert len(top) == 3 and chosen == pytest.approx(max(top.values()))  # greedy: the most likely one
    scored = lm.score("ROMEO:" + result.choices[0].text)["per_token"][5:]    # the same numbers, from score
    assert [t["logprob"] for t in scored] == pytest.approx(logprobs.token_logprobs, abs=1e-4)


def test_echo_and_penalties(client):
    echoed = client.completions.create(model="tiny", prompt="ROMEO:", max_tokens=10, seed=2, echo=True)
    assert echoed.choices[0].text.startswith("ROMEO:") and len(echoed.choices[0].text) == 16
    plain = client.completions.create(model="tiny", prompt="ROMEO:", max_tokens=200, temperature=0).choices[0].text
    penalised = client.completions.create(model="tiny", prompt="ROMEO:", max_tokens=200, temperature=0,
                                          frequency_penalty=2.0).choices[0].text
    assert penalised != plain
    assert max(penalised.count(c) for c in set(penalised)) < max(plain.count(c) for c in set(plain))


def test_errors_have_openais_shape(client, url, openai):
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model="tiny", prompt="x", max_tokens=-1)
    with pytest.raises(openai.BadRequestError, match="stop: up to 4"):
        client.completions.create(model="tiny", prompt="x", stop=["a", "b", "c", "d", "e"])
    with pytest.raises(openai.NotFoundError, match="serves the model 'tiny'"):
        client.completions.create(model="gpt-4", prompt="x")
    body = httpx.post(url + "/v1/completions", json={"prompt": "x", "bogus": 1}, timeout=30).json()
    assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["param"] == "bogus"


def test_without_a_prompt_the_text_starts_from_a_random_word_as_generate_does(client, lm):
    result = client.completions.create(model="tiny", prompt="", max_tokens=30, seed=5)
    assert result.choices[0].text == lm.generate(None, length=30, seed=5)     # the start word, then 30 tokens
    assert result.usage.completion_tokens == 30


def test_a_baseline_is_served_too_without_logprobs_or_penalties(tmp_path, openai):
    from conftest import shakespeare
    from rnnlab.data.corpus import Corpus
    ngram = rnnlab.train(Corpus("s", shakespeare(20_000), shakespeare(20_000)), tmp_path / "ng", model="ngram",
                         order=3, progress=False, log=lambda m: None)
    with running(create_app(ngram, Limits(max_prompt_chars=200, max_tokens=400))) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        result = client.completions.create(model="ng", prompt="ROMEO:", max_tokens=40, seed=3)
        assert "ROMEO:" + result.choices[0].text == ngram.generate("ROMEO:", length=40, seed=3)
        streamed = "".join(c.choices[0].text for c in client.completions.create(
            model="ng", prompt="ROMEO:", max_tokens=40, seed=3, stream=True) if c.choices)
        assert streamed == result.choices[0].text
        with pytest.raises(openai.BadRequestError, match="need an RNN"):
            client.completions.create(model="ng", prompt="ROMEO:", max_tokens=5, logprobs=2)
