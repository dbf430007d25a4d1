import os
import shutil
import warnings

import pytest
import torch

from rnnlab.errors import RnnlabError, RnnlabWarning
from rnnlab.inference.sampling import next_token
from rnnlab.inference.lm import MAX_PROMPT_TOKENS, LanguageModel
from rnnlab.models.config import ModelConfig
from rnnlab.models.rnnlm import RNNLM
from rnnlab.data.tokenizers import CharTokenizer, WordTokenizer


def char_lm(text="abcdefgh \n"):
    torch.manual_seed(0)
    tok = CharTokenizer.fit(text)
    return LanguageModel(RNNLM(ModelConfig(vocab_size=tok.vocab_size, hidden=16, embed_dim=8)), tok, {})


def word_lm(split="words"):
    """An untrained word model; by default with the spacing of models before exact spacing (a space
    between words, whatever the model picks), so that its output can be counted in words."""
    torch.manual_seed(0)
    tok = WordTokenizer.fit("the cat sat on the mat , and the dog ran .\n", split=split)
    return LanguageModel(RNNLM(ModelConfig(vocab_size=tok.vocab_size, hidden=16, embed_dim=8)), tok, {})


def test_same_seed_same_text_and_another_seed_other_text():
    lm = char_lm()
    assert lm.generate("abc", length=80, seed=7) == lm.generate("abc", length=80, seed=7)
    assert lm.generate("abc", length=80, seed=7) != lm.generate("abc", length=80, seed=8)


def test_output_starts_with_the_prompt_and_has_the_asked_length():
    lm = char_lm()
    text = lm.generate("abc", length=50, seed=1)
    assert text.startswith("abc") and len(text) == 53


def test_top_k_one_and_tiny_top_p_are_greedy():
    lm = char_lm()
    greedy = lm.generate("ab", length=40, greedy=True)
    assert lm.generate("ab", length=40, top_k=1, seed=3) == greedy
    assert lm.generate("ab", length=40, top_p=1e-6, seed=4) == greedy


def test_top_k_and_top_p_only_ever_sample_inside_their_sets():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(2000, 1)
    g = torch.Generator().manual_seed(0)
    assert set(next_token(logits, top_k=2, generator=g).tolist()) == {0, 1}
    assert set(next_token(logits, top_p=0.7, generator=g).tolist()) == {0, 1}   # 0.5 + 0.3 reaches 0.7
    assert set(next_token(logits, top_p=0.9, generator=g).tolist()) == {0, 1, 2}
    low = next_token(logits, temperature=0.1, generator=g)
    assert (low == 0).float().mean() > 0.95     # a cold temperature sharpens towards the mode


@pytest.mark.numeric
@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
@pytest.mark.parametrize("top_k", [None, 3])  # the Gumbel-max path, and the softmax + multinomial path
def test_sampling_frequencies_follow_the_model_distribution(temperature, top_k):
    probs = torch.tensor([0.6, 0.3, 0.1])
    draws = next_token(probs.log().repeat(20000, 1), temperature=temperature, top_k=top_k,
                       generator=torch.Generator().manual_seed(1))
    freq = torch.bincount(draws, minlength=3).float() / 20000
    assert torch.allclose(freq, (probs.log() / temperature).softmax(-1), atol=0.015)


@pytest.mark.parametrize("options, message", [
    ({"temperature": 0}, "temperature must be > 0"), ({"top_k": 0}, "top-k must be at least 1"),
    ({"top_p": 1.5}, r"top-p must be in \(0, 1\]"), ({"top_p": 0}, "top-p"),
])
def test_bad_sampling_options_are_clear_errors(options, message):
    with pytest.raises(RnnlabError, match=message):
        char_lm().generate("a", length=5, **options)


def test_unknown_prompt_word_maps_to_unk_with_warning():
    lm = word_lm()
    with pytest.warns(RnnlabWarning, match=r"1 prompt word not in the vocabulary, read as <unk>: 'unicorn'"):
        text = lm.generate("the unicorn", length=5, seed=0)
    assert text.startswith("the unicorn")


