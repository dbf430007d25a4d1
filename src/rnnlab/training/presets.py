"""Documented recipes (README, "Results"): `--preset NAME` starts from one and the options a user
gives override it. Torch-free: `rnnlab train --help` lists them."""

from __future__ import annotations

from rnnlab.errors import RnnlabError

PRESETS: dict[str, dict] = {
    # Zaremba, Sutskever & Vinyals 2014, "small" (non-regularised) PTB LSTM. Their loss is summed over
    # 20 time steps, so their lr 1 and clip 5 are lr 20 and clip 0.25 on our mean loss.
    "zaremba-small": dict(level="word", cell="lstm", layers=2, hidden=200, embed_dim=200, batch_size=20, bptt=20,
                          optimizer="sgd", lr=20.0, clip=0.25, init_range=0.1, schedule="step", lr_decay=0.5,
                          decay_start=4, epochs=13),
    # PTB in an hour on 2 CPU cores (issue 15; benchmarks/RESULTS.md: 71.79 test in 30 epochs on an AMX Xeon):
    # Zaremba's "medium" 2x650 size, tied, with AWD-LSTM's locked and embedding dropout set lighter for 20-30
    # epochs instead of hundreds; bf16 (1.7x the fp32 tokens/s on AMX); AdamW at a constant rate (the model is
    # still learning when the hour ends: a cosine stopped it early, 89.91) and an exponential moving average of
    # the weights for validation and the saved model, AWD-LSTM's constant-then-averaged lesson; a stream whose
    # carried state got stuck starts afresh (--state-limit: the loss spiked to 13 nats without it); AdamW's decoupled
    # weight decay at 0.1, not 0.01 (82.52 test with 0.01: small weights learn faster and generalise better). No
    # weight-drop or AR/TAR: their gains come over hundreds of epochs (the ablation table in RESULTS.md).
    "ptb-1h": dict(level="word", cell="lstm", layers=2, hidden=650, embed_dim=650, tie_weights=True,
                   dropout_embed=0.1, dropout_input=0.4, dropout_hidden=0.25, dropout_output=0.4,
                   batch_size=64, bptt=35, optimizer="adamw", lr=3e-3, weight_decay=0.1, schedule="constant",
                   warmup=100, ema=0.999, state_limit=50.0, clip=0.25, precision="bf16", eval_every=830,
                   time_budget=60.0),
    # A book at word level in 5 minutes on 2 CPU cores (issue 15; benchmarks/RESULTS.md): a book of ~250k words
    # overfits within minutes, so the softmax is tied to the embedding (half the parameters of an untied adaptive
    # one, and the better of the two by half: 122 against 240 on Tiny Shakespeare), with embedding dropout and
    # locked dropout (0.5/0.3/0.5: today's faster step fits ~1,600 steps in the 5 minutes, and 0.3/0.2/0.3 overfit
    # in them, 105 against 99 on pydocs); bf16 (the tied full softmax is most of the cost); large batches and a high
    # lr for the steps there are. `rnnlab train FILE --level word` without --preset starts from it.
    "word-5min": dict(level="word", cell="lstm", layers=2, hidden=256, embed_dim=256, tie_weights=True,
                      dropout_embed=0.1, dropout_input=0.5, dropout_hidden=0.3, dropout_output=0.5,
                      batch_size=64, bptt=48, optimizer="adamw", lr=1e-2, warmup=50, schedule="cosine",
                      precision="bf16", eval_every=100, time_budget=5.0),
    # Tiny Shakespeare, char level, on 2 CPU cores (benchmarks/RESULTS.md): bf16 autocast runs a 2x384 LSTM as
    # fast as fp32 runs a 2x256 one; a cosine schedule that ends with the budget; short budgets want a high lr
    # and more, smaller steps.
    "cpu-90s": dict(level="char", cell="lstm", layers=2, hidden=384, embed_dim=128, batch_size=32, bptt=128,
                    optimizer="adamw", lr=1e-2, schedule="cosine", warmup=20, clip=1.0, precision="bf16",
                    eval_every=250, time_budget=1.5),
    "cpu-5min": dict(level="char", cell="lstm", layers=2, hidden=384, embed_dim=128, batch_size=32, bptt=128,
                     optimizer="adamw", lr=6e-3, schedule="cosine", warmup=50, clip=1.0, precision="bf16",
                     eval_every=500, time_budget=5.0),
    # 20 minutes: it overfits after ~8 epochs, so a wider model, an average of its weights (--ema) validated often
    # enough to keep the average's best, and a strong weight decay (1.4078 for 2x512 without averaging; 1.3902 with;
    # 1.3757 with weight decay 0.2 instead of 0.01, on the AMX Xeon).
    "cpu-20min": dict(level="char", cell="lstm", layers=2, hidden=768, embed_dim=128, dropout=0.3, batch_size=64,
                      bptt=128, optimizer="adamw", lr=4e-3, weight_decay=0.2, schedule="cosine", warmup=50,
                      clip=1.0, precision="bf16", ema=0.998, eval_every=250, time_budget=20.0),
}


WORD_DEFAULT = "word-5min"  # the recipe a new word-level run starts from when no --preset is given


def apply_preset(name: str | None, options: dict) -> dict:
    """The preset's settings under the given options (the given ones win)."""
    if name is None:
        return dict(options)
    if name not in PRESETS:
        raise RnnlabError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return {**PRESETS[name], **options}
