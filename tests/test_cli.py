"""The real `rnnlab` command, end to end, and its refusals: one line, non-zero exit, no traceback."""

import json

import pytest

from conftest import TINY, run_cli


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from conftest import shakespeare
    root = tmp_path_factory.mktemp("cli")
    (root / "corpus.txt").write_text(shakespeare(30_000))
    out = root / "model"
    result = run_cli("train", root / "corpus.txt", "--out", out, "--max-steps", "40", *TINY)
    assert result.returncode == 0, result.stderr
    assert "parameters" in result.stderr and f"model saved in {out}" in result.stdout
    return out


def test_evaluate_json_has_the_documented_keys(model_dir):
    result = run_cli("evaluate", model_dir, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"loss", "perplexity", "bits_per_token", "tokens"}
    assert data["tokens"] > 2000 and abs(data["perplexity"] - 2.718281828 ** data["loss"]) < 1e-6 * data["perplexity"]


def test_evaluate_prints_bits_per_character_for_char_models(model_dir):
    result = run_cli("evaluate", model_dir)
    assert result.returncode == 0 and "bits per character" in result.stdout and "perplexity" in result.stdout


def test_generate_is_reproducible_with_seed_and_writes_out_file(model_dir, tmp_path):
    args = ("generate", model_dir, "--prompt", "ROMEO:", "--length", "60", "--seed", "3")
    first, second = run_cli(*args, "--out", tmp_path / "o.txt"), run_cli(*args)
    assert first.returncode == 0 and first.stdout == second.stdout and first.stdout.startswith("ROMEO:")
    assert (tmp_path / "o.txt").read_text().strip() == first.stdout.strip()


def test_num_samples(model_dir):
    result = run_cli("generate", model_dir, "--length", "20", "--num-samples", "3", "--seed", "1")
    assert result.returncode == 0 and result.stdout.count("-" * 40) == 2


def test_info_shows_the_model_card(model_dir):
    result = run_cli("info", model_dir)
    assert result.returncode == 0 and "Results" in result.stdout and "valid" in result.stdout


def test_help_lists_every_command():
    result = run_cli("--help")
    for command in ("train", "evaluate", "generate", "corpora", "download", "info"):
        assert command in result.stdout


def _refused(result, pattern):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rnnlab: error:"), result.stderr
    assert pytest.importorskip("re").search(pattern, lines[0]), lines[0]


def test_bad_input_is_one_line_and_non_zero(tmp_path, model_dir):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "bin.txt").write_bytes(b"abc\x00\x01\x02")
    (tmp_path / "latin.txt").write_bytes("na\u00efve\n".encode("latin-1"))
    (tmp_path / "short.txt").write_text("too short\n")
    (tmp_path / "folder").mkdir()
    cases = [
        (("train", tmp_path / "missing.txt"), "no such file or folder"),
        (("train", tmp_path / "empty.txt"), "is empty"),
        (("train", tmp_path / "folder"), "no files matching"),
        (("train", tmp_path / "bin.txt"), "binary"),
        (("train", tmp_path / "latin.txt"), r"not valid utf-8 .*offset 2.*--encoding"),
        (("train", tmp_path / "short.txt", "--valid", tmp_path / "short.txt", "--out", tmp_path / "s"), "fewer than one batch"),
        (("train", tmp_path / "short.txt", "--cell", "lstmx"), "unknown cell"),
        (("train", tmp_path / "short.txt", "--optimizer", "rmsprop"), "unknown optimizer"),
        (("train", tmp_path / "short.txt", "--out", model_dir), "already holds a model; pass --overwrite"),
        (("generate", model_dir, "--temperature", "0"), "temperature must be > 0"),
        (("generate", model_dir, "--top-p", "1.5"), "top-p"),
        (("generate", model_dir, "--top-k", "0"), "top-k"),
        (("generate", tmp_path / "nope"), "no such model directory"),
        (("evaluate", tmp_path / "folder"), "not a model directory"),
    ]
    for args, pattern in cases:
        _refused(run_cli(*args), pattern)


def test_unknown_level_and_input_are_one_line_errors(tmp_path, text_file):
    _refused(run_cli("train", text_file, "--level", "sentence"), "unknown level 'sentence'")
    _refused(run_cli("train", text_file, "--input", "glove"), "unknown input 'glove'")


DAMAGE = {
    "missing weights": (lambda d: (d / "model.safetensors").unlink(), "no model.safetensors"),
    "truncated weights": (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:500]),
                          "corrupt"),
    "corrupted weights": (lambda d: (d / "model.safetensors").write_bytes(b"\xff" * 4096), "corrupt"),
    "truncated config": (lambda d: (d / "config.json").write_text((d / "config.json").read_text()[:50]), "not valid JSON"),
    "missing config": (lambda d: (d / "config.json").unlink(), "not a model directory"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_model_directory_is_refused_by_the_real_command(model_dir, tmp_path, damage):
    import shutil
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    action, pattern = DAMAGE[damage]
    action(broken)
    _refused(run_cli("generate", broken, "--length", "5"), pattern)
    _refused(run_cli("evaluate", broken, "--json"), pattern)


def test_overlong_prompt_is_truncated_with_a_warning(model_dir):
    result = run_cli("generate", model_dir, "--prompt", "the " * 3000, "--length", "5", "--seed", "0")
    assert result.returncode == 0
    assert "rnnlab: warning: the prompt has 12000 tokens; keeping the last 10000" in result.stderr


def test_reference_train_learns_and_samples(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("hello world, this is a tiny text. " * 40)
    result = run_cli("reference-train", path, "--steps", "300", "--length", "40", "--hidden", "32")
    assert result.returncode == 0, result.stderr
    first, last = (float(x) for x in result.stdout.split("mean loss ")[1].split(" nats")[0]
                   .replace("(first 50 steps) -> ", "").replace(" (last 50 steps)", "").split())
    assert last < first / 3


def test_hopfield_recalls_the_stored_snippets():
    result = run_cli("hopfield", "--trials", "2", "--units", "100")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("recalled ") == 3 and "FAILED" not in result.stdout


def test_gradients_writes_json_with_one_norm_per_step_and_a_plot(tmp_path):
    result = run_cli("gradients", "--cell", "rnn,gru", "--seq-len", "20", "--batches", "1", "--batch-size", "4",
                     "--hidden", "16", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "gradients.json").read_text())
    assert set(data) == {"rnn", "gru"} and all(len(norms) == 20 for norms in data.values())
    assert data["rnn"][0] > data["rnn"][-1]  # at torch's default init the tanh RNN's gradient vanishes
    assert (tmp_path / "gradients.png").read_bytes()[:4] == b"\x89PNG"


def test_gradients_clipping_experiment_diverges_only_without_clipping(tmp_path):
    result = run_cli("gradients", "--train-steps", "30", "--seq-len", "30", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "diverged at step" in lines[0] and "never diverged" in lines[1]
    assert (tmp_path / "clipping.png").is_file()


def test_longrange_writes_the_documented_csv(tmp_path):
    result = run_cli("longrange", "--task", "adding", "--cells", "rnn,gru", "--lengths", "10", "--steps", "20",
                     "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    rows = (tmp_path / "longrange.csv").read_text().splitlines()
    assert rows[0] == "task,cell,length,metric,value,baseline,solved" and len(rows) == 3
    assert (tmp_path / "longrange.png").is_file()