def test_no_prompt_starts_from_a_random_vocabulary_word():
    lm = word_lm()
    starts = {lm.generate(length=0, seed=s) for s in range(30)}
    assert len(starts) > 3 and starts <= set(lm.tokenizer.vocab[2:])
    lm = word_lm("exact")  # a word drawn with its space mark starts the text without the space
    starts = {lm.generate(length=0, seed=s) for s in range(30)}
    assert len(starts) > 3 and starts <= {w.lstrip("\u2581") for w in lm.tokenizer.vocab[2:]} - {"<unk>"}


def test_overlong_prompt_is_truncated_with_a_warning():
    lm = char_lm()
    with pytest.warns(RnnlabWarning, match=f"keeping the last {MAX_PROMPT_TOKENS}"):
        ids = lm.encode_prompt("ab" * MAX_PROMPT_TOKENS)
    assert len(ids) == MAX_PROMPT_TOKENS


def test_word_prompt_has_no_trailing_eos():
    lm = word_lm()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lm.encode_prompt("the cat")[-1] != lm.tokenizer.eos_id
        assert lm.encode_prompt("the cat\n")[-1] == lm.tokenizer.eos_id


def test_streamed_generation_equals_rerunning_the_whole_prefix():
    """Carrying the hidden state is exact: the logits match a fresh pass over the whole text."""
    lm = char_lm()
    ids = lm.encode_prompt("abc")
    from rnnlab.inference.sampling import sample_ids
    new = [int(t) for t in sample_ids(lm.net, torch.tensor([ids]), 20, greedy=True)]
    seq = list(ids)
    for _ in range(20):
        logits, _, _ = lm.net(torch.tensor([seq]))
        seq.append(int(logits[0, -1].argmax()))
    assert seq[len(ids):] == new


@pytest.mark.parametrize("cell", ["rnn", "rnn-relu", "lstm", "gru"])
@pytest.mark.parametrize("input, table", [("learned", True), ("learned", False), ("onehot", False)])
def test_fast_single_step_path_matches_the_module(cell, input, table, monkeypatch):
    from rnnlab.inference.sampling import Stepper
    if not table:  # a vocabulary too large for the first layer's lookup table
        monkeypatch.setattr(Stepper, "TABLE_LIMIT", 0)
    torch.manual_seed(0)
    net = RNNLM(ModelConfig(vocab_size=20, cell=cell, input=input, hidden=16, embed_dim=8, layers=2)).eval()
    step = Stepper(net)
    assert (getattr(step, "table", None) is not None) == (table and input == "learned")
    with torch.inference_mode():
        _, _, hidden = net(torch.randint(20, (3, 5)))
        token = torch.randint(20, (3,))
        expected, _, expected_hidden = net(token[:, None], hidden)
        logits, new_hidden = step(token, hidden)
    assert torch.allclose(logits, expected[:, -1], atol=1e-5)
    for a, b in zip(new_hidden if cell == "lstm" else (new_hidden,), expected_hidden if cell == "lstm" else (expected_hidden,)):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("packed", [True, False])
