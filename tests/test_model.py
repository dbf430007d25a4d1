import pytest
import torch
import torch.nn.functional as F

from rnnlab.errors import RnnlabError
from rnnlab.models.config import ModelConfig
from rnnlab.models.rnnlm import RNNLM


@pytest.mark.parametrize("cell", ["rnn", "rnn-relu", "lstm", "gru"])
def test_forward_shapes_and_loss_is_mean_cross_entropy(cell):
    net = RNNLM(ModelConfig(vocab_size=11, cell=cell, hidden=8, embed_dim=6, layers=2))
    idx, targets = torch.randint(11, (3, 5)), torch.randint(11, (3, 5))
    logits, loss, hidden = net(idx, targets=targets)
    assert logits.shape == (3, 5, 11)
    assert torch.allclose(loss, F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1)))
    h = hidden[0] if cell == "lstm" else hidden
    assert h.shape == (2, 3, 8)


def test_hidden_state_carries_across_calls():
    net = RNNLM(ModelConfig(vocab_size=7, cell="gru", hidden=8, embed_dim=4))
    idx = torch.randint(7, (2, 10))
    whole, _, _ = net(idx)
    first, _, hidden = net(idx[:, :4])
    second, _, _ = net(idx[:, 4:], hidden)
    assert torch.allclose(torch.cat([first, second], 1), whole, atol=1e-6)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_onehot_input_is_the_textbook_product_with_a_onehot_vector(cell):
    """W x_t with x_t one-hot, computed by an nn.RNN that really multiplies one-hot vectors."""
    V, H = 9, 5
    net = RNNLM(ModelConfig(vocab_size=V, cell=cell, input="onehot", hidden=H, layers=1)).double()
    reference = type(net.rnn)(V, H, batch_first=True, **({"nonlinearity": "tanh"} if cell == "rnn" else {})).double()
    with torch.no_grad():
        reference.weight_ih_l0.copy_(net.encoder.weight.T)     # W: (gates*H, V), column i = table row i
        reference.bias_ih_l0.zero_()
        reference.weight_hh_l0.copy_(net.rnn.weight_hh_l0)
        reference.bias_hh_l0.copy_(net.rnn.bias_hh_l0)
    idx = torch.randint(V, (2, 6))
    ours, _ = net.rnn(net.encoder(idx))
    theirs, _ = reference(F.one_hot(idx, V).double())
    assert torch.allclose(ours, theirs, atol=1e-12)
    assert not net.rnn.weight_ih_l0.requires_grad


def test_tied_weights_share_one_tensor_and_count_once():
    tied = RNNLM(ModelConfig(vocab_size=50, hidden=16, embed_dim=16, tie_weights=True))
    untied = RNNLM(ModelConfig(vocab_size=50, hidden=16, embed_dim=16))
    assert tied.decoder.weight is tied.encoder.weight
    assert untied.num_parameters() - tied.num_parameters() == 50 * 16


@pytest.mark.parametrize("options, message", [
    ({"cell": "transformer"}, "unknown cell"), ({"input": "glove"}, "unknown input"),
    ({"hidden": 0}, "hidden must be at least 1"), ({"dropout": 1.5}, "dropout"),
    ({"tie_weights": True, "hidden": 8, "embed_dim": 4}, "tie-weights"),
])
def test_bad_model_options_are_clear_errors(options, message):
    with pytest.raises(RnnlabError, match=message):
        ModelConfig(vocab_size=10, **options)


@pytest.mark.parametrize("cell", ["rnn", "rnn-relu", "lstm", "gru"])
@pytest.mark.parametrize("input", ["learned", "onehot"])
def test_explicit_impl_is_a_drop_in_for_the_torch_kernels(cell, input):
    config = dict(vocab_size=13, cell=cell, input=input, hidden=8, embed_dim=6, layers=2)
    fast, explicit = RNNLM(ModelConfig(**config)).double(), RNNLM(ModelConfig(**config, impl="explicit")).double()
    explicit.load_state_dict(fast.state_dict())
    idx = torch.randint(13, (3, 7))
    assert torch.allclose(fast(idx)[0], explicit(idx)[0], atol=1e-12)


