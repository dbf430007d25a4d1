import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import DATA
from rnnlab.errors import RnnlabError
from rnnlab.data.tokenizers import EOS, UNK, CharTokenizer, WordTokenizer, build_tokenizer, tokenizer_from_dict


def test_char_tokenizer_round_trips_and_maps_unseen_characters_to_unk():
    tok = CharTokenizer.fit("hello world\n")
    assert tok.decode(tok.encode("hello\nworld")) == "hello\nworld"
    ids = tok.encode("hez")
    assert ids[-1] == tok.unk_id and tok.unknown("hez") == ["z"]


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1))
def test_char_tokenizer_round_trips_any_text_of_its_vocabulary(text):
    tok = CharTokenizer.fit(text)
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=200, deadline=None)
@given(st.text(), st.text())
def test_word_tokenizer_never_crashes_on_arbitrary_unicode(train, other):
    tok = WordTokenizer.fit(train, max_vocab=50)
    ids = tok.encode(other)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert isinstance(tok.decode(ids), str)


def test_word_tokenizer_splits_punctuation_and_ends_lines_with_eos():
    tok = WordTokenizer.fit("Hello, world! Don't panic.\nBye.\n")
    assert [tok.vocab[i] for i in tok.encode("Hello, world! Don't panic.\n")] == \
        ["Hello", ",", "\u2581world", "!", "\u2581Don't", "\u2581panic", ".", EOS]   # a space before: "▁"
    old = WordTokenizer.fit("Hello, world! Don't panic.\nBye.\n", split="words")          # models before format 2
    assert [old.vocab[i] for i in old.encode("Hello, world! Don't panic.\n")] == \
        ["Hello", ",", "world", "!", "Don't", "panic", ".", EOS]


def test_word_vocabulary_is_capped_by_frequency_and_min_freq():
    text = "a a a a b b b c c d\n"
    assert WordTokenizer.fit(text, max_vocab=4, split="words").vocab == [UNK, EOS, "a", "b"]
    assert WordTokenizer.fit(text, min_freq=2, split="words").vocab == [UNK, EOS, "a", "b", "c"]
    assert WordTokenizer.fit(text, max_vocab=5).vocab == [UNK, EOS, "\u2581" + UNK, "\u2581a", "\u2581b"]
    tok = WordTokenizer.fit(text, max_vocab=4, split="words")
    assert [tok.vocab[i] for i in tok.encode("a c d\n")] == ["a", UNK, UNK, EOS]


def test_lowercasing_is_optional():
    assert "the" in WordTokenizer.fit("The the THE\n", lowercase=True, split="words").vocab
    assert len(WordTokenizer.fit("The the THE\n", lowercase=True, split="words").vocab) == 3
    assert len(WordTokenizer.fit("The the THE\n", split="words").vocab) == 5


def test_ptb_vocabulary_is_exactly_its_ten_thousand_types():
    train = (DATA / "ptb" / "ptb.train.txt").read_text()
    tok = build_tokenizer("word", train, pretokenized=True)
    assert tok.vocab_size == 10_000
    assert len(tok.encode(train)) == 929_589  # the published token count with <eos>
    valid = (DATA / "ptb" / "ptb.valid.txt").read_text()
    assert tok.unknown(valid) == []


def test_models_before_exact_spacing_still_decode_as_they_did():
    # split "words" (tokenizer.json without "split" reads as it): spacing guessed from the punctuation
    tok = tokenizer_from_dict({"type": "word", "vocab": WordTokenizer.fit(
        'He said , " yes ( maybe ) . " Then : done !\nNext line\n', split="words").vocab})
    assert tok.split == "words"
    ids = tok.encode('He said , " yes ( maybe ) . " Then : done !\nNext line\n')
    assert tok.decode(ids) == 'He said, "yes (maybe)." Then: done!\nNext line\n'


def test_tokenizer_survives_json_round_trip():
    for tok in (CharTokenizer.fit("abc\n"), WordTokenizer.fit("a b, c\n", lowercase=True)):
        again = tokenizer_from_dict(tok.to_dict())
        assert again.to_dict() == tok.to_dict()
        assert list(again.encode("a b c\n")) == list(tok.encode("a b c\n"))


def test_unknown_level_is_a_clear_error():
    with pytest.raises(RnnlabError, match="unknown level"):
        build_tokenizer("sentence", "text")


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_exact_word_tokens_give_back_any_text(text):
    tok = WordTokenizer.fit(text, max_vocab=10 ** 6)
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    detok = tok.detokenizer()                                   # streamed piece by piece: the same
    assert "".join(detok(i) for i in ids) == text


KNOWN = ["the", "King", "'s", "don't", ",", ".", '"', "\u2014", "\u201c", "\u201d", "(", ")", "caf\u00e9", "\u4e16\u754c"]
GAPS = [" ", "  ", "\t", "\n", " \n", "\n\n", "\r\n", "\u3000"]  # words apart (glued, "thezebra" is one word)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(GAPS), st.sampled_from(KNOWN) | st.sampled_from(["zebra", "qux"])),
                max_size=30))
def test_with_unknown_words_only_they_differ(parts):
    tok = WordTokenizer.fit("".join(g + w for g in GAPS for w in KNOWN), max_vocab=10 ** 6)
    text = "".join(gap + word for gap, word in parts)
    expected = "".join(gap + ("<unk>" if word in ("zebra", "qux") else word) for gap, word in parts)
    assert tok.decode(tok.encode(text)) == expected


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_bpe_gives_back_any_text(text):
    assert BPE.decode(BPE.encode(text)) == text


BPE = build_tokenizer("bpe", "The king's men, \u201cwhere?\u201d \u2014 caf\u00e9\n" * 50, max_vocab=300)


def test_pretokenized_corpora_still_split_on_spaces():
    tok = build_tokenizer("word", "the cat <unk> sat\n", pretokenized=True)
    assert tok.split == "whitespace" and [tok.vocab[i] for i in tok.encode("the cat sat\n")] == ["the", "cat", "sat",
                                                                                                   EOS]
