"""The `rnnlab` command end to end, and its refusals: one line, non-zero exit, no traceback.

The commands run in-process through `rnnlab.cli.main` (conftest.cli); the few tests at the end start a
real process, where the exit code a shell sees is the point.
"""

import json
import re
import shutil

import pytest
import torch

from conftest import REPO, cli, refused, run_cli, tiny_args


def test_evaluate_json_has_the_documented_keys(tiny_model):
    result = cli("evaluate", tiny_model, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"loss", "perplexity", "bits_per_token", "tokens"}
    assert data["tokens"] > 2000 and abs(data["perplexity"] - 2.718281828 ** data["loss"]) < 1e-6 * data["perplexity"]


def test_evaluate_prints_bits_per_character_for_char_models(tiny_model):
    result = cli("evaluate", tiny_model)
    assert result.returncode == 0 and "bits per character" in result.stdout and "perplexity" in result.stdout
    assert "text:             valid split of the model's corpus" in result.stdout


def test_evaluate_says_which_text_it_scored(tiny_model, text_file):
    whole, tail = cli("evaluate", tiny_model, text_file), cli("evaluate", tiny_model, text_file, "--split", "valid")
    assert f"text:             all of {text_file}" in whole.stdout
    assert f"text:             valid split of {text_file}" in tail.stdout


def test_generate_is_reproducible_with_seed_and_writes_out_file(tiny_model, tmp_path):
    args = ("generate", tiny_model, "--prompt", "ROMEO:", "--length", "60", "--seed", "3")
    first, second = cli(*args, "--out", tmp_path / "o.txt"), cli(*args)
    assert first.returncode == 0 and first.stdout == second.stdout and first.stdout.startswith("ROMEO:")
    assert (tmp_path / "o.txt").read_text().strip() == first.stdout.strip()


def test_generate_precision_bf16_writes_what_the_library_writes_in_bf16(tiny_model):
    import rnnlab
    result = cli("generate", tiny_model, "--prompt", "ROMEO:", "--length", "60", "--seed", "3", "--precision", "bf16")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == rnnlab.load(tiny_model, precision="bf16").generate("ROMEO:", length=60, seed=3)
    wrong = cli("generate", tiny_model, "--precision", "fp16")
    assert wrong.returncode == 2 and "argument --precision: invalid choice: 'fp16'" in wrong.stderr


def test_generate_compile_sets_the_compiled_sampler_and_refuses_what_it_cannot_speed_up(tiny_model, monkeypatch):
    """--compile hands the model to the compiled sampler (blocks.py; its text: test_generate) with the same seed
    and options; the sampler is stubbed here, the compile itself costs seconds."""
    from rnnlab.inference import lm as lm_module
    seen = []

    def sample_ids(net, prompt, steps, *, compiled=False, **options):
        seen.append(compiled)
        yield from (torch.tensor([1]) for _ in range(steps))
    monkeypatch.setattr(lm_module, "sample_ids", sample_ids)
    assert cli("generate", tiny_model, "--length", "5", "--compile").returncode == 0
    assert cli("generate", tiny_model, "--length", "5").returncode == 0
    assert seen == [True, False]
    refused(cli("generate", tiny_model, "--compile", "--precision", "bf16"),
            "--compile runs fp32 steps; drop --precision bf16 or --compile")
    refused(cli("generate", tiny_model, "--compile", "--top-k", "5", "-i"),
            "--compile speeds up plain sampling .* would do nothing with -i, --top-k; drop one or the other")


def test_generate_out_is_not_created_when_generation_fails(tmp_path):
    (tmp_path / "not-a-model").mkdir()
    refused(cli("generate", tmp_path / "not-a-model", "--out", tmp_path / "o.txt"), "not a model directory")
    assert not (tmp_path / "o.txt").exists()
    refused(cli("generate", tmp_path / "not-a-model", "--out", tmp_path / "missing" / "o.txt"), "cannot write --out")


def test_generate_stop_and_repetition_flags(tiny_model, tmp_path):
    free = cli("generate", tiny_model, "--prompt", "ROMEO:", "--length", "200", "--seed", "2").stdout
    stop = free[6:][30:32]
    cut = cli("generate", tiny_model, "--prompt", "ROMEO:", "--length", "200", "--seed", "2", "--stop", stop,
              "--out", tmp_path / "o.txt")
    assert cut.returncode == 0 and cut.stdout == free[:6 + free[6:].find(stop)] + "\n"
    assert (tmp_path / "o.txt").read_text() == cut.stdout
    lines = cli("generate", tiny_model, "--prompt", "ROMEO:", "--length", "200", "--seed", "2", "--stop", "\\n")
    assert lines.stdout.count("\n") == 1                     # \n typed in a shell is a newline
    grams = cli("generate", tiny_model, "--prompt", "ROMEO:", "--length", "200", "--seed", "2", "--greedy",
                "--no-repeat-ngram", "6").stdout.rstrip("\n")
    assert len({grams[i:i + 6] for i in range(len(grams) - 5)}) == len(grams) - 5
    refused(cli("generate", tiny_model, "--repetition-penalty", "0.5"), "--repetition-penalty must be a number >= 1")


