"""Word vectors as the input layer: GloVe / word2vec files, word2vec trained on the corpus, BPE."""

import json

import numpy as np
import pytest
import torch

import rnnlab
from conftest import DATA, cli, shakespeare
from rnnlab.data.corpus import Corpus
from rnnlab.models.embeddings import detect_format, load_vectors, nearest
from rnnlab.errors import RnnlabError

QUIET = dict(progress=False, log=lambda m: None)
SMALL = dict(hidden=32, layers=1, batch_size=8, bptt=32, max_steps=20, **QUIET)


def ptb_corpus(chars=120_000):
    text = (DATA / "ptb" / "ptb.train.txt").read_text()[:chars]
    cut = text.rfind("\n", 0, int(chars * 0.9)) + 1
    return Corpus("ptb-slice", text[:cut], text[cut:], pretokenized=True)


def write_vectors(tmp_path, words, dim=12, seed=0):
    """The same vectors in all three formats, written by gensim itself."""
    from gensim.models import KeyedVectors  # imported here: gensim (and scipy) cost every test process a second
    rng = np.random.default_rng(seed)
    kv = KeyedVectors(vector_size=dim)
    kv.add_vectors(words, rng.normal(0, 0.3, size=(len(words), dim)).astype(np.float32))
    paths = {"word2vec": tmp_path / "v.w2v.txt", "word2vec-binary": tmp_path / "v.bin", "glove": tmp_path / "v.glove"}
    kv.save_word2vec_format(str(paths["word2vec"]), binary=False)
    kv.save_word2vec_format(str(paths["word2vec-binary"]), binary=True)
    kv.save_word2vec_format(str(paths["glove"]), binary=False, write_header=False)
    return kv, paths


@pytest.mark.numeric
@pytest.mark.parametrize("fmt", ["word2vec", "word2vec-binary", "glove"])
def test_vector_files_of_each_format_initialise_the_embedding_and_report_coverage(tmp_path, fmt):
    corpus = ptb_corpus()
    words = ["the", "company", "said", "market", "zzznotaword"]
    kv, paths = write_vectors(tmp_path, words)
    assert detect_format(paths[fmt]) == fmt
    logs = []
    lm = rnnlab.train(corpus, tmp_path / "m", embedding=str(paths[fmt]), max_steps=1, lr=1e-9, optimizer="sgd",
                      hidden=32, layers=1, batch_size=8, bptt=32, progress=False, log=logs.append)
    coverage = lm.config["embedding"]["coverage"]
    assert coverage["found"] == 4 and coverage["total"] == lm.tokenizer.vocab_size     # zzznotaword is not in PTB
    assert any("4 of" in line and "found in the vectors" in line for line in logs)
    assert lm.net.config.embed_dim == 12                                                # taken from the file
    weight = lm.net.encoder.weight
    for word in words[:4]:
        assert torch.allclose(weight[lm.tokenizer.vocab.index(word)], torch.tensor(kv[word]), atol=1e-3)
    # the rows the file did not cover (<unk> among them) start at the scale of the found vectors: the ratio of
    # their spreads was 0.994-1.005 over 10 seeds; rows left at N(0, 1) would give ~3.3
    found = torch.stack([weight[lm.tokenizer.vocab.index(w)] for w in words[:4]])
    missing = torch.stack([row for i, row in enumerate(weight) if lm.tokenizer.vocab[i] not in words[:4]])
    assert 0.8 < (missing.std() / found.std()).item() < 1.25


def test_dimension_that_contradicts_embed_dim_is_a_clear_error(tmp_path):
    _, paths = write_vectors(tmp_path, ["the", "company"])
    with pytest.raises(RnnlabError, match="12-dimensional vectors but --embed-dim is 16"):
        rnnlab.train(ptb_corpus(), tmp_path / "m", embedding=str(paths["glove"]), embed_dim=16, **SMALL)


