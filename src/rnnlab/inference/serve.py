"""An HTTP API and a web page for a trained model: `rnnlab serve MODEL`.

    rnnlab serve runs/shakespeare                 # http://127.0.0.1:8000/ is the page
    curl -s --json '{"prompt": "ROMEO:", "max_tokens": 100, "seed": 1}' localhost:8000/v1/generate
    curl -sN --json '{"prompt": "ROMEO:", "stream": true}' localhost:8000/v1/generate

    POST /v1/generate   JSON in; JSON out, or Server-Sent Events token by token with "stream": true
    GET  /v1/model      the model card: config, vocabulary, training results, this server's limits
    GET  /healthz       liveness, and how many generations are running
    GET  /              the page (static/index.html: plain HTML, CSS and JS, nothing fetched from outside)
    GET  /openapi.json  the schema FastAPI writes; /docs renders it

How one model serves many clients at once:

    request ──► waits for one of --max-concurrent slots ──► its stream joins the engine's batch
                (inference/engine.py: one worker thread steps every active stream as one batch,
                 each with its own state, settings and random generator)
                    │
                    ▼  stream.next_tokens()   the engine wakes the loop once a step for all its streams
    event loop ◄── pieces ──► JSON body, or the SSE events of every piece made since (one write)

The event loop never runs the network: a long generation does not hold up a short one. A client that
hangs up cancels its stream. A baseline (HMM, n-gram) has no batched step: it runs lm.stream.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time,
# and the request model they name is local to create_app.
import asyncio
import contextlib
import gc
import json
import secrets
import time
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import AsyncIterator, Iterator

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from rnnlab.version import __version__
from rnnlab.errors import RnnlabError
from rnnlab.inference.engine import Engine
from rnnlab.inference.stream import FLUSH_SECONDS
from rnnlab.inference.lm import LanguageModel, TextModel
from rnnlab.options import MAX_GENERATION_SEED as MAX_SEED

DEFAULT_TOKENS = 200  # a request that does not say how many tokens gets this many (or the cap, if lower)


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; over a limit is a 422 that names it."""
    max_prompt_chars: int = 4_000  # an RNN reads any length, but a pasted book as a prompt is a mistake
    max_tokens: int = 2_000        # tokens per request: a few seconds of CPU for a mid-sized LSTM
    max_concurrent: int = 8        # generations running at once; later requests wait their turn (first come, first served)

    def __post_init__(self):
        if self.max_prompt_chars < 0:
            raise RnnlabError(f"--max-prompt-chars must be >= 0, got {self.max_prompt_chars}")
        if self.max_tokens < 1:
            raise RnnlabError(f"--max-tokens must be at least 1, got {self.max_tokens}")
        if self.max_concurrent < 1:
            raise RnnlabError(f"--max-concurrent must be at least 1, got {self.max_concurrent}")

    @property
    def max_body_bytes(self) -> int:
        # The longest JSON spelling of one character is 12 bytes (a surrogate pair, "\ud83d\ude00"),
        # so a prompt within its cap always fits and gets the 422 that names the cap; a bigger body
        # is refused with 413 before it is read into memory.
        return 12 * self.max_prompt_chars + 16_384


# -- the API's shapes: FastAPI validates requests with them and writes /openapi.json from them ----


class Generation(BaseModel):
    text: str = Field(description="the prompt (or, without one, a random start word) and then the new text")
    tokens: int = Field(description="tokens generated after the prompt")
    seed: int = Field(description="the seed this generation used: send it back to get the same text")
    unknown: list[str] = Field(description="prompt words (characters, for a char-level model) not in the "
                                           "vocabulary, read as <unk>")


class ModelCard(BaseModel):
    name: str = Field(description="the model directory's name")
    level: str = Field(description="char or word: what one token is")
    vocab_size: int
    parameters: int
    results: dict = Field(description="loss, perplexity, bits per token on each split the model was scored on")
    steps: int | None = Field(description="optimiser steps it was trained for")
    train_seconds: float | None
    limits: dict = Field(description="this server's caps on prompt length and tokens per request")
    config: dict = Field(description="how the model was made: architecture, tokenizer, training recipe, and the "
                                     "corpus by name and size; no file paths and no command line")


