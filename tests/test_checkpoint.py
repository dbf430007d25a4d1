import json
import os
import shutil

import pytest
import torch

from rnnlab.models import checkpoint
from rnnlab.errors import RnnlabError
from rnnlab.inference.loading import load
from rnnlab.models.config import ModelConfig
from rnnlab.models.rnnlm import RNNLM
from rnnlab.data.tokenizers import CharTokenizer


def make_dir(path, tie=False):
    tok = CharTokenizer.fit("hello world\n")
    net = RNNLM(ModelConfig(vocab_size=tok.vocab_size, hidden=8, embed_dim=8, tie_weights=tie))
    config = {"model_type": "rnn", "model": net.config.to_dict()}
    path.mkdir()
    checkpoint.save_checkpoint(path, net, {"step": 3, "w": torch.ones(2)}, config, tok.to_dict())
    return net


@pytest.mark.parametrize("tie", [False, True])
def test_weights_round_trip_exactly(tmp_path, tie):
    net = make_dir(tmp_path / "m", tie)
    lm = load(tmp_path / "m")
    for (name, a), (_, b) in zip(net.state_dict().items(), lm.net.state_dict().items()):
        assert torch.equal(a, b), name
    assert (lm.net.decoder.weight is lm.net.encoder.weight) == tie


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


@pytest.mark.parametrize("tie", [False, True])
def test_weights_packed_into_one_buffer_as_cudnn_does_save_and_load(tmp_path, tie):
    """On a GPU cuDNN makes an LSTM's weights views of one flat buffer, which safetensors refuses to write
    ("None is covering the entire storage"; found on an H200). The same packing, made here by hand on the CPU."""
    tok = CharTokenizer.fit("hello world\n")
    config = ModelConfig(vocab_size=tok.vocab_size, cell="lstm", layers=2, hidden=8, embed_dim=8, tie_weights=tie)

    def packed(net):
        params = list(net.rnn.parameters())
        flat = torch.cat([p.detach().flatten() for p in params])
        offset = 0
        for p in params:
            p.data = flat[offset:offset + p.numel()].view_as(p)
            offset += p.numel()
        return net, flat

    net, flat = packed(RNNLM(config))
    assert checkpoint.packs_weights(net)
    path = tmp_path / "m"
    path.mkdir()
    checkpoint.save_checkpoint(path, net, {"step": 1}, {"model_type": "rnn", "model": net.config.to_dict()},
                               tok.to_dict())
    lm = load(path)
    assert_same_weights(net, lm.net)
    assert (lm.net.decoder.weight is lm.net.encoder.weight) == tie
    assert net.rnn.weight_hh_l0.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr()  # left as it was
    torch.manual_seed(1)
    other, other_flat = packed(RNNLM(config))     # loading into a packed model (training reloads its best weights)
    checkpoint.load_weights(other, path)
    assert_same_weights(net, other)
    assert other.rnn.weight_hh_l0.untyped_storage().data_ptr() == other_flat.untyped_storage().data_ptr()


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    make_dir(tmp_path / "m")
    state = {"step": 1}
    net = RNNLM(ModelConfig(vocab_size=14, hidden=8, embed_dim=8))
    checkpoint.save_last(tmp_path / "m", net, state, {}, {"type": "char", "vocab": []})
    checkpoint.save_last(tmp_path / "m", net, state, {}, {"type": "char", "vocab": []})
    assert (tmp_path / "m" / "last" / "model.safetensors").is_file()
    assert not any(p.name.startswith(".") for p in (tmp_path / "m").rglob("*"))


def test_training_state_loads_with_weights_only(tmp_path, monkeypatch):
    make_dir(tmp_path / "m")
    calls = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or real(*a, **k))
    assert checkpoint.load_state(tmp_path / "m")["step"] == 3
    assert calls and all(k.get("weights_only") is True for k in calls)


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    make_dir(tmp_path / "m")

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    torch.save({"step": Evil()}, tmp_path / "m" / checkpoint.STATE)
    with pytest.raises(RnnlabError, match="corrupt"):
        checkpoint.load_state(tmp_path / "m")
    assert not (tmp_path / "pwned").exists()


def test_resume_dir_falls_back_to_last_old_after_a_crash_mid_swap(tmp_path):
    make_dir(tmp_path / "m")
    net = RNNLM(ModelConfig(vocab_size=14, hidden=8, embed_dim=8))
    checkpoint.save_last(tmp_path / "m", net, {"step": 5}, {}, {})
    os.replace(tmp_path / "m" / "last", tmp_path / "m" / "last.old")  # the crash: old moved, new not yet in
    assert checkpoint.resume_dir(tmp_path / "m") == tmp_path / "m" / "last.old"


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "model.safetensors").unlink(), "no model.safetensors"),
    (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:100]), "corrupt"),
    (lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 64), "corrupt"),
    (lambda d: (d / "config.json").write_text('{"format_version": 1, "model'), "not valid JSON"),
    (lambda d: (d / "config.json").unlink(), "not a model directory"),
    (lambda d: (d / "config.json").write_text(json.dumps({"format_version": 99})), "newer rnnlab"),
    (lambda d: (d / "tokenizer.json").unlink(), "no tokenizer.json"),
    (lambda d: shutil.rmtree(d) or d.write_text("x"), "is a file"),
])
def test_damaged_model_directories_get_clear_errors(tmp_path, damage, message):
    make_dir(tmp_path / "m")
    damage(tmp_path / "m")
    with pytest.raises(RnnlabError, match=message):
        load(tmp_path / "m")


def test_weights_of_another_shape_are_refused(tmp_path):
    make_dir(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["model"]["hidden"] = 16
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(RnnlabError, match="does not match config.json"):
        load(tmp_path / "m")


def test_out_dir_with_a_model_is_never_clobbered(tmp_path):
    make_dir(tmp_path / "m")
    before = (tmp_path / "m" / "model.safetensors").read_bytes()
    with pytest.raises(RnnlabError, match="already holds a model; pass --overwrite"):
        checkpoint.NewModelDir(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == before


def test_every_file_of_a_model_directory_gets_the_permissions_open_would_give(tmp_path):
    from rnnlab.files import FILE_MODE                  # 0666 less the umask
    make_dir(tmp_path / "m")
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "m").iterdir() if p.is_file()}
    assert set(modes.values()) == {FILE_MODE}, modes   # safetensors alone used to come out 0600


@pytest.mark.parametrize("options", [
    dict(cell="lstm", hidden=64, embed_dim=32, layers=2),
    dict(cell="gru", hidden=48, embed_dim=48, layers=3, tie_weights=False),
    dict(cell="rnn", hidden=40, input="onehot"),
    dict(cell="lstm", hidden=64, embed_dim=32, softmax="adaptive", cutoffs=(2000, 10_000)),
    dict(cell="mingru", hidden=64, embed_dim=32),
])
def test_the_parameter_estimate_bounds_the_real_count_closely(options):
    # the memory checks and the weights-file check use it: it must not undercount (a model that fits would
    # be refused... or one that does not, let through), and must stay close (adaptive softmax included)
    from rnnlab.models.config import ModelConfig
    from rnnlab.models.rnnlm import RNNLM
    config = ModelConfig(vocab_size=50_000, **options)
    with torch.device("meta"):
        real = sum(p.numel() for p in RNNLM(config).parameters())
    assert real <= config.approx_parameters() <= 1.1 * real, (real, config.approx_parameters())