def test_a_bf16_step_stays_within_bfloat16_rounding_of_the_fp32_step(cell, packed, monkeypatch):
    from rnnlab.inference import sampling
    if not packed:  # torch without oneDNN's packed product (or a future torch that renamed it): the plain product
        def missing(x, packed):
            raise RuntimeError("No such operator mkldnn::_linear_pointwise")
        monkeypatch.setattr(sampling._Product, "_packed_product", staticmethod(missing))
    torch.manual_seed(0)
    net = RNNLM(ModelConfig(vocab_size=20, cell=cell, hidden=32, embed_dim=16, layers=2)).eval()
    fp32, bf16 = sampling.Stepper(net), sampling.Stepper(net, "bf16")
    assert all((product.packed is not None) == (packed and torch.backends.mkldnn.is_available())
               for product, _, product_hh, _ in bf16.layers for product in (product, product_hh))
    with torch.inference_mode():
        _, _, hidden = net(torch.randint(20, (4, 7)))
        state32, state16 = fp32.begin(hidden), bf16.begin(hidden)
        for _ in range(20):  # the two drift apart only by rounding, step after step
            token = torch.randint(20, (4,))
            logits32, state32 = fp32.step(token, state32)
            logits16, state16 = bf16.step(token, state16)
    assert logits16.dtype == torch.float32 and not torch.equal(logits16, logits32)   # it did run in bfloat16
    assert torch.allclose(logits16, logits32, atol=0.05), (logits16 - logits32).abs().max()
    with pytest.raises(RnnlabError, match="--precision must be one of fp32, bf16"):
        sampling.Stepper(net, "fp16")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_prompts_of_different_lengths_read_together_end_where_each_alone_ends(cell):
    from rnnlab.inference.sampling import Stepper
    torch.manual_seed(0)
    net = RNNLM(ModelConfig(vocab_size=20, cell=cell, hidden=16, embed_dim=8, layers=2)).eval()
    stepper = Stepper(net)
    prompts = [[3, 1, 4, 1, 5], [9], [2, 6, 5], [3, 5, 8, 9, 7, 9, 3]]   # unsorted lengths: order must hold
    with torch.inference_mode():
        logits, state = stepper.prefill(prompts)
        for row, prompt in enumerate(prompts):
            expected, _, hidden = net(torch.tensor([prompt]))
            assert torch.allclose(logits[row], expected[0, -1], atol=1e-5), row
            ends = stepper.end(state)
            for got, want in zip(ends if cell == "lstm" else (ends,), hidden if cell == "lstm" else (hidden,)):
                assert torch.allclose(got[:, row], want[:, 0], atol=1e-5), row


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_batched_generation_steps_every_stream_like_the_module(cell):
    from rnnlab.inference.sampling import sample_ids
    torch.manual_seed(0)
    net = RNNLM(ModelConfig(vocab_size=30, cell=cell, hidden=16, embed_dim=8, layers=3)).eval()
    prompt = torch.randint(30, (4, 6))
    new = torch.stack(list(sample_ids(net, prompt, 15, greedy=True)), dim=1)        # (4, 15)
    seq = prompt
    with torch.inference_mode():
        for _ in range(15):
            logits, _, _ = net(seq)
            seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(seq[:, 6:], new)


@pytest.mark.parametrize("cell, streams, temperature, steps, precision",
                         [("lstm", 1, 1.0, 37, "fp32"), ("lstm", 3, 0.7, 16, "fp32"), ("lstm", 2, 1.3, 5, "fp32"),
                          ("gru", 2, 0.8, 37, "fp32"), ("rnn", 1, 1.0, 20, "fp32"), ("rnn-relu", 2, 0.9, 20, "fp32"),
                          ("lstm", 2, 1.0, 37, "bf16"), ("gru", 2, 0.8, 20, "bf16")])
def test_sampling_in_scripted_blocks_gives_the_tokens_of_step_by_step(cell, streams, temperature, steps, precision,
                                                                     monkeypatch):
    """blocks.py runs BLOCK steps a call in TorchScript: the same draws and the same arithmetic as the
    Python step, so a seed gives the same tokens (across a block's end too: 37 = 16 + 16 + 5), in fp32 and
    with bf16 products on oneDNN's packed weights."""
    from rnnlab.inference import blocks, sampling
    torch.manual_seed(0)
    net = RNNLM(ModelConfig(vocab_size=30, cell=cell, hidden=16, embed_dim=8, layers=3)).eval()
    if precision == "bf16" and sampling.Stepper(net, precision).decoder.packed is None:
        pytest.skip("this torch has no oneDNN packed bf16 product")
    assert blocks.block_stepper(sampling.Stepper(net, precision)) is not None   # the path under test is taken
    prompt = torch.randint(30, (streams, 4))

    def sample() -> torch.Tensor:
        generator = torch.Generator().manual_seed(7)
        return torch.stack(list(sampling.sample_ids(net, prompt, steps, temperature=temperature,
                                                     generator=generator, precision=precision)))  # (steps, streams)
    in_blocks = sample()
    monkeypatch.setattr(sampling, "block_stepper", lambda stepper, compiled=False: None)
    step_by_step = sample()
    assert in_blocks.shape == (steps, streams) and torch.equal(in_blocks, step_by_step)
    assert len(set(in_blocks[:, 0].tolist())) > 3                              # sampled, not stuck on one token


