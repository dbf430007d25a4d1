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
        ["Hello", ",", "world", "!", "Don't", "panic", ".", EOS]


def test_word_vocabulary_is_capped_by_frequency_and_min_freq():
    text = "a a a a b b b c c d\n"
    assert WordTokenizer.fit(text, max_vocab=4).vocab == [UNK, EOS, "a", "b"]
    assert WordTokenizer.fit(text, min_freq=2).vocab == [UNK, EOS, "a", "b", "c"]
    tok = WordTokenizer.fit(text, max_vocab=4)
    assert [tok.vocab[i] for i in tok.encode("a c d\n")] == ["a", UNK, UNK, EOS]


def test_lowercasing_is_optional():
    assert "the" in WordTokenizer.fit("The the THE\n", lowercase=True).vocab
    assert len(WordTokenizer.fit("The the THE\n", lowercase=True).vocab) == 3
    assert len(WordTokenizer.fit("The the THE\n").vocab) == 5


def test_ptb_vocabulary_is_exactly_its_ten_thousand_types():
    train = (DATA / "ptb" / "ptb.train.txt").read_text()
    tok = build_tokenizer("word", train, pretokenized=True)
    assert tok.vocab_size == 10_000
    assert len(tok.encode(train)) == 929_589  # the published token count with <eos>
    valid = (DATA / "ptb" / "ptb.valid.txt").read_text()
    assert tok.unknown(valid) == []


def test_word_output_reads_naturally():
    tok = WordTokenizer.fit('He said , " yes ( maybe ) . " Then : done !\nNext line\n')
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