class Health(BaseModel):
    status: str = "ok"
    active_generations: int = Field(description="generations running now, streamed or not (at most the "
                                                "server's max_concurrent)")
    waiting: int = Field(description="requests waiting for a generation slot")
    tokens_generated: int = Field(description="tokens generated since the server started")
    longest_wait_s: float = Field(description="the longest any request has waited for a generation slot, in "
                                              "seconds, since the server started")


@dataclass
class Counters:
    # Touched only on the event loop's thread, so they need no lock.
    active_generations: int = 0
    waiting: int = 0
    tokens_generated: int = 0
    longest_wait_s: float = 0.0


def request_model(limits: Limits) -> type[BaseModel]:
    """The request body, with this server's caps in it, so that /docs shows them."""

    class GenerateRequest(BaseModel):
        # strict: "5" is not a number and true is not 1 (JSON's 1 is still a valid float);
        # extra="forbid": a misspelt option is an error, not a silent default
        model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

        prompt: str = Field("", max_length=limits.max_prompt_chars,
                            description="text to continue; empty: start from a random vocabulary word")
        max_tokens: int = Field(min(DEFAULT_TOKENS, limits.max_tokens), ge=0, le=limits.max_tokens,
                                description="tokens to generate after the prompt")
        # below 0.01 the logits / temperature overflow float32 for no gain: greedy is the limit
        temperature: float = Field(1.0, ge=0.01, description="< 1 safer, > 1 wilder; for the most likely "
                                                               "token every time, send greedy")
        top_k: int | None = Field(None, ge=1, description="sample from the k most likely tokens")
        top_p: float | None = Field(None, gt=0, le=1, description="sample from the smallest set of tokens "
                                                                   "with probability mass p")
        greedy: bool = Field(False, description="always take the most likely token")
        # at most 2**53 - 1, JavaScript's largest exact integer, so that the page shows the seed it got
        seed: int | None = Field(None, ge=0, le=MAX_SEED, description="same seed, same text; "
                                                                     "default: a random one, returned")
        stream: bool = Field(False, description="send Server-Sent Events, one per token, then a 'done' event")

    return GenerateRequest


def public_config(config: dict) -> dict:
    """What /v1/model shows of config.json: the model, tokenizer, training recipe, results, and the
    corpus by name and size. Not the command line, nor any path (corpus files, validation files,
    pretrained vectors): those describe the machine it was trained on, not the model."""
    corpus = config.get("corpus") or {}
    embedding = dict(config.get("embedding") or {})
    if "source" in embedding and embedding["source"] not in ("learned", "onehot", "word2vec"):
        embedding["source"] = Path(str(embedding["source"])).name
    embedding.pop("missing_examples", None)
    shown = {k: v for k, v in config.items() if k not in ("command", "corpus", "embedding", "init_from")}
    if isinstance(config.get("init_from"), dict):  # a fine-tuned model: what it started from, by name
        shown["init_from"] = {k: config["init_from"].get(k) for k in ("corpus", "steps", "tokens_added")}
    shown["corpus"] = {"name": Path(str(corpus.get("name", ""))).name,
                       **{k: corpus[k] for k in ("train_tokens", "valid_tokens", "test_tokens") if k in corpus}}
    if embedding:
        shown["embedding"] = embedding
    return shown


