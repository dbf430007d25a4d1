"""`rnnlab.train`: the whole pipeline, in the order it runs.

    options ─► resume reconciled ─► corpus read and tokenised ─► model built ─► Trainer.fit ─► best model scored, card written
                                                               └► a baseline (--model hmm|ngram) fits and saves in one go

Each stage is a function of its own below; `train()` reads top to bottom as the list above.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from rnnlab.data import tokencache
from rnnlab.data.corpus import Corpus, load_corpus
from rnnlab.data.streaming import TextStream, wants_stream
from rnnlab.data.tokenizers import build_tokenizer, tokenizer_from_dict
from rnnlab.devices import pick_device
from rnnlab.errors import RnnlabError, RnnlabWarning
from rnnlab.files import reported_write_errors, write_json, write_text
from rnnlab.inference.lm import LanguageModel
from rnnlab.models import checkpoint
from rnnlab.models.config import ModelConfig, memory_bytes
from rnnlab.models.rnnlm import RNNLM, cpu_lstm_runs_in_bf16
from rnnlab.training import distributed, finetune
from rnnlab.training.card import model_card, score_splits
from rnnlab.training.config import (BaselineConfig, DataConfig, EmbeddingConfig, TrainConfig, field_names,
                                    split_options)
from rnnlab.training.presets import WORD_DEFAULT, apply_preset
from rnnlab.training.trainer import Trainer, seed_everything
from rnnlab.version import __version__

_TOKENIZER_OPTIONS = ("level", "max_vocab", "min_freq", "lowercase")
_CORPUS_OPTIONS = ("valid", "test", "valid_fraction", "glob", "encoding", "pretokenized")


@dataclass
class Options:
    """The options of one run, sorted by what they configure (the model's and the loop's as given:
    they become configs once the vocabulary is known and a resumed run's settings are merged in)."""
    model: dict
    train: dict
    data: DataConfig
    embedding: EmbeddingConfig
    baseline: BaselineConfig

    @classmethod
    def from_kwargs(cls, preset: str | None, options: dict) -> Options:
        options = apply_preset(preset, options)
        if options.get("embedding") == "onehot":
            options["input"] = "onehot"
        model, train, data, embedding, baseline = split_options(
            options, ModelConfig, TrainConfig, DataConfig, EmbeddingConfig, BaselineConfig)
        if "vocab_size" in model:
            raise RnnlabError("vocab_size comes from the tokenizer; use --max-vocab to cap the vocabulary")
        return cls(model, train, DataConfig(**data), EmbeddingConfig(**embedding), BaselineConfig(**baseline))


def train(corpus: str | list[str] | Corpus | None = None, out: str | Path | None = None, *,
          resume: str | Path | None = None, preset: str | None = None, overwrite: bool = False,
          init_from: str | Path | None = None, keep_vocab: bool = False, extend_vocab: int = 0,
          progress: bool = True, command: str | None = None, log=None, tokenizer=None, on_metrics=None,
          **options) -> LanguageModel:
    """Train a recurrent language model (or a baseline) and return it: the best checkpoint.

    `corpus` is a named corpus ("pydocs", "tinyshakespeare", "ptb", "wikitext-2"), a path or list of
    paths, or a `Corpus`. `options` are the fields of `ModelConfig` (cell, hidden, layers, ...),
    `TrainConfig` (lr, batch_size, bptt, epochs, time_budget, ...), `DataConfig` (level, max_vocab,
    valid, ...), `EmbeddingConfig` (embedding="word2vec" or a vectors file, ...) and
    `BaselineConfig` (model="hmm" or "ngram", states, order, ...). `preset` starts from a documented
    recipe. With `resume`, the run in that directory continues from its last checkpoint, on its own
    corpus unless one is given. With `init_from`, a new run starts from that model's weights and
    tokenizer (fine-tuning; `keep_vocab`, `extend_vocab`: see training/finetune.py). `tokenizer`
    replaces the one fitted on the training split. `on_metrics` is called with each record the
    training curve (metrics.jsonl) gets, e.g. `studies.plots.LiveCurves()` to watch it in a notebook.
    """
    log = log or (lambda message: tqdm.write(message, file=sys.stderr))
    if resume is None and init_from is None and distributed.restart_count() and out is not None \
            and (Path(out) / checkpoint.CONFIG).is_file():
        # torchrun --max-restarts started this command again after a failure: continue, never start over
        log(f"torchrun restarted the job (restart {distributed.restart_count()}): resuming {out} from its last "
            f"checkpoint")
        resume, out = out, None
    if preset is None and options.get("level") == "word" and resume is None and init_from is None \
            and options.get("model", "rnn") == "rnn" and not set(options) & RECIPE_OPTIONS:
        preset = WORD_DEFAULT  # a new word-level RNN given no recipe starts from the measured 5-minute one
        log(f"word level without a recipe: starting from --preset {WORD_DEFAULT} (README: Presets)")
    run = Options.from_kwargs(preset, options)
    saved = parent = None
    if resume is not None:
        if init_from is not None:
            raise RnnlabError("--resume continues a run; --init-from starts a new one from a model: pass one of them")
        out = resume_dir(resume, out)
        saved = reconcile_resume(out, run, corpus_given=corpus is not None)
    elif init_from is not None:
        if run.baseline.model != "rnn":
            raise RnnlabError("--init-from fine-tunes an RNN; the baselines train from scratch")
        parent = finetune.load_parent(init_from)
        run.model = finetune.check_options(parent, run.model, run.data, pretrained=run.embedding.pretrained)
    elif keep_vocab or extend_vocab:
        raise RnnlabError("--keep-vocab and --extend-vocab go with --init-from MODEL")
    corpus = read_corpus(corpus, run.data, saved, progress)
    if isinstance(corpus, TextStream) and (parent is not None or run.baseline.model != "rnn"
                                           or run.embedding.embedding == "word2vec"):
        raise RnnlabError("fine-tuning, the baselines and word2vec read their corpus in memory; a streamed corpus "
                          "(--stream, or over 256 MB) trains a new or resumed RNN only")
    if saved is not None:
        tokenizer = tokenizer_from_dict(checkpoint.read_tokenizer_dict(out))
    added = []
    if parent is not None:
        tokenizer, added = finetune.tokenizer_for(parent, corpus.train, keep_vocab=keep_vocab,
                                                  extend_vocab=extend_vocab, log=log)
    tokens = tokenise(corpus, run.data, tokenizer, log, known=(saved or {}).get("corpus", {}).get("store"),
                      progress=progress)
    tokenizer, ids = tokens.tokenizer, tokens.ids
    if parent is not None:
        train_ids = ids["train"]  # tokens the model already knew: below its vocabulary size, and not <unk>
        known = (train_ids < parent.tokenizer.vocab_size) & ~np.isin(train_ids, tokenizer.unknown_ids)
        log(f"fine-tuning {parent.path} ({(parent.config.get('corpus') or {}).get('name')}, "
            f"{parent.config.get('steps')} steps): its vocabulary covers {100 * float(np.mean(known)):.1f}% of the "
            f"new training tokens" + (f"; {len(added)} added" if added else ""))

    if run.baseline.model != "rnn":
        return train_baseline(corpus, out, tokens, run, overwrite=overwrite, command=command, log=log)
    return train_rnn(corpus, out, tokens, run, saved, overwrite=overwrite,
                     progress=progress, command=command, log=log, parent=parent, on_metrics=on_metrics,
                     lineage=finetune.lineage(parent, added) if parent is not None else None)


# The options that make a recipe (a word-level run given none of them starts from WORD_DEFAULT): every
# model and training-loop setting but how long to train, how often to report, the seed and the device
RECIPE_OPTIONS = ({f.name for f in fields(ModelConfig)} | {f.name for f in fields(TrainConfig)}) - {
    "vocab_size", "seed", "device", "time_budget", "max_steps", "epochs", "patience", "eval_every", "save_every",
    "sample_every", "log_every", "eval_batch_size", "precision"}


# ---------------------------------------------------------------------------------------------
# stages


def resume_dir(resume: str | Path, out: str | Path | None) -> Path:
    """The model directory a resume continues in: the one given, itself (not its last/ checkpoint)."""
    resume = Path(resume)
    if resume.name == checkpoint.LAST and (resume.parent / checkpoint.CONFIG).is_file():
        raise RnnlabError(f"{resume} is the latest checkpoint inside {resume.parent}; resume with --resume "
                          f"{resume.parent}")
    if out is not None and Path(out).resolve() != resume.resolve():
        raise RnnlabError(f"--resume continues the run in {resume} itself; drop --out {out} (or copy the folder "
                          f"and resume the copy)")
    return resume


def reconcile_resume(out: Path, run: Options, *, corpus_given: bool) -> dict:
    """The saved run's settings for a resume: options that would change the model are refused (one
    message naming all of them); the tokenizer options are the saved ones, and so are the corpus
    options unless a corpus is given."""
    saved = checkpoint.read_config(out)
    if saved.get("model_type", "rnn") != "rnn":
        raise RnnlabError(f"{out} holds a {saved.get('model_type')} baseline; baselines train in one go "
                          f"and cannot be resumed (train it again with --overwrite)")
    checkpoint.recorded_sections(saved, out, "model", "tokenizer", "train")
    clashes = [f"--{k.replace('_', '-')} {v} (the run has {saved['model'][k]})"
               for k, v in run.model.items()
               if k in saved["model"] and saved["model"][k] != (list(v) if isinstance(v, tuple) else v)]
    tok = saved["tokenizer"]
    clashes += [f"--{k.replace('_', '-')} {getattr(run.data, k)} (the run has {tok[k]})"
                for k in _TOKENIZER_OPTIONS if getattr(run.data, k) is not None and tok.get(k) != getattr(run.data, k)]
    if run.embedding.pretrained:
        clashes.append(f"--embedding {run.embedding.embedding} (pretrained vectors only initialise a new model)")
    if clashes:
        raise RnnlabError(f"--resume {out} is a different model: {'; '.join(clashes)}; "
                          f"drop those options or train a new model with --out")
    checkpoint.recorded_corpus(saved, out, sources=not corpus_given)
    corpus = saved["corpus"] if not corpus_given else {k: getattr(run.data, k) for k in _CORPUS_OPTIONS}
    run.data = DataConfig(**{k: tok.get(k) for k in _TOKENIZER_OPTIONS},
                          **{k: corpus.get(k) for k in _CORPUS_OPTIONS if k != "pretokenized"},
                          pretokenized=corpus.get("pretokenized"), cache=run.data.cache,
                          stream=saved["corpus"].get("stream", False) if not corpus_given else run.data.stream)
    return saved


def read_corpus(corpus, data: DataConfig, saved: dict | None, progress: bool) -> Corpus | TextStream:
    """The corpus in memory, or as a TextStream (streaming.py) when it is large or --stream says so."""
    if corpus is None and saved is not None:
        corpus = saved["corpus"]["sources"]
    if corpus is None:
        raise RnnlabError("no corpus given; pass a file, a folder, or a named corpus such as pydocs")
    if isinstance(corpus, (Corpus, TextStream)):
        return corpus
    sources = [corpus] if isinstance(corpus, (str, Path)) else list(corpus)
    sources = [str(source) for source in sources]
    if wants_stream(sources, data.glob or "*.txt", data.stream):
        if not data.cache:
            raise RnnlabError("a streamed corpus (--stream, or over 256 MB) is read from the token store; "
                              "drop --no-cache")
        options = {k: v for k, v in data.corpus_options().items() if v is not None}
        return TextStream(tuple(sources), **options)
    # a run recorded before rnnlab marked the ends of files read its files run together
    documents = saved is None or saved["corpus"].get("documents", False)
    return load_corpus(corpus, progress=progress, documents=documents,
                       **{k: v for k, v in data.corpus_options().items() if v is not None})


def tokenise(corpus: Corpus | TextStream, data: DataConfig, tokenizer, log, *, known: str | None = None,
             progress: bool = True) -> tokencache.Tokens:
    """The corpus tokenised (from the token store when it is there). Tokenised corpora (PTB, WikiText-2) are
    word-level unless told otherwise. `known`: a resumed run's store entry."""
    level = data.level or ("word" if corpus.pretokenized else "char")
    settings = dict(level=level, **data.vocab_settings(level), pretokenized=corpus.pretokenized)
    if isinstance(corpus, TextStream):
        tokens = tokencache.encode_stream(corpus, settings, tokenizer=tokenizer, known=known, progress=progress,
                                          log=log)
    else:
        def fit():  # only on a miss
            return build_tokenizer(train_text=corpus.train, **settings)
        tokens = tokencache.encode_corpus(corpus, settings, fit, tokenizer=tokenizer, cache=data.cache, log=log)
    tokenizer, unknown = tokens.tokenizer, tokens.unknown_fraction
    if unknown > 0.5:
        vocab = data.vocab_settings(level)
        warnings.warn(f"{unknown:.0%} of the training tokens are <unk> (vocabulary {tokenizer.vocab_size:,}: --max-vocab "
                      f"{vocab['max_vocab']}, --min-freq {vocab['min_freq']}); a model that predicts <unk> well says "
                      f"little about the text: lower --min-freq or raise --max-vocab", RnnlabWarning, stacklevel=2)
    return tokens


def default_out(corpus: Corpus | TextStream, what: str) -> Path:
    return Path("runs") / f"{corpus.name.replace(', ', '+').replace('/', '_')}-{what}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_record(corpus: Corpus | TextStream, tokens: tokencache.Tokens, data: DataConfig, command: str | None) -> dict:
    """What config.json records of the data: enough to find the corpus again and to check it is the same."""
    train_ids, valid_ids, test_ids = tokens.ids["train"], tokens.ids["valid"], tokens.ids["test"]
    streamed = isinstance(corpus, TextStream)
    return {
        "tokenizer": {"level": tokens.tokenizer.kind, **data.vocab_settings(tokens.tokenizer.kind)},
        "corpus": {"name": corpus.name, "sources": list(corpus.sources), "valid": data.valid, "test": data.test,
                   "valid_fraction": data.valid_fraction, "glob": data.glob, "encoding": data.encoding,
                   "pretokenized": corpus.pretokenized, "documents": True,
                   **({"stream": True, "store": tokens.key} if streamed else {}),
                   "train_sha256": tokens.train_sha256,
                   "train_tokens": len(train_ids), "valid_tokens": None if valid_ids is None else len(valid_ids),
                   "test_tokens": None if test_ids is None else len(test_ids)},
        "command": command or "",
    }


def train_baseline(corpus: Corpus, out, tokens: tokencache.Tokens, run: Options, *, overwrite: bool, command, log):
    from rnnlab.training.baselines import fit_baseline
    tokenizer, ids = tokens.tokenizer, tokens.ids
    ModelConfig(vocab_size=tokenizer.vocab_size, **run.model)  # options given for an RNN are still checked
    train_config = TrainConfig(**run.train)
    run_dir = checkpoint.NewModelDir(Path(out or default_out(corpus, run.baseline.model)), overwrite=overwrite)
    path = run_dir.create()
    log(f"corpus: {corpus.name} | {tokenizer.kind} level | vocab {tokenizer.vocab_size:,} | "
        f"train {len(ids['train']):,} tokens | valid {0 if ids['valid'] is None else len(ids['valid']):,}")
    b = run.baseline
    log(f"model: {b.model} ({f'{b.states} states' if b.model == 'hmm' else f'order {b.order}'}) | writing to "
        f"{run_dir.shown}")
    try:
        with reported_write_errors(run_dir.shown):
            model = fit_baseline(b.model, path, tokenizer, ids["train"], ids["valid"], ids["test"],
                                 run_record(corpus, tokens, run.data, command), states=b.states, order=b.order,
                                 em_iterations=b.em_iterations, time_budget=train_config.time_budget,
                                 seed=train_config.seed, log=log)
            model.path = run_dir.publish()
    finally:
        run_dir.abandon()
    return model


def train_rnn(corpus: Corpus | TextStream, out, tokens: tokencache.Tokens, run: Options, saved: dict | None, *,
              overwrite: bool, progress: bool, command, log, parent: LanguageModel | None = None,
              lineage: dict | None = None, on_metrics=None) -> LanguageModel:
    """`parent`: the model a fine-tuning run starts from (and `lineage`, its record), or None."""
    tokenizer, ids = tokens.tokenizer, tokens.ids
    # configs: a resumed run keeps its model and takes new loop settings (a longer --max-steps, say)
    if saved is not None:
        model_config = ModelConfig.from_dict(saved["model"])
        known = field_names(TrainConfig)  # a newer or crafted config.json may hold others
        train_config = TrainConfig(**{**{k: v for k, v in saved["train"].items() if k in known}, **run.train})
    else:
        model_config = ModelConfig(vocab_size=tokenizer.vocab_size, **run.model) if not run.embedding.pretrained \
            else None
        train_config = TrainConfig(**run.train)
    record = run_record(corpus, tokens, run.data, command or (saved or {}).get("command"))
    if saved is not None and saved["corpus"].get("train_sha256") not in (None, record["corpus"]["train_sha256"]):
        raise RnnlabError(f"the corpus differs from the one {out} was trained on; resume with the same corpus")
    vectors = None
    if model_config is None:  # pretrained vectors set the embedding width unless --embed-dim says it
        vectors = word_vectors(run.embedding, tokenizer, corpus, run.model, log, seed=train_config.seed)
        model_config = ModelConfig(vocab_size=tokenizer.vocab_size, **{"embed_dim": vectors.vector_size, **run.model})

    # the output folder and the processes
    model_config.check_fits(memory_bytes(), copies=4, what="training (weights, gradients, two Adam moments)",
                            fix="choose a smaller --hidden, --embed-dim, --layers, --max-vocab, --batch-size or "
                                "--bptt", batch=train_config.batch_size, steps=train_config.bptt)
    chosen_device = pick_device(train_config.device)  # a device this machine lacks: refused before any write
    world = distributed.init(train_config.device)
    if world.active:
        log = log if world.is_main else (lambda message: None)
    if out is None:
        if world.active:
            raise RnnlabError("with several processes, pass --out (each process would otherwise pick its own folder)")
        out = default_out(corpus, model_config.cell)
    out = Path(out)
    if saved is None:
        run_dir = checkpoint.NewModelDir(out, overwrite=overwrite)  # checked now; made when the loop starts
    else:
        run_dir = None
        checkpoint.check_no_links(out)
        if world.is_main:
            checkpoint.clean_leftovers(out)

    # the model
    seed_everything(train_config.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    device = distributed.device_for(world, chosen_device)
    net = RNNLM(model_config)
    if parent is not None:
        finetune.transplant(parent.net, net)
    embedding_record = {"source": run.embedding.embedding or ("onehot" if model_config.input == "onehot" else "learned")}
    if vectors is not None:
        from rnnlab.models.embeddings import initialise
        coverage = initialise(net.encoder.weight, tokenizer.vocab, vectors)
        embedding_record.update(format=run.embedding.embedding_format, coverage=coverage)
        log(f"embedding: {coverage['found']:,} of {coverage['total']:,} vocabulary entries found in the vectors "
            f"({100 * coverage['found'] / coverage['total']:.1f}%); the others start at random with the same scale"
            + (f", e.g. {', '.join(coverage['missing_examples'][:5])}" if coverage["missing_examples"] else ""))
    lm = LanguageModel(net, tokenizer, {}, out).to(device)
    if world.active:
        torch.manual_seed(train_config.seed + world.rank)  # different dropout masks on different ranks
    run_config = {"rnnlab_version": __version__, "model_type": "rnn", "model": model_config.to_dict(),
                  "train": asdict(train_config), **record,
                  "embedding": (saved or {}).get("embedding") or embedding_record}
    if lineage or (saved or {}).get("init_from"):
        run_config["init_from"] = lineage or saved["init_from"]
    lm.config = run_config

    # the loop
    trainer = Trainer(lm, ids["train"], ids["valid"], train_config, out, run_config, progress=progress, log=log,
                      world=world, on_metrics=on_metrics)
    if saved is not None:
        last = checkpoint.resume_dir(out)
        checkpoint.load_weights(net, last)
        trainer.load_state_dict(checkpoint.load_state(last))
        with reported_write_errors(out):
            _truncate_metrics(out / checkpoint.METRICS, trainer.step)
        log(f"resuming {out} from step {trainer.step} (epoch {trainer.epoch})")
    else:
        _log_start(log, corpus, tokens, model_config, train_config, net, device, out)
    if run_dir is not None and world.is_main:
        # a new run builds in a staging folder; its first checkpoint publishes it as `out` (NewModelDir)
        trainer.out, trainer.publish = run_dir.create(), run_dir.publish
    try:
        trainer.run()
    except RuntimeError as e:
        if not world.active:
            raise
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise RnnlabError(f"rank {world.rank} of {world.size}: lost contact with the other processes ({first}); "
                          f"the last checkpoint is in {out}") from None
    finally:
        if run_dir is not None:
            run_dir.abandon()  # only a run that never published: its staging folder
    # DDP's reducer holds the process group: drop it first, so that the group is destroyed here, while every
    # rank is alive (a gloo group destroyed after a peer has exited can hang in its destructor, joining a
    # thread that waits on the dead peer)
    trainer.ddp = None
    distributed.barrier(world)
    distributed.shutdown(world)
    if not world.is_main:
        return lm

    # the end: the model a user gets is the best one, scored on one stream of valid and test
    checkpoint.load_weights(net, out)
    net.to(device).eval()
    results = score_splits(lm, {"valid": ids["valid"], "test": ids["test"]}, log)
    run_config.update(results=results, steps=trainer.step, train_seconds=round(trainer.elapsed, 1),
                      stop_reason=trainer.stop_reason)
    with reported_write_errors(out):
        write_json(out / checkpoint.CONFIG, {"format_version": checkpoint.FORMAT_VERSION, **run_config})
        write_text(out / checkpoint.CARD, rnn_card(run_config, lm))
    return lm


# ---------------------------------------------------------------------------------------------
# helpers


def word_vectors(embedding: EmbeddingConfig, tokenizer, corpus: Corpus, model_options: dict, log, *, seed: int):
    """Pretrained vectors from a file, or word2vec vectors trained on the training split."""
    from rnnlab.models import embeddings
    if embedding.embedding != "word2vec":
        vectors = embeddings.load_vectors(embedding.embedding, embedding.embedding_format)
        given = model_options.get("embed_dim")
        if given is not None and given != vectors.vector_size:
            raise RnnlabError(f"{embedding.embedding} has {vectors.vector_size}-dimensional vectors but --embed-dim "
                              f"is {given}; drop --embed-dim to use {vectors.vector_size}")
        return vectors
    dim = model_options.get("embed_dim", ModelConfig.__dataclass_fields__["embed_dim"].default)
    ids = tokenizer.encode(corpus.train)
    words = np.array(tokenizer.vocab, dtype=object)[ids]
    if tokenizer.eos_id is not None and tokenizer.kind == "word":
        cuts = np.flatnonzero(ids == tokenizer.eos_id) + 1        # sentences end at <eos>
    else:
        cuts = np.arange(100, len(ids), 100)                       # no sentences: windows of 100 tokens
    sentences = [list(part) for part in np.split(words, cuts) if len(part)]
    log(f"training {'skip-gram' if embedding.w2v_skipgram else 'CBOW'} word2vec ({dim} dims, window "
        f"{embedding.w2v_window}, {embedding.w2v_epochs} epochs) on {len(ids):,} training tokens")
    return embeddings.train_word2vec(sentences, dim=dim, skipgram=embedding.w2v_skipgram, window=embedding.w2v_window,
                                     epochs=embedding.w2v_epochs, min_count=embedding.w2v_min_count, seed=seed)


def rnn_card(config: dict, lm: LanguageModel) -> str:
    model, loop = config["model"], config["train"]
    embedding = "" if model["input"] == "onehot" else f" (embed {model['embed_dim']})"
    return model_card(config, lm, title=f"rnnlab model: {model['layers']}x{model['hidden']} {model['cell'].upper()}",
                      facts=[
        f"model: {model['cell']}, {model['layers']} layer(s) of {model['hidden']}, input {model['input']}{embedding}, "
        f"dropout {model['dropout']}, tied weights {model['tie_weights']}; {lm.net.num_parameters():,} parameters",
        f"training: {loop['optimizer']} lr {loop['lr']} ({loop['schedule']}), batch {loop['batch_size']} x bptt "
        f"{loop['bptt']}, clip {loop['clip']}; {config.get('steps', 0):,} steps in "
        f"{config.get('train_seconds', 0) / 60:.1f} min ({config.get('stop_reason', '')})",
        *([f"fine-tuned from {config['init_from']['model']} (trained on {config['init_from']['corpus']}, "
           f"{config['init_from']['steps']} steps); {config['init_from']['tokens_added']} tokens added to its "
           f"vocabulary"] if config.get("init_from") else [])])


def _log_start(log, corpus, tokens, model_config, train_config, net, device, out) -> None:
    tokenizer, ids, cached = tokens.tokenizer, tokens.ids, tokens.cached
    count = {split: 0 if ids[split] is None else len(ids[split]) for split in ("train", "valid", "test")}
    log(f"corpus: {corpus.name} | {tokenizer.kind} level | vocab {tokenizer.vocab_size:,} | train {count['train']:,} "
        f"tokens | valid {count['valid']:,} | test {count['test']:,}{' | tokens from the cache' if cached else ''}")
    log(f"model: {model_config.layers}x{model_config.hidden} {model_config.cell} | input {model_config.input} | "
        f"{net.num_parameters():,} parameters | device {device}")
    log("config: " + " ".join(f"{k}={v}" for k, v in asdict(train_config).items() if v is not None))
    if train_config.precision == "bf16" and device.type == "cpu" and model_config.cell == "lstm" \
            and model_config.impl == "torch" and not cpu_lstm_runs_in_bf16():
        log("note: this CPU has no bf16 LSTM kernel (oneDNN needs AVX512-BF16 or AMX): the LSTM layers run "
            "in fp32, the embedding and softmax in bf16")
    if ids["valid"] is None:
        log("note: no validation text, so no best checkpoint to choose: the model saved is the latest one "
            "(pass --valid FILE or --valid-fraction F to keep the best)")
    log(f"writing to {out}")


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop metrics logged after the checkpoint so the curve has no duplicate steps."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except json.JSONDecodeError:
            continue  # a line torn by a crash
    write_text(path, "".join(line + "\n" for line in kept))