def test_frozen_embeddings_stay_frozen_while_the_rest_learns(tmp_path):
    from rnnlab.models.rnnlm import RNNLM
    from rnnlab.training.trainer import seed_everything
    _, paths = write_vectors(tmp_path, ["the", "company", "said"], dim=32)
    rnnlab.train(ptb_corpus(), tmp_path / "m", embedding=str(paths["word2vec"]), freeze_embeddings=True,
                 lr=1e-2, **SMALL)
    trained = rnnlab.load(tmp_path / "m")
    from gensim.models import KeyedVectors
    kv = KeyedVectors.load_word2vec_format(str(paths["word2vec"]))
    for word in ("the", "company", "said"):
        assert torch.allclose(trained.net.encoder.weight[trained.tokenizer.vocab.index(word)],
                              torch.tensor(kv[word]), atol=1e-6)
    assert not trained.net.encoder.weight.requires_grad and trained.net.config.freeze_embeddings
    seed_everything(1337)                                    # what train() does before building the network
    initial = RNNLM(trained.net.config)
    assert not torch.allclose(initial.rnn.weight_hh_l0, trained.net.rnn.weight_hh_l0)   # the rest did learn


def test_word2vec_trained_on_the_corpus_covers_the_vocabulary(tmp_path):
    logs = []
    lm = rnnlab.train(ptb_corpus(), tmp_path / "m", embedding="word2vec", embed_dim=24, w2v_epochs=2,
                      hidden=32, layers=1, batch_size=8, bptt=32, max_steps=5, progress=False, log=logs.append)
    assert lm.config["embedding"]["coverage"]["found"] == lm.tokenizer.vocab_size
    assert any("skip-gram word2vec (24 dims" in line for line in logs)


def test_export_then_load_round_trips_and_neighbors_use_cosine(tmp_path):
    lm = rnnlab.train(ptb_corpus(), tmp_path / "m", embed_dim=16, **SMALL)
    result = cli("embeddings", tmp_path / "m", "--out", tmp_path / "vectors.txt")
    assert result.returncode == 0, result.stderr
    kv = load_vectors(tmp_path / "vectors.txt")
    weight = lm.net.encoder.weight.detach()
    for word in ("the", "company", "<unk>"):
        assert np.allclose(kv[word], weight[lm.tokenizer.vocab.index(word)].numpy(), atol=1e-5)
    again = rnnlab.train(ptb_corpus(), tmp_path / "n", embedding=str(tmp_path / "vectors.txt"), **SMALL)
    assert again.config["embedding"]["coverage"]["found"] == lm.tokenizer.vocab_size
    top = nearest(weight, lm.tokenizer.vocab, "the", k=3)
    unit = torch.nn.functional.normalize(weight, dim=1)
    best = max((w for w in lm.tokenizer.vocab if w != "the"),
               key=lambda w: float(unit[lm.tokenizer.vocab.index(w)] @ unit[lm.tokenizer.vocab.index("the")]))
    assert top[0][0] == best and top[0][1] >= top[1][1] >= top[2][1]
    shown = cli("neighbors", tmp_path / "m", "the", "-k", "3")
    assert shown.returncode == 0 and len(shown.stdout.splitlines()) == 3
    missing = cli("neighbors", tmp_path / "m", "qwertyuiop")
    assert missing.returncode == 1 and "not in the model's vocabulary" in missing.stderr


def test_bpe_level_round_trips_any_text_and_generates(tmp_path):
    text = shakespeare(60_000)
    lm = rnnlab.train(Corpus("s", text[:54_000], text[54_000:]), tmp_path / "b", level="bpe", max_vocab=400,
                      embed_dim=16, **SMALL)
    assert lm.tokenizer.kind == "bpe" and lm.tokenizer.vocab_size == 400
    sample = "Zebras — naïve café, 東京!\n"
    assert lm.tokenizer.decode(lm.tokenizer.encode(sample)) == sample
    loaded = rnnlab.load(tmp_path / "b")
    out = loaded.generate("ROMEO:", length=30, seed=2)
    assert out.startswith("ROMEO:") and out == loaded.generate("ROMEO:", length=30, seed=2)
    config = json.loads((tmp_path / "b" / "tokenizer.json").read_text())
    assert config["type"] == "bpe"