def test_a_scripted_block_takes_forced_tokens_where_given_and_samples_the_rest():
    from rnnlab.inference import blocks, sampling
    torch.manual_seed(0)
    net = RNNLM(ModelConfig(vocab_size=30, cell="lstm", hidden=16, embed_dim=8, layers=2)).eval()
    stepper = sampling.Stepper(net)
    run = blocks.block_stepper(stepper)
    noise = torch.empty(6, 2, 30).exponential_(generator=torch.Generator().manual_seed(3))
    forced = torch.full((6, 2), -1)
    forced[:3, 1] = torch.tensor([5, 0, 2])                                      # row 1 reads a prompt first
    with torch.inference_mode():
        logits, state = torch.zeros(2, 30), stepper.zero_state(2)
        tokens, block_logits, block_state = run(logits, state, noise, torch.tensor([[1.0], [0.8]]), forced)
        for i in range(6):                                                       # the same, one Python step at a time
            token = sampling.gumbel_max(logits, torch.tensor([[1.0], [0.8]]), noise[i].clone())
            token = torch.where(forced[i] >= 0, forced[i], token)
            assert torch.equal(tokens[i], token), i
            logits, state = stepper.step(token, state)
    assert tokens[:3, 1].tolist() == [5, 0, 2]
    assert torch.equal(block_logits, logits)
    assert all(torch.equal(a, b) for layer_a, layer_b in zip(block_state, state) for a, b in zip(layer_a, layer_b))


