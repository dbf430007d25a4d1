"""The HMM and n-gram baselines through the same commands and directory format as the RNNs."""

import json

import pytest

import rnnlab
from conftest import DATA, cli, shakespeare
from rnnlab.studies import compare
from rnnlab.data.corpus import Corpus
from rnnlab.errors import RnnlabError


def ptb_slice(tmp_path, lines=3000, valid_lines=500):
    train = "".join((DATA / "ptb" / "ptb.train.txt").read_text().splitlines(keepends=True)[:lines])
    valid = "".join((DATA / "ptb" / "ptb.valid.txt").read_text().splitlines(keepends=True)[:valid_lines])
    (tmp_path / "train.txt").write_text(train)
    (tmp_path / "valid.txt").write_text(valid)
    return tmp_path / "train.txt", tmp_path / "valid.txt"


# the perplexity each must beat. Margins: over 3 slices of PTB the trigram scored 224-232 and the 8-state HMM
# (3 EM iterations) 411-430; a unigram model scores 413-430 and a uniform one ~5,960. The HMM's bound only
# catches a broken model (its learning is tested in test_hmm.py).
@pytest.mark.numeric
@pytest.mark.parametrize("model, extra, bound", [("ngram", ("--order", "3"), 330),
                                                 ("hmm", ("--states", "8", "--em-iterations", "3"), 600)])
def test_baseline_trains_evaluates_and_generates_through_the_cli(tmp_path, model, extra, bound):
    train, valid = ptb_slice(tmp_path)
    out = tmp_path / model
    result = cli("train", train, "--valid", valid, "--pretokenized", "--model", model, *extra, "--out", out)
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == model and config["tokenizer"]["level"] == "word"
    evaluated = json.loads(cli("evaluate", out, "--json").stdout)
    assert set(evaluated) == {"loss", "perplexity", "bits_per_token", "tokens"}
    assert evaluated["perplexity"] == pytest.approx(config["results"]["valid"]["perplexity"], rel=1e-6)
    assert evaluated["perplexity"] < bound
    first = cli("generate", out, "--prompt", "the company", "--length", "15", "--seed", "4")
    again = cli("generate", out, "--prompt", "the company", "--length", "15", "--seed", "4")
    assert first.returncode == 0 and first.stdout == again.stdout and first.stdout.startswith("the company")
    resumed = cli("train", "--resume", out)
    assert resumed.returncode == 1 and "cannot be resumed" in resumed.stderr


def test_hmm_em_keeps_the_best_validation_iteration(tmp_path):
    train, valid = ptb_slice(tmp_path, lines=1000)
    lm = rnnlab.train([str(train)], tmp_path / "h", valid=str(valid), pretokenized=True, model="hmm", states=4,
                      em_iterations=4, progress=False, log=lambda m: None)
    records = [json.loads(line) for line in (tmp_path / "h" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 4
    assert lm.config["results"]["valid"]["loss"] == pytest.approx(min(r["valid_loss"] for r in records), rel=1e-5)
    assert rnnlab.load(tmp_path / "h").evaluate(valid.read_text())["loss"] == pytest.approx(
        lm.config["results"]["valid"]["loss"], rel=1e-5)


def test_compare_parses_models_and_sizes():
    assert [label for label, _ in compare.parse_models("hmm:16,ngram:3,lstm")] == ["hmm:16", "ngram:3", "lstm"]
    assert compare.parse_models("hmm")[0][1]["states"] == 64
    assert compare.parse_sizes("1M,10k,2.5k") == [2500, 10_000, 1_000_000]
    with pytest.raises(RnnlabError, match="unknown model 'transformer'"):
        compare.parse_models("transformer")
    with pytest.raises(RnnlabError, match="cannot read"):
        compare.parse_sizes("lots")


def test_compare_writes_table_csv_and_plot(tmp_path):
    train, valid = ptb_slice(tmp_path, lines=1500, valid_lines=100)
    out = tmp_path / "cmp"
    result = cli("compare", train, "--valid", valid, "--pretokenized", "--models", "ngram:2,hmm:4,gru",
                     "--train-tokens", "5k,20k", "--time-budget", "0.005", "--out", out)
    assert result.returncode == 0, result.stderr
    lines = (out / "compare.csv").read_text().splitlines()
    assert lines[0] == "model,train_tokens,valid_perplexity,train_seconds,parameters"
    rows = [line.split(",") for line in lines[1:]]
    assert [r[0] for r in rows] == ["ngram:2", "hmm:4", "gru"] * 2
    assert all(5000 <= int(r[1]) < 6000 for r in rows[:3]) and all(20_000 <= int(r[1]) < 21_000 for r in rows[3:])
    ngram = [float(r[2]) for r in rows if r[0] == "ngram:2"]
    assert ngram[1] < ngram[0]  # more data, lower perplexity
    assert (out / "compare.md").read_text().startswith("| model |")
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_prefix_cuts_whole_lines_with_enough_tokens():
    tok = compare.fixed_tokenizer(Corpus("c", "a b c\nd e\nf g h i\n", "x\n", pretokenized=True), "word")
    assert compare.prefix("a b c\nd e\nf g h i\n", tok, 5) == "a b c\nd e\n"  # 4 + 3 tokens with <eos>
    assert compare.prefix(shakespeare(100), compare.fixed_tokenizer(Corpus("c", shakespeare(100)), "char"), 10) == \
        shakespeare(10)


def test_a_baseline_run_still_checks_the_model_options_it_is_given(tmp_path):
    train, valid = ptb_slice(tmp_path, lines=300, valid_lines=50)
    with pytest.raises(RnnlabError, match="hidden must be at least 1"):
        rnnlab.train([str(train)], tmp_path / "n", valid=str(valid), pretokenized=True, model="ngram", hidden=0,
                     progress=False, log=lambda m: None)
