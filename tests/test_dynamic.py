"""Dynamic evaluation (inference/dynamic.py, `rnnlab evaluate --dynamic`): the model adapts to the text it
scores, every token scored before the model learns from it, reported apart from the static score."""

import json

import pytest
import torch

import rnnlab
from conftest import cli, refused, shakespeare
from rnnlab.data.corpus import Corpus
from rnnlab.errors import RnnlabError


@pytest.fixture(scope="session")
def small(tiny_model):
    return rnnlab.load(tiny_model)


@pytest.mark.numeric
def test_a_model_reading_a_repetitive_text_learns_it_as_it_reads(small):
    # a text unlike the training text, said over and over: a static model keeps its surprise, an adapting one
    # learns the refrain. Margin: tiny models of 3 seeds, 1 and 2 threads, AVX2 kernels scored 3.87-3.88
    # nats/char static and 0.67-0.77 dynamic (a ratio of 0.17-0.20; the test needs below 0.75)
    text = "zebra quokka yak; " * 120
    static = small.evaluate(text)
    before = {k: v.clone() for k, v in small.net.state_dict().items()}
    dynamic = small.evaluate(text, dynamic=dict(lr=1.0, decay=0.0, segment=20))
    assert dynamic["tokens"] == static["tokens"]
    assert dynamic["loss"] < 0.75 * static["loss"]
    assert all(torch.equal(before[k], v) for k, v in small.net.state_dict().items())   # the model is not changed


def test_every_token_is_scored_before_the_model_learns_from_it(small):
    # with a learning rate so large that an update wrecks the model, the first segment's score is still the
    # static one: it was scored before the first update
    text = shakespeare(400)
    first = small.evaluate(text[:21])
    wrecked = small.evaluate(text[:21], dynamic=dict(lr=1e6, decay=0.0, segment=20))
    assert wrecked["loss"] == pytest.approx(first["loss"], abs=1e-5)


def test_the_cli_reports_it_apart_from_the_static_score(tiny_model, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(shakespeare(3000))
    result = cli("evaluate", tiny_model, text, "--dynamic", "--dynamic-segment", "30", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"dynamic"} and {"loss", "perplexity", "lr", "decay", "segment"} <= set(data["dynamic"])
    plain = cli("evaluate", tiny_model, text, "--dynamic")
    assert "dynamic evaluation (the model adapting as it reads: not a static score)" in plain.stdout
    refused(cli("evaluate", tiny_model, text, "--dynamic", "--dynamic-lr", "0"), "--dynamic-lr must be a number > 0")
    refused(cli("evaluate", tiny_model, text, "--dynamic", "--dynamic-decay", "1"), "--dynamic-decay must be in")


def test_a_baseline_cannot_adapt(tmp_path):
    ngram = rnnlab.train(Corpus("s", shakespeare(5000), shakespeare(5000)), tmp_path / "ng", model="ngram",
                         progress=False, log=lambda m: None)
    with pytest.raises(RnnlabError, match="dynamic evaluation adapts an RNN"):
        ngram.evaluate("the cat", dynamic=dict(lr=1.0))