@pytest.mark.skipif(not shutil.which(os.environ.get("CXX", "g++")), reason="torch.compile needs a C++ compiler")
def test_compiled_blocks_sample_what_the_scripted_blocks_sample(monkeypatch, tmp_path):
    """`compiled=True` (rnnlab generate --compile) runs blocks of COMPILED_BLOCK steps through torch.compile: on the
    same noise, the same tokens and (to float rounding: inductor fuses the gates) the same logits and state as the
    scripted block; through `sample_ids`, the same text for a seed, the last short block scripted. The compile
    really runs (dynamo counts the graph it compiled), and inductor's files go to rnnlab's cache folder."""
    from torch._dynamo.utils import counters
    from rnnlab.inference import blocks, sampling
    monkeypatch.setenv("RNNLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "-")          # so that monkeypatch puts back what was there
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    monkeypatch.setattr(blocks, "COMPILED_BLOCK", 4)           # a small graph: a shorter compile
    monkeypatch.setattr(sampling, "COMPILED_BLOCK", 4)
    torch.manual_seed(0)
    net = RNNLM(ModelConfig(vocab_size=11, cell="lstm", hidden=8, embed_dim=8, layers=2)).eval()
    stepper = sampling.Stepper(net)
    noise = torch.empty(4, 1, 11).exponential_(generator=torch.Generator().manual_seed(3))
    compiled_graphs = counters["stats"]["unique_graphs"]
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("error", RnnlabWarning)            # a failed compile would warn and fall back
        logits, state = torch.randn(1, 11), stepper.zero_state(1)
        fast = blocks.block_stepper(stepper, compiled=True)(logits, state, noise, 0.9)
        scripted = blocks.block_stepper(stepper)(logits, state, noise, 0.9)
        assert counters["stats"]["unique_graphs"] > compiled_graphs
        assert torch.equal(fast[0], scripted[0]) and len(set(fast[0].flatten().tolist())) > 1
        torch.testing.assert_close(fast[1], scripted[1], rtol=1e-5, atol=1e-5)
        for fast_layer, scripted_layer in zip(fast[2], scripted[2]):
            torch.testing.assert_close(fast_layer, scripted_layer, rtol=1e-5, atol=1e-5)

        def sample(compiled: bool) -> list[int]:
            return [int(t) for t in sampling.sample_ids(net, torch.tensor([[1, 2]]), 10, compiled=compiled,
                                                        generator=torch.Generator().manual_seed(5))]
        assert sample(True) == sample(False)                    # 4 + 4 compiled, 2 scripted
    assert any((tmp_path / "cache" / "inductor").rglob("*.cpp"))
    assert {path.name for path in tmp_path.iterdir()} == {"cache"}


def test_a_failed_compile_warns_and_samples_the_scripted_way(monkeypatch):
    from rnnlab.inference import blocks
    def no_compiler():
        def fail(*args):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore")
        return fail
    monkeypatch.setattr(blocks, "_compiled_block", no_compiler)
    monkeypatch.setattr(blocks, "_COMPILE_FAILED", [])
    lm = char_lm()
    expected = lm.generate("ab", length=70, seed=4)
    lm.compiled = True
    failed = r"torch.compile failed .*No working C\+\+ compiler found\); sampling"
    with pytest.warns(RnnlabWarning, match=failed) as caught:
        assert lm.generate("ab", length=70, seed=4) == expected   # 70 = 32 + 32 + 6: the first call fails
        assert lm.generate("ab", length=70, seed=4) == expected
    assert len(caught) == 1                                         # and no later call tries again


def test_compile_says_so_when_the_model_steps_from_python(monkeypatch):
    from rnnlab.inference import sampling
    monkeypatch.setattr(sampling.Stepper, "TABLE_LIMIT", 0)    # a vocabulary too large for the folded table
    lm = char_lm()
    expected = lm.generate("ab", length=40, seed=4)
    lm.compiled = True
    with pytest.warns(RnnlabWarning, match="--compile has no effect on this model: its steps run from Python"):
        assert lm.generate("ab", length=40, seed=4) == expected


@pytest.mark.parametrize("why", ["bf16 unpacked", "one-hot input", "no table", "min cell", "no TorchScript"])
def test_models_the_scripted_block_does_not_cover_step_from_python(why, monkeypatch):
    from rnnlab.inference import blocks, sampling
    if why == "no table":  # a vocabulary too large for the first layer's lookup table
        monkeypatch.setattr(sampling.Stepper, "TABLE_LIMIT", 0)
    if why == "bf16 unpacked":  # a torch without oneDNN's packed product: bf16 on the plain product, step by step
        def missing(x, packed):
            raise RuntimeError("no mkldnn._linear_pointwise")
        monkeypatch.setattr(sampling._Product, "_packed_product", staticmethod(missing))
    if why == "no TorchScript":  # a torch whose torch.jit.script is gone or fails
        def gone(fn):
            raise RuntimeError("torch.jit.script was removed")
        monkeypatch.setattr(torch.jit, "script", gone)
        assert blocks._scripted_block.__wrapped__() is None
        monkeypatch.setattr(blocks, "_scripted_block", blocks._scripted_block.__wrapped__)
    net = RNNLM(ModelConfig(vocab_size=30, cell="minlstm" if why == "min cell" else "lstm", hidden=16, embed_dim=8,
                            layers=2, input="onehot" if why == "one-hot input" else "learned")).eval()
    precision = "bf16" if why == "bf16 unpacked" else "fp32"
    assert blocks.block_stepper(sampling.Stepper(net, precision)) is None
    tokens = list(sampling.sample_ids(net, torch.tensor([[1, 2]]), 5, generator=torch.Generator().manual_seed(0),
                                      precision=precision))
    assert len(tokens) == 5 and all(0 <= int(t) < 30 for t in tokens)


def test_sampling_gives_the_network_back_in_the_mode_it_had():
    lm = char_lm()
    for training in (True, False):
        lm.net.train(training)
        lm.generate("ab", length=5, seed=0)
        assert lm.net.training is training


# -- generation controls: stop strings and repetition ------------------------------------------------


def looping_lm() -> LanguageModel:
    """A char model whose greedy text is one character forever: the output bias strongly favours 'a'."""
    lm = char_lm()
    with torch.no_grad():
        lm.net.decoder.bias.zero_()
        lm.net.decoder.bias[lm.tokenizer.index["a"]] = 20.0
    return lm


def test_stop_ends_the_text_before_the_stop_string_even_across_pieces():
    lm = char_lm()
    free = lm.generate("abc", length=200, seed=3)[3:]
    stop = free[40:43]                                       # three characters that the text does write
    stopped = lm.generate("abc", length=200, seed=3, stop=stop)
    assert stopped == "abc" + free[:free.find(stop)]          # the same text, cut before the stop string
    assert stop not in stopped[3:]
    assert lm.generate("abc", length=200, seed=3, stop=["zzz", stop]) == stopped   # the first of several
    assert lm.generate("abc", length=30, seed=3, stop="never there") == lm.generate("abc", length=30, seed=3)


def test_no_repeat_ngram_never_repeats_an_ngram_and_breaks_a_loop():
    lm = looping_lm()
    assert lm.generate("b", length=30, greedy=True) == "b" + "a" * 30      # the loop it is built to fall into
    text = lm.generate("b", length=60, greedy=True, no_repeat_ngram=4)
    grams = [text[i:i + 4] for i in range(len(text) - 3)]
    assert len(grams) == len(set(grams))                                   # no 4-gram twice, prompt included
    assert "aaaaa" not in text


def test_repetition_penalty_makes_recent_tokens_less_likely():
    lm = looping_lm()
    assert lm.generate("b", length=30, greedy=True, repetition_penalty=1.0) == "b" + "a" * 30
    with torch.no_grad():
        lm.net.decoder.bias[lm.tokenizer.index["a"]] = 2.0     # 'a' leads, but by a margin a penalty can undo
    plain = lm.generate("b", length=2000, seed=0)[1:]
    penalised = lm.generate("b", length=2000, seed=0, repetition_penalty=3.0, repetition_window=8)[1:]
    # 'a' is sampled about 2 times in 5 without the penalty; with it, far less (a frequency over 2,000 draws,
    # so no CPU's rounding moves it across the bound)
    assert penalised.count("a") < 0.7 * plain.count("a")


@pytest.mark.parametrize("options, message", [
    (dict(repetition_penalty=0.5), "--repetition-penalty must be a number >= 1"),
    (dict(repetition_penalty=float("nan")), "--repetition-penalty must be a number >= 1"),
    (dict(repetition_window=0), "--repetition-window must be at least 1"),
    (dict(no_repeat_ngram=-1), "--no-repeat-ngram must be >= 0"),
    (dict(stop=""), "--stop needs a non-empty string"),
    (dict(stop=["ok", ""]), "--stop needs a non-empty string"),
])
def test_bad_generation_controls_are_clear_errors(options, message):
    with pytest.raises(RnnlabError, match=message):
        char_lm().generate("ab", length=5, **options)


def test_the_controls_work_for_the_baselines_too(tmp_path):
    import rnnlab
    from conftest import shakespeare
    from rnnlab.data.corpus import Corpus
    lm = rnnlab.train(Corpus("s", shakespeare(20_000), shakespeare(20_000)), tmp_path / "ng", model="ngram",
                      order=3, progress=False, log=lambda m: None)
    assert "the the" in lm.generate("the", length=100, greedy=True)    # greedy Kneser-Ney falls into a loop
    out = lm.generate("the", length=100, greedy=True, no_repeat_ngram=6)
    grams = [out[i:i + 6] for i in range(len(out) - 5)]
    assert len(grams) == len(set(grams))
    assert "\n" not in lm.generate("the", length=300, seed=1, stop="\n")[3:]


# -- beam search ------------------------------------------------------------------------------------------


def test_beam_of_one_is_greedy_decoding():
    for lm in (char_lm(), word_lm()):
        prompt = "ab" if lm.tokenizer.kind == "char" else "the cat"
        greedy = lm.generate(prompt, length=25, greedy=True)
        beamed = lm.beam(prompt, length=25, width=1)
        assert lm.generate(prompt, length=25, beam=1) == beamed
        eos = "\n"
        # greedy runs on past a line end; a beam ends there
        assert beamed == greedy[:len(beamed)] and (len(beamed) == len(greedy) or beamed.endswith(eos))


def test_a_beam_as_wide_as_every_continuation_finds_the_most_likely_one():
    import itertools
    from rnnlab.inference.beam import beam_search
    lm = char_lm("abcd")                                              # <unk> a b c d: 5 tokens
    prompt = lm.tokenizer.encode("ab").tolist()

    def logprob(continuation):
        ids = torch.tensor([prompt + list(continuation)])
        with torch.no_grad():
            logits = lm.net(ids[:, :-1])[0][0].double().log_softmax(-1)
        return logits[len(prompt) - 1:].gather(-1, ids[0, len(prompt):, None]).sum().item()

    best = max(itertools.product(range(5), repeat=3), key=logprob)    # all 125 continuations of length 3
    assert beam_search(lm.net, prompt, 3, width=125) == list(best)
    narrow = beam_search(lm.net, prompt, 3, width=2)
    assert logprob(narrow) <= logprob(best) + 1e-12


def test_beam_ends_at_a_line_end_and_checks_its_options():
    lm = word_lm()
    assert len(lm.beam("the", length=200, width=3).split()) == 201   # untrained: <eos> never wins, 200 words
    with torch.no_grad():
        lm.net.decoder.bias[lm.tokenizer.eos_id] += 4.0              # now a line end is likely
    text = lm.beam("the", length=200, width=3)
    assert text.endswith("\n") and text.count("\n") == 1 and len(text.split()) < 200
    assert lm.beam("   ", length=5, width=2).startswith("   ")           # a prompt of no words: a line's start
    with pytest.raises(RnnlabError, match="takes no sampling options"):
        lm.generate("the", beam=2, temperature=0.5)
    for options, message in ((dict(width=0), "--beam must be at least 1"),
                             (dict(length_penalty=-1), "--length-penalty must be a number >= 0"),
                             (dict(length=-1), "--length must be >= 0")):
        with pytest.raises(RnnlabError, match=message):
            lm.beam("the", **options)


# -- interactive sessions: the state carried between turns ---------------------------------------------


def test_a_session_carries_the_state_instead_of_rereading_the_conversation():
    from rnnlab.inference.session import Session
    lm = char_lm()
    session = Session(lm)
    session.read("ab")
    first = "".join(session.write(6, greedy=True))
    session.read("cd")
    second = "".join(session.write(6, greedy=True))
    # the same as reading the whole conversation again from the start
    assert lm.generate("ab", length=6, greedy=True) == "ab" + first
    assert lm.generate("ab" + first + "cd", length=6, greedy=True) == "ab" + first + "cd" + second
    session.reset()
    session.read("ab")
    assert "".join(session.write(6, greedy=True)) == first


def test_a_seeded_session_samples_what_generate_samples():
    from rnnlab.inference.session import Session
    lm = char_lm()
    session = Session(lm, seed=5)
    session.read("abc")
    assert "abc" + "".join(session.write(40, temperature=0.8)) == lm.generate("abc", length=40, temperature=0.8, seed=5)


# -- documents: a model of many files starts and stops at a document's edge ------------------------------


def test_generation_starts_at_a_document_and_stops_at_its_end(tmp_path):
    import rnnlab
    from conftest import QUIET, TINY, shakespeare
    from rnnlab.data.tokenizers import END_OF_DOCUMENT
    text = shakespeare(24_000)
    for i in range(6):
        (tmp_path / f"{i}.txt").write_text(text[i * 4000:(i + 1) * 4000])
    lm = rnnlab.train(str(tmp_path), tmp_path / "m", max_steps=3, **TINY, **QUIET)
    assert lm.tokenizer.doc_id is not None
    free = lm.generate("ROMEO", length=300, seed=1, from_start=True)
    assert free.startswith("ROMEO") and END_OF_DOCUMENT not in free
    with torch.no_grad():
        lm.net.decoder.bias[lm.tokenizer.doc_id] += 50.0               # the document ends at once
    assert lm.generate("ROMEO", length=300, seed=1, from_start=True) == "ROMEO"
    one = char_lm()
    with pytest.raises(RnnlabError, match="--from-start needs a model trained on several files"):
        one.generate("ab", length=5, from_start=True)
