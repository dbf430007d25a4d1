"""`rnnlab.inference.metrics`: loss, perplexity and bits per token of a model on held-out text, read as one stream."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

import rnnlab
from rnnlab.data.corpus import Corpus
from rnnlab.errors import RnnlabError
from rnnlab.inference.metrics import stream_loss, stream_sums, summarize


def by_hand(lm, text: str) -> float:
    """The mean next-token cross-entropy over the whole text, one token at a time, carrying the state."""
    ids = torch.as_tensor(lm.tokenizer.encode(text))
    with torch.no_grad():
        logits, _, _ = lm.net(ids[None, :-1])                                # (1, N - 1, V): one pass
    return F.cross_entropy(logits[0].double(), ids[1:]).item()


def test_evaluate_text_is_the_mean_next_token_cross_entropy(tiny_model):
    lm = rnnlab.load(tiny_model)
    text = "ROMEO:\nWhat light through yonder window breaks?\n" * 3
    result = rnnlab.evaluate(lm, text=text)
    assert result["tokens"] == len(text) - 1                                 # every character after the first
    assert result["loss"] == pytest.approx(by_hand(lm, text), rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]), rel=1e-12)
    assert result["bits_per_token"] == pytest.approx(result["loss"] / math.log(2), rel=1e-12)


def test_a_model_directory_is_evaluated_on_its_own_recorded_corpus_split(tiny_model):
    lm = rnnlab.load(tiny_model)
    corpus = rnnlab.load_corpus(lm.config["corpus"]["sources"])
    valid = rnnlab.evaluate(tiny_model)                                      # a path: loaded, split=valid
    assert valid == pytest.approx(lm.evaluate(corpus.valid))
    assert valid["loss"] == pytest.approx(lm.config["results"]["valid"]["loss"], rel=1e-6)
    train = rnnlab.evaluate(tiny_model, split="train")
    assert train["tokens"] == len(corpus.train) - 1 and train["tokens"] > 8 * valid["tokens"]
    with pytest.raises(RnnlabError, match="has no test split; pass --test FILE"):
        rnnlab.evaluate(tiny_model, split="test")
    with pytest.raises(RnnlabError, match="unknown split 'dev'"):
        rnnlab.evaluate(tiny_model, split="dev")


def test_a_given_corpus_is_split_and_scored_like_the_training_corpus(tiny_model, tmp_path):
    lm = rnnlab.load(tiny_model)
    (tmp_path / "a.txt").write_text("JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\n" * 20)
    corpus = Corpus("given", "unused\n", "KING:\nSpeak, man.\n", "QUEEN:\nSpeak, then.\n")
    assert rnnlab.evaluate(lm, corpus, split="test") == pytest.approx(lm.evaluate("QUEEN:\nSpeak, then.\n"))
    from_file = rnnlab.evaluate(lm, [str(tmp_path / "a.txt")], valid_fraction=0.5, progress=False)
    assert from_file["tokens"] == pytest.approx(len((tmp_path / "a.txt").read_text()) / 2, rel=0.1)


def test_a_model_that_does_not_record_its_corpus_needs_one(tiny_model):
    lm = rnnlab.load(tiny_model)
    lm.config = {k: v for k, v in lm.config.items() if k != "corpus"}
    with pytest.raises(RnnlabError, match="does not record a usable corpus; pass the corpus"):
        rnnlab.evaluate(lm)


def test_parallel_streams_score_every_token_except_each_streams_first():
    torch.manual_seed(0)
    net = rnnlab.RNNLM(rnnlab.ModelConfig(vocab_size=7, hidden=8, embed_dim=4))
    ids = torch.randint(7, (1000,))
    one_total, one_count = stream_sums(net, ids, batch_size=1, chunk=64)
    four_total, four_count = stream_sums(net, ids, batch_size=4, chunk=64)
    assert one_count == 999 and four_count == 4 * (250 - 1)
    assert stream_loss(net, ids, batch_size=1, chunk=64) == pytest.approx((one_total / one_count, one_count))
    # the state carried across chunks: the chunk size does not change the result
    assert stream_sums(net, ids, batch_size=1, chunk=1000)[0] == pytest.approx(one_total, rel=1e-6)
    with pytest.raises(RnnlabError, match="too few for 600 streams"):
        stream_sums(net, ids, batch_size=600)


def test_summary_of_a_huge_loss_does_not_overflow():
    assert summarize(1000.0, 5)["perplexity"] == math.exp(700)
    assert summarize(0.0, 5) == {"loss": 0.0, "perplexity": 1.0, "bits_per_token": 0.0, "tokens": 5}


def test_a_named_file_is_scored_whole_unless_a_split_is_asked_for(tiny_model, tmp_path):
    lm = rnnlab.load(tiny_model)
    text = "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\n" * 30
    (tmp_path / "held-out.txt").write_text(text)
    whole = rnnlab.evaluate(lm, [str(tmp_path / "held-out.txt")])
    assert whole == pytest.approx(lm.evaluate(text)) and whole["tokens"] == len(text) - 1
    tail = rnnlab.evaluate(lm, [str(tmp_path / "held-out.txt")], split="valid", progress=False)
    assert tail["tokens"] < 0.2 * whole["tokens"]


def test_the_models_own_corpus_must_still_be_the_text_it_was_trained_on(tmp_path):
    from conftest import QUIET, TINY, shakespeare
    (tmp_path / "book.txt").write_text(shakespeare(20_000))
    rnnlab.train(str(tmp_path / "book.txt"), tmp_path / "m", max_steps=2, **TINY, **QUIET)
    assert rnnlab.evaluate(tmp_path / "m")["tokens"] > 1000
    (tmp_path / "book.txt").write_text(shakespeare(40_000)[20_000:])   # another text under the same name
    with pytest.raises(RnnlabError, match="is not the text .* was trained on"):
        rnnlab.evaluate(tmp_path / "m")


# -- scoring a text token by token (`rnnlab score`, TextModel.score) --------------------------------------------


def test_score_gives_every_tokens_log_probability_and_agrees_with_evaluate(tiny_model):
    lm = rnnlab.load(tiny_model)
    text = "ROMEO:\nWhat light through yonder window breaks?\n" * 3
    result = lm.score(text)
    ids = torch.as_tensor(lm.tokenizer.encode(text))
    with torch.no_grad():                                                    # one pass over the whole text
        expected = lm.net(ids[None, :-1])[0][0].double().log_softmax(-1).gather(-1, ids[1:, None])[:, 0]
    got = torch.tensor([t["logprob"] for t in result["per_token"]], dtype=torch.float64)
    assert len(got) == len(text) - 1 and torch.allclose(got, expected, atol=1e-4)   # chunked, state carried
    assert [t["token"] for t in result["per_token"]] == list(text[1:])
    assert result["loss"] == pytest.approx(lm.evaluate(text)["loss"], rel=1e-5)
    assert result["per_token"][0]["surprisal_bits"] == pytest.approx(-got[0].item() / math.log(2))


def test_each_line_gets_its_own_perplexity_and_the_odd_line_stands_out(tiny_model):
    lm = rnnlab.load(tiny_model)
    text = "ROMEO:\nWhat light through yonder window breaks?\nqxz jjk vvq zzx qqj\nIt is the east.\n"
    lines = lm.score(text)["lines"]
    assert [line["text"] for line in lines] == text.split("\n")[:-1]
    assert sum(line["tokens"] for line in lines) == len(text) - 1            # every scored token in one line
    worst = max(lines, key=lambda line: line["loss"])
    assert worst["line"] == 3 and worst["perplexity"] > 2 * max(l["perplexity"] for l in lines if l["line"] != 3)


def test_the_baselines_score_token_by_token_too(tmp_path):
    from conftest import shakespeare
    text = shakespeare(20_000)
    for kind, extra in (("ngram", dict(order=3)), ("hmm", dict(states=4, em_iterations=2))):
        lm = rnnlab.train(Corpus("s", text, text[-3000:]), tmp_path / kind, model=kind, progress=False,
                          log=lambda m: None, **extra)
        sample = text[-2000:]
        result = lm.score(sample)
        assert len(result["per_token"]) == len(sample) - 1
        assert result["loss"] == pytest.approx(lm.evaluate(sample)["loss"], rel=1e-6)


def test_score_command_prints_the_odd_lines_json_and_tokens(tiny_model, tmp_path):
    from conftest import cli, refused
    path = tmp_path / "t.txt"
    path.write_text("ROMEO:\nWhat light through yonder window breaks?\nqxz jjk vvq zzx qqj\nIt is the east.\n")
    result = cli("score", tiny_model, path, "--top", "1")
    assert result.returncode == 0 and "tokens scored:    83" in result.stdout
    assert result.stdout.strip().splitlines()[-1].endswith("| qxz jjk vvq zzx qqj")
    data = json.loads(cli("score", tiny_model, path, "--json").stdout)
    assert {"loss", "perplexity", "bits_per_token", "tokens", "per_token", "lines"} <= set(data)
    assert len(data["per_token"]) == 83 and len(data["lines"]) == 4
    assert cli("score", tiny_model, path, "--tokens", "--top", "0").stdout.count("'") >= 2 * 83
    refused(cli("score", tiny_model, path, "--top", "-1"), "--top must be >= 0")
    (tmp_path / "one.txt").write_text("R")
    refused(cli("score", tiny_model, tmp_path / "one.txt"), "at least 2 are needed")