def test_generate_beam(tiny_model, tmp_path):
    import rnnlab
    result = cli("generate", tiny_model, "--prompt", "ROMEO:", "--length", "40", "--beam", "3", "--out", tmp_path / "b")
    assert result.returncode == 0
    assert result.stdout == rnnlab.load(tiny_model).beam("ROMEO:", length=40, width=3) + "\n"
    assert (tmp_path / "b").read_text() == result.stdout
    refused(cli("generate", tiny_model, "--beam", "3", "--greedy", "--top-k", "2"),
            "does not combine with --greedy, --top-k")
    refused(cli("generate", tiny_model, "--beam", "0"), "--beam must be at least 1")


def test_interactive_generation_reads_turns_and_commands_until_end_of_input(tiny_model, monkeypatch):
    import io
    monkeypatch.setattr("sys.stdin", io.StringIO("ROMEO:\n/length 7\n/temperature -1\n/greedy on\nJULIET:\n/bogus\n"))
    result = cli("generate", tiny_model, "-i", "--length", "20", "--seed", "1")
    assert result.returncode == 0, result.stderr
    # a char model writes one character a token: 20, a line end, then 7 (/length took effect), a line end
    assert len(result.stdout) == 20 + 1 + 7 + 1 and result.stdout.endswith("\n")
    assert "(length 7)" in result.stderr and "cannot set /temperature -1" in result.stderr
    assert "unknown command /bogus" in result.stderr


def test_warnings_never_run_into_the_generated_text(tiny_model):
    # stdout and stderr into one stream, as on a terminal: the warning has a line of its own
    import contextlib
    import io
    from rnnlab.cli import main
    both = io.StringIO()
    with contextlib.redirect_stdout(both), contextlib.redirect_stderr(both):
        assert main(["generate", str(tiny_model), "--prompt", "a ж€", "--length", "30", "--seed", "1"]) == 0
    lines = both.getvalue().splitlines()
    warned = [line for line in lines if "rnnlab: warning:" in line]
    assert len(warned) == 1 and warned[0].startswith("rnnlab: warning: ") and "'ж'" in warned[0]
    assert lines[0].startswith("a ж€")


def test_num_samples(tiny_model):
    result = cli("generate", tiny_model, "--length", "20", "--num-samples", "3", "--seed", "1")
    assert result.returncode == 0 and result.stdout.count("-" * 40) == 2


def test_info_shows_the_model_card(tiny_model):
    result = cli("info", tiny_model)
    assert result.returncode == 0 and "Results" in result.stdout and "valid" in result.stdout


def test_info_does_not_follow_a_card_that_is_a_link(tiny_model, tmp_path):
    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    (tmp_path / "secret").write_text("not for you\n")
    (model / "README.md").unlink()
    (model / "README.md").symlink_to(tmp_path / "secret")
    result = cli("info", model)
    assert result.returncode == 0 and "not for you" not in result.stdout and '"model"' in result.stdout