class BodyLimit:
    """A request body over `max_bytes` gets a JSON 413 before it is read: at once when its
    Content-Length says so, or as soon as a body sent without one (chunked) passes the cap."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def refuse(self, send) -> None:
        body = json.dumps({"detail": f"the request body is over this server's limit of {self.max_bytes:,} bytes"})
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body.encode()})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            await self.refuse(send)
            return
        received, too_large, started = 0, False, False

        async def limited_receive():
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    return {"type": "http.disconnect"}  # the app stops reading; the 413 is sent below
            return message

        async def tracked_send(message) -> None:
            nonlocal started
            if too_large:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except Exception:
            if not too_large:
                raise
        if too_large and not started:
            await self.refuse(send)


# -- generation, off the event loop --------------------------------------------------------------


def _advance(pieces: Iterator[str]) -> str | None:
    """The next piece of text, or None at the end. Runs in a worker thread."""
    # sample_ids enters inference mode too; it is per thread, and this is where the threads are
    with torch.inference_mode():
        return next(pieces, None)


@contextlib.asynccontextmanager
async def generation_slot(counters: Counters, slots: asyncio.Semaphore):
    """Wait (counted as waiting) for one of the server's `max_concurrent` slots; hold it (counted as
    active) while the generation runs."""
    counters.waiting += 1
    started = time.monotonic()
    try:
        await slots.acquire()
    finally:
        counters.waiting -= 1
        counters.longest_wait_s = max(counters.longest_wait_s, time.monotonic() - started)
    counters.active_generations += 1
    try:
        yield
    finally:
        counters.active_generations -= 1
        slots.release()


async def _pieces(lm: TextModel, engine: Engine | None, options: dict, counters: Counters,
                  slots: asyncio.Semaphore) -> AsyncIterator[list[str]]:
    """The text in chunks: first [the prompt], then the pieces of the tokens made since the last chunk.
    A generation runs only while it holds a slot. An RNN's stream is stepped by the batched engine,
    and one thread-pool hop collects every token it made meanwhile; a baseline's runs lm.stream, a
    hop per token."""
    async with generation_slot(counters, slots):
        if engine is not None:
            async for chunk in _engine_pieces(lm, engine, options, counters):
                yield chunk
            return
        pieces = lm.stream(**options)
        try:
            if (prompt := await run_in_threadpool(_advance, pieces)) is None:
                return
            yield [prompt]
            while (piece := await run_in_threadpool(_advance, pieces)) is not None:
                counters.tokens_generated += 1
                yield [piece]
        finally:
            # a hop in flight finishes before cancellation lands (threads cannot be interrupted),
            # so the generator is idle here and can be closed
            pieces.close()


async def _engine_pieces(lm: TextModel, engine: Engine, options: dict, counters: Counters) -> AsyncIterator[list[str]]:
    generator = torch.Generator().manual_seed(options["seed"])
    detok = lm.tokenizer.detokenizer()
    ids, first = lm.start(options["prompt"], generator, detok)   # the same start as lm.generate's
    stream = engine.submit(ids, length=options["length"], seed=options["seed"], generator=generator,
                           **{k: options[k] for k in ("temperature", "top_k", "top_p", "greedy")})
    try:
        yield [first]
        while (tokens := await stream.next_tokens(every=FLUSH_SECONDS)) is not None:
            counters.tokens_generated += len(tokens)
            yield [detok(token) for token in tokens]
    finally:
        stream.cancel()  # a client that hung up: its stream leaves the batch at the next step


def _sse(data: dict, event: str | None = None) -> str:
    """One Server-Sent Event. The text travels as JSON, so a newline in it cannot end the event."""
    return (f"event: {event}\n" if event else "") + f"data: {json.dumps(data)}\n\n"


STREAM_EXAMPLE = (_sse({"text": "ROMEO:"}) + _sse({"text": "\n"}) + _sse({"text": "I"})
                  + _sse({"tokens": 2, "seed": 1, "unknown": []}, event="done"))


# -- the app ---------------------------------------------------------------------------------------


def create_app(lm: TextModel, limits: Limits = Limits(), engine=None) -> FastAPI:
    """The FastAPI app serving `lm`; run it with uvicorn (launch.py: main_serve, or `running` in a thread).
    `engine`: what steps an RNN's streams (default: an `Engine` in this process; launch.py can start a
    `ProcessEngine`); the app closes it when it stops."""
    name = lm.path.name if lm.path else "model"
    index_html = files("rnnlab").joinpath("static", "index.html").read_text(encoding="utf-8")
    GenerateRequest = request_model(limits)
    counters = Counters()
    slots = asyncio.Semaphore(limits.max_concurrent)
    # an RNN's streams step together in one batch (inference/engine.py); a baseline's one by one. On one thread: the
    # caller's threads have most likely run torch on several, and then several are slower for the engine (Engine)
    if engine is None and isinstance(lm, LanguageModel):
        engine = Engine(lm, max_batch=limits.max_concurrent, threads=1)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        gc.freeze()  # what start-up made (torch, the app, the model) leaves the collector's full passes: 100 ms pauses
        yield
        if engine is not None:
            engine.close()

    app = FastAPI(title=f"rnnlab: {name}", version=__version__, lifespan=lifespan,
                  description="Generate text with a recurrent language model trained by rnnlab.")
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    app.state.engine = engine

    # the OpenAI-compatible routes, which the page uses too: /v1/completions, /v1/models
    from rnnlab.inference import openai_api
    openai_api.add_routes(app, lm, engine, name, limits, lambda: generation_slot(counters, slots), counters)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        # FastAPI's own handler echoes each bad value back, which fails (a 500) when the value is
        # NaN or a lone surrogate; the field and the reason are what a client needs
        detail = []
        for error in exc.errors():
            message = error["msg"]
            if error["type"] == "json_invalid":
                message = f"the body is not valid JSON: {error.get('ctx', {}).get('error', message)}"
            detail.append({"type": error["type"], "loc": list(error["loc"]), "msg": message})
        if request.url.path == "/v1/completions":  # OpenAI's error shape, naming the first bad field
            from rnnlab.inference.openai_api import error
            first = detail[0] if detail else {"loc": [], "msg": "invalid request"}
            field = ".".join(str(part) for part in first["loc"][1:]) or None
            return error(400, f"{field + ': ' if field else ''}{first['msg']}", field)
        # ensure_ascii: a lone surrogate in a misspelt key still encodes
        return Response(json.dumps({"detail": detail}), status_code=422, media_type="application/json")

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(index_html)

    @app.get("/healthz")
    async def health() -> Health:
        return Health(active_generations=counters.active_generations, waiting=counters.waiting,
                      tokens_generated=counters.tokens_generated, longest_wait_s=round(counters.longest_wait_s, 3))

    @app.get("/v1/model")
    async def model_card() -> ModelCard:
        config = lm.config
        return ModelCard(name=name, level=lm.tokenizer.kind, vocab_size=lm.tokenizer.vocab_size,
                         parameters=lm.num_parameters(), results=config.get("results", {}),
                         steps=config.get("steps"), train_seconds=config.get("train_seconds"),
                         limits={"max_prompt_chars": limits.max_prompt_chars, "max_tokens": limits.max_tokens,
                                 "max_concurrent": limits.max_concurrent},
                         config=public_config(config))

    @app.post("/v1/generate", response_model=Generation, responses={200: {
        "description": 'JSON, or with "stream": true one event per piece of text and then a "done" event',
        "content": {"text/event-stream": {"example": STREAM_EXAMPLE}}}})
    async def generate(request: GenerateRequest, http: Request):  # type: ignore[valid-type]
        seed = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED + 1)
        options = dict(prompt=request.prompt or None, length=request.max_tokens, temperature=request.temperature,
                       top_k=request.top_k, top_p=request.top_p, greedy=request.greedy, seed=seed)
        unknown = lm.tokenizer.unknown(request.prompt) if request.prompt else []
        pieces = _pieces(lm, engine, options, counters, slots)

        if not request.stream:
            text = []
            async with contextlib.aclosing(pieces):
                async for chunk in pieces:
                    text.extend(chunk)
                    # a client that hung up stops its generation here, as a streamed one does
                    if await http.is_disconnected():
                        return Response(status_code=499)
            return Generation(text="".join(text), tokens=len(text) - 1, seed=seed, unknown=unknown)

        async def events() -> AsyncIterator[str]:
            tokens = -1  # the first piece is the prompt
            async with contextlib.aclosing(pieces):
                async for chunk in pieces:  # one event per piece, one write per chunk of them
                    tokens += len(chunk)
                    yield "".join(_sse({"text": piece}) for piece in chunk)
            yield _sse({"tokens": tokens, "seed": seed, "unknown": unknown}, event="done")

        # no-cache, and X-Accel-Buffering for nginx: a proxy must pass each event on as it comes
        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return app
