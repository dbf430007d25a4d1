"""Input embeddings from word vectors: word2vec (Mikolov et al. 2013) and GloVe (Pennington et al. 2014).

The textbook feeds words to the recurrent layer as one-hot vectors or as word embeddings. A
learned embedding starts random; here it can instead start from pretrained vectors (a GloVe or
word2vec file) or from word2vec vectors trained on the training split first. Reading, writing
and training vectors is gensim's job (`KeyedVectors`, `Word2Vec`): nothing here parses formats.

    --embedding learned        random init, learned (the default)
    --embedding onehot         the textbook's one-hot x_t (models/rnnlm.py)
    --embedding word2vec       train skip-gram/CBOW on the training split, start from those vectors
    --embedding PATH           start from a GloVe / word2vec (text or binary) file
    --freeze-embeddings        keep them fixed while the network trains
"""

from __future__ import annotations

from collections import Counter

from pathlib import Path

import numpy as np
import torch

from rnnlab.errors import RnnlabError
from rnnlab.files import atomic_write

FORMATS = ("glove", "word2vec", "word2vec-binary")


def detect_format(path: Path) -> str:
    """glove: 'word v1 v2 ...' lines; word2vec: the same after a 'count dim' header; binary otherwise."""
    with open(path, "rb") as f:
        head = f.read(4096)
    try:
        first = head.split(b"\n", 1)[0].decode("utf-8")
    except UnicodeDecodeError:
        return "word2vec-binary"
    fields = first.split()
    if len(fields) == 2 and all(x.isdigit() for x in fields):
        rest = head.split(b"\n", 1)[1] if b"\n" in head else b""
        try:
            rest.decode("utf-8")
            return "word2vec"
        except UnicodeDecodeError:
            return "word2vec-binary"
    return "glove"


def load_vectors(path: str | Path, fmt: str | None = None):
    """A gensim KeyedVectors from a GloVe or word2vec file (format detected unless given)."""
    from gensim.models import KeyedVectors

    path = Path(path)
    if not path.is_file():
        raise RnnlabError(f"no such vector file: {path} (--embedding takes learned, onehot, word2vec or a file)")
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise RnnlabError(f"unknown --embedding-format {fmt!r}; choose one of {', '.join(FORMATS)}")
    try:
        return KeyedVectors.load_word2vec_format(str(path), binary=fmt == "word2vec-binary", no_header=fmt == "glove",
                                                 unicode_errors="replace")
    except Exception as e:  # noqa: BLE001 — gensim raises many kinds; the user needs one sentence
        raise RnnlabError(f"cannot read {path} as {fmt} vectors ({type(e).__name__}: {str(e)[:120]}); "
                          f"check the file or pass --embedding-format") from None


def train_word2vec(sentences: list[list[str]], *, dim: int, skipgram: bool = True, window: int = 5,
                   epochs: int = 5, min_count: int = 1, seed: int = 1337):
    """Skip-gram (or CBOW) vectors for the tokens of the training split, with gensim."""
    from gensim.models import Word2Vec

    # one worker: reproducible vectors. The vocabulary is built first, so that an empty one is an
    # error here rather than gensim's RuntimeError
    model = Word2Vec(vector_size=dim, sg=int(skipgram), window=window, epochs=epochs, min_count=min_count, seed=seed,
                     workers=1)
    model.build_vocab(sentences)
    if not len(model.wv):
        most = max(Counter(word for sentence in sentences for word in sentence).values(), default=0)
        raise RnnlabError(f"word2vec: no token appears --w2v-min-count {min_count} times in the training split "
                          f"(the most frequent appears {most} times); lower --w2v-min-count")
    model.train(sentences, total_examples=model.corpus_count, epochs=epochs)
    return model.wv


def initialise(weight: torch.Tensor, vocab: list[str], vectors) -> dict:
    """Copy the vectors of the vocabulary words that have one into `weight` (V, E); every other row
    (and <unk>) is drawn from a normal with the found vectors' mean and std, so that no row stands
    out in scale. Returns the coverage: found, total, and a few missing words."""
    if vectors.vector_size != weight.size(1):
        raise RnnlabError(f"the vectors have {vectors.vector_size} dimensions but --embed-dim is {weight.size(1)}; "
                          f"drop --embed-dim to use {vectors.vector_size}")
    found = [(i, word) for i, word in enumerate(vocab) if word in vectors.key_to_index]
    missing = [word for word in vocab if word not in vectors.key_to_index]
    with torch.no_grad():
        if found:
            table = torch.from_numpy(np.stack([vectors[word] for _, word in found])).to(weight.dtype)
            mean, std = table.mean().item(), table.std().item() if len(found) > 1 else 0.1
            weight.normal_(mean, std or 0.1)
            weight[torch.tensor([i for i, _ in found])] = table
    return {"found": len(found), "total": len(vocab), "missing_examples": missing[:10]}


def nearest(weight: torch.Tensor, vocab: list[str], word: str, k: int = 10) -> list[tuple[str, float]]:
    """The k words whose embedding rows are closest to `word`'s by cosine similarity."""
    index = {w: i for i, w in enumerate(vocab)}
    if word not in index:
        raise RnnlabError(f"{word!r} is not in the model's vocabulary")
    if k < 1:
        raise RnnlabError(f"-k must be at least 1, got {k}")
    unit = torch.nn.functional.normalize(weight.detach().float(), dim=1)        # (V, E)
    similarity = unit @ unit[index[word]]                                         # (V,)
    similarity[index[word]] = -2.0
    top = torch.topk(similarity, min(k, len(vocab) - 1))
    return [(vocab[i], float(s)) for s, i in zip(top.values.tolist(), top.indices.tolist())]


def export(weight: torch.Tensor, vocab: list[str], path: str | Path) -> None:
    """Write the embedding as a word2vec text file (gensim's writer)."""
    from gensim.models import KeyedVectors

    vectors = KeyedVectors(vector_size=weight.size(1))
    vectors.add_vectors(vocab, weight.detach().float().cpu().numpy())
    atomic_write(path, lambda tmp: vectors.save_word2vec_format(tmp, binary=False))