def test_adaptive_softmax_loss_matches_its_log_probabilities():
    torch.manual_seed(0)
    net = RNNLM(ModelConfig(vocab_size=3000, hidden=16, embed_dim=16, layers=1, softmax="adaptive", cutoffs=(100, 1000)))
    idx, targets = torch.randint(3000, (2, 7)), torch.randint(3000, (2, 7))
    logits, loss, _ = net(idx, targets=targets)
    assert logits is None
    log_probs, _, _ = net(idx)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(2, 7), atol=1e-5)      # a distribution over V
    expected = -log_probs.reshape(-1, 3000).gather(1, targets.reshape(-1, 1)).mean()
    assert torch.allclose(loss, expected, atol=1e-5)
    with pytest.raises(RnnlabError, match="too small for --softmax adaptive"):
        ModelConfig(vocab_size=500, softmax="adaptive")


@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
def test_parallel_scan_cells_train_and_generate_one_step_at_a_time(cell):
    torch.manual_seed(0)
    net = RNNLM(ModelConfig(vocab_size=11, cell=cell, hidden=8, embed_dim=6, layers=2)).double()
    idx = torch.randint(11, (2, 9))
    whole, _, _ = net(idx)
    hidden, steps = None, []
    for t in range(9):  # generation's path: one token at a time with the carried state
        logits, _, hidden = net(idx[:, t:t + 1], hidden)
        steps.append(logits)
    assert torch.allclose(torch.cat(steps, 1), whole, atol=1e-10)
    _, loss, _ = net(idx, targets=idx)
    loss.backward()
    assert all(p.grad is not None for p in net.rnn.parameters())


def test_learned_embeddings_start_at_unit_scale_unless_an_init_range_is_given():
    torch.manual_seed(0)
    default = RNNLM(ModelConfig(vocab_size=500, cell="lstm", hidden=16, embed_dim=64))
    assert 0.9 < default.encoder.weight.std().item() < 1.1                     # torch's N(0, 1)
    zaremba = RNNLM(ModelConfig(vocab_size=500, cell="lstm", hidden=16, embed_dim=64, init_range=0.05))
    for p in (zaremba.encoder.weight, *zaremba.rnn.parameters()):
        assert p.abs().max().item() <= 0.05
    onehot = RNNLM(ModelConfig(vocab_size=500, cell="lstm", hidden=16, input="onehot"))
    assert onehot.encoder.weight.abs().max().item() <= 0.1                     # a weight matrix, not vectors


@pytest.mark.numeric
def test_adaptive_softmax_runs_under_bf16_autocast():
    torch.manual_seed(0)
    net = RNNLM(ModelConfig(vocab_size=3000, hidden=16, embed_dim=16, layers=2, softmax="adaptive", cutoffs=(100, 1000)))
    idx, targets = torch.randint(3000, (2, 7)), torch.randint(3000, (2, 7))
    _, fp32_loss, _ = net(idx, targets=targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, loss, _ = net(idx, targets=targets)
    loss.backward()
    # margin: |loss - fp32 loss| / fp32 loss was at most 1.4e-5 across CPU kernels
    assert loss.dtype == torch.float32 and torch.isclose(loss, fp32_loss, rtol=0.02)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.adaptive.parameters())


def test_lstm_runs_in_fp32_under_bf16_autocast_on_a_cpu_without_a_bf16_lstm_kernel(monkeypatch):
    # AVX2-only CPUs (and ONEDNN_MAX_CPU_ISA=AVX2) have no oneDNN bf16 LSTM: nn.LSTM raises under autocast
    import rnnlab.models.rnnlm
    monkeypatch.setattr(rnnlab.models.rnnlm, "cpu_lstm_runs_in_bf16", lambda: False)
    torch.manual_seed(0)
    net = RNNLM(ModelConfig(vocab_size=50, cell="lstm", hidden=16, embed_dim=8, layers=2))
    idx, targets = torch.randint(50, (2, 7)), torch.randint(50, (2, 7))
    _, fp32_loss, _ = net(idx, targets=targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss, (h, c) = net(idx, targets=targets)
    loss.backward()
    assert h.dtype == c.dtype == torch.float32 and logits.dtype == torch.bfloat16   # the softmax layer in bf16
    assert torch.isclose(loss, fp32_loss, rtol=0.02)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.rnn.parameters())