def documented_commands() -> set[str]:
    """Every `rnnlab NAME` the README's Commands section names."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`rnnlab ([a-z][a-z-]*)", section))


def test_every_sub_command_is_documented_and_every_documented_one_exists():
    from rnnlab.cli import build_parser
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    assert set(sub.choices) == documented_commands()
    listed = cli("--help")
    assert listed.returncode == 0
    for name in sub.choices:
        assert re.search(rf"^\s+{re.escape(name)}\s", listed.stdout, re.MULTILINE), name


@pytest.mark.parametrize("command", sorted(documented_commands()))
def test_each_sub_command_help_exits_zero(command):
    result = cli(command, "--help")
    assert result.returncode == 0 and result.stdout.startswith(f"usage: rnnlab {command}"), result.stderr


def test_bad_input_is_one_line_and_non_zero(tmp_path, tiny_model):
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
        (("train", tmp_path / "short.txt", "--out", tiny_model), "already holds a model; pass --overwrite"),
        (("generate", tiny_model, "--temperature", "0"), "temperature must be > 0"),
        (("generate", tiny_model, "--top-p", "1.5"), "top-p"),
        (("generate", tiny_model, "--top-k", "0"), "top-k"),
        (("generate", tmp_path / "nope"), "no such model directory"),
        (("evaluate", tmp_path / "folder"), "not a model directory"),
    ]
    for args, pattern in cases:
        refused(cli(*args), pattern)


def test_unknown_level_and_input_are_one_line_errors(text_file):
    refused(cli("train", text_file, "--level", "sentence"), "unknown level 'sentence'")
    refused(cli("train", text_file, "--input", "glove"), "unknown input 'glove'")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
@pytest.mark.parametrize("command", ["train", "evaluate", "generate", "serve"])
def test_device_cuda_without_a_gpu_is_a_one_line_error(command, tiny_model, text_file, tmp_path):
    args = (text_file, "--out", tmp_path / "m", *tiny_args(max_steps=1)) if command == "train" else (tiny_model,)
    refused(cli(command, *args, "--device", "cuda"), r"--device cuda .*no CUDA GPU.*--device cpu")
    refused(cli(command, *args, "--device", "tpu"), "unknown device 'tpu'")
    assert not (tmp_path / "m").exists()  # refused before anything was written


DAMAGE = {
    "missing weights": (lambda d: (d / "model.safetensors").unlink(), "no model.safetensors"),
    "truncated weights": (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:500]),
                          "corrupt"),
    "corrupted weights": (lambda d: (d / "model.safetensors").write_bytes(b"\xff" * 4096), "corrupt"),
    "truncated config": (lambda d: (d / "config.json").write_text((d / "config.json").read_text()[:50]), "not valid JSON"),
    "missing config": (lambda d: (d / "config.json").unlink(), "not a model directory"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_model_directory_is_refused_by_generate_and_evaluate(tiny_model, tmp_path, damage):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    action, pattern = DAMAGE[damage]
    action(broken)
    refused(cli("generate", broken, "--length", "5"), pattern)
    refused(cli("evaluate", broken, "--json"), pattern)


def test_overlong_prompt_is_truncated_with_a_warning(tiny_model):
    result = cli("generate", tiny_model, "--prompt", "the " * 3000, "--length", "5", "--seed", "0")
    assert result.returncode == 0
    assert "rnnlab: warning: the prompt has 12000 tokens; keeping the last 10000" in result.stderr


@pytest.mark.numeric
def test_reference_train_learns_and_samples(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("hello world, this is a tiny text. " * 40)
    result = cli("reference-train", path, "--steps", "300", "--length", "40", "--hidden", "32")
    assert result.returncode == 0, result.stderr
    first, last = map(float, re.search(r"mean loss ([\d.]+) \(first 50 steps\) -> ([\d.]+)", result.stdout).groups())
    # margin: last / first was 0.008-0.015 over 41 runs (seeds x threads x CPU kernels); an RNN that does not learn
    # stays near 1
    assert last < first / 2


@pytest.mark.numeric
def test_hopfield_recalls_the_stored_snippets():
    result = cli("hopfield", "--trials", "2", "--units", "100")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("recalled ") == 3 and "FAILED" not in result.stdout


@pytest.mark.numeric
def test_gradients_writes_json_with_one_norm_per_step_and_a_plot(text_file, tmp_path):
    result = cli("gradients", "--cell", "rnn,gru", "--seq-len", "20", "--batches", "1", "--batch-size", "4",
                 "--hidden", "16", "--corpus", text_file, "--out", tmp_path / "g")
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "g" / "gradients.json").read_text())
    assert set(data) == {"rnn", "gru"} and all(len(norms) == 20 for norms in data.values())
    # at torch's default init the tanh RNN's gradient vanishes: by 3.2-6.3 decades over 20 steps for seeds 0-11
    assert data["rnn"][0] > 100 * data["rnn"][-1]
    assert (tmp_path / "g" / "gradients.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.numeric
def test_gradients_clipping_experiment_diverges_only_without_clipping(text_file, tmp_path):
    # over seeds 0-7, with 1 thread and with 2 threads on AVX2-restricted kernels, the unclipped run diverged at
    # step 5-14 of 30 and the clipped one peaked at 1.0-1.3x its first loss (divergence: 2x)
    result = cli("gradients", "--train-steps", "30", "--seq-len", "30", "--corpus", text_file, "--out", tmp_path / "g")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "diverged at step" in lines[0] and "never diverged" in lines[1]
    assert (tmp_path / "g" / "clipping.png").is_file()


def test_longrange_writes_the_documented_csv(tmp_path):
    result = cli("longrange", "--task", "adding", "--cell", "rnn,gru", "--lengths", "10", "--steps", "20",
                 "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    rows = (tmp_path / "longrange.csv").read_text().splitlines()
    assert rows[0] == "task,cell,length,metric,value,baseline,solved" and len(rows) == 3
    assert (tmp_path / "longrange.png").is_file()


# -- a real process: the exit codes and streams a shell sees ------------------------------------------


def test_the_real_command_exits_zero_on_success_one_on_a_refusal_and_two_on_a_usage_error(text_file, tmp_path):
    # each a new `python -m rnnlab` interpreter, running commands that need no torch (a quick process)
    listed = run_cli("corpora")
    assert listed.returncode == 0 and "tinyshakespeare" in listed.stdout and listed.stderr == ""
    refusal = run_cli("download", "no-such-corpus")
    assert refusal.returncode == 1
    refused(refusal, "unknown corpus 'no-such-corpus'")
    usage = run_cli("train", text_file, "--max-steps", "many")
    assert usage.returncode == 2 and "invalid int value" in usage.stderr and "Traceback" not in usage.stderr


def test_train_reports_on_stderr_saves_on_stdout_and_records_its_command(text_file, tmp_path):
    out = tmp_path / "m"
    trained = cli("train", text_file, "--out", out, *tiny_args(max_steps=2))
    assert trained.returncode == 0, trained.stderr
    assert "parameters" in trained.stderr and f"model saved in {out}" in trained.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["command"].startswith("rnnlab train ") and "--max-steps 2" in config["command"]
