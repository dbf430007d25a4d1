"""The OpenAI-compatible part of `rnnlab serve`: POST /v1/completions and GET /v1/models.

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    client.completions.create(model="shakespeare", prompt="ROMEO:", max_tokens=100, seed=1).choices[0].text

What a client may send: prompt, max_tokens, temperature, top_p, n, stop, seed, stream, logprobs
(the N most likely alternatives of each token, N <= 5), echo, presence_penalty and
frequency_penalty, plus top_k as an extension; `model` is accepted and must name this server's
model. Streams are `data: {json}` chunks, one per piece of text and choice, then a chunk with
`finish_reason` (`stop`: a stop string or the end of a document; `length`: max_tokens) and the
`usage`, then `data: [DONE]`. Errors have OpenAI's shape, `{"error": {"message", "type",
"param", "code"}}`. An RNN's choices are streams of the batched engine (inference/engine.py); a
baseline's (HMM, n-gram) run one by one, without logprobs or penalties. Without a prompt a
completion starts from a random vocabulary word, which is the first piece of its text.

Two rnnlab extensions ride along, which OpenAI clients ignore: `top_k` in the request, and in the
response (the streamed usage chunk) `seed`, the seed of the first choice (the i-th choice uses
seed + i), and `unknown`, the prompt's words that are not in the vocabulary (read as <unk>).
"""

# No `from __future__ import annotations`: FastAPI reads the request model's annotation at run time.
import json
import secrets
import time
from typing import AsyncIterator, Iterator, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from rnnlab.inference.stream import FLUSH_SECONDS
from rnnlab.inference.lm import held_back
from rnnlab.options import MAX_GENERATION_SEED

MAX_N = 8


def error(status: int, message: str, param: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": None}},
                        status_code=status)


def completion_model(limits) -> type[BaseModel]:
    class CompletionRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

        model: str | None = None
        prompt: str | list[str] = Field("", description="the text to continue (a list of one string is accepted)")
        max_tokens: int = Field(16, ge=0, le=limits.max_tokens)
        temperature: float = Field(1.0, ge=0.0, le=10.0, description="0: greedy")
        top_p: float = Field(1.0, gt=0.0, le=1.0)
        top_k: int | None = Field(None, ge=1, description="an rnnlab extension")
        n: int = Field(1, ge=1, le=MAX_N)
        stop: str | list[str] | None = Field(None, description="up to 4 strings")
        seed: int | None = Field(None, ge=0, le=MAX_GENERATION_SEED)
        stream: bool = False
        logprobs: int | None = Field(None, ge=0, le=5)
        echo: bool = False
        presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
        frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
        user: str | None = None

    return CompletionRequest


def add_routes(app: FastAPI, lm, engine, name: str, limits, slot, counters) -> None:
    """The OpenAI-compatible routes on `app`, for an RNN served by `engine` (or a baseline: `engine` None);
    `slot()` is the server's wait for a free generation slot (serve.generation_slot), `counters` its
    health figures."""
    CompletionRequest = completion_model(limits)
    created = int(time.time())

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "rnnlab"}]}

    @app.post("/v1/completions")
    async def completions(request: CompletionRequest, http: Request):  # type: ignore[valid-type]
        if request.model not in (None, name):
            return error(404, f"this server serves the model {name!r}, not {request.model!r}", "model")
        prompt = request.prompt if isinstance(request.prompt, str) else None
        if prompt is None:
            if len(request.prompt) != 1:
                return error(400, "prompt: send one string (or a list of one)", "prompt")
            prompt = request.prompt[0]
        if len(prompt) > limits.max_prompt_chars:
            return error(400, f"prompt: at most {limits.max_prompt_chars} characters", "prompt")
        stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            return error(400, "stop: up to 4 non-empty strings", "stop")
        if engine is None and (request.logprobs or request.presence_penalty or request.frequency_penalty):
            return error(400, f"logprobs and presence/frequency penalties need an RNN; this server serves a "
                              f"{lm.model_type} baseline", "logprobs" if request.logprobs else "presence_penalty")
        seed = request.seed if request.seed is not None else secrets.randbelow(MAX_GENERATION_SEED - MAX_N + 1)
        choices = [Choice(lm, engine, prompt, request, seed + i, stops) for i in range(request.n)]
        ident = f"cmpl-{secrets.token_hex(12)}"
        head = {"id": ident, "object": "text_completion", "created": int(time.time()), "model": name}
        extras = {"seed": seed, "unknown": lm.tokenizer.unknown(prompt) if prompt else []}
        if not request.stream:
            try:
                for choice in choices:
                    await choice.run(slot, counters, http)
            finally:
                for choice in choices:
                    choice.cancel()
            if await http.is_disconnected():
                return JSONResponse({}, status_code=499)
            return {**head, "choices": [c.result(i) for i, c in enumerate(choices)], "usage": usage(choices),
                    **extras}

        async def events() -> AsyncIterator[str]:
            try:
                for i, choice in enumerate(choices):
                    async for released in choice.batches(slot, counters):  # what the engine made since the last
                        yield _chunk({**head, "choices": [{"text": "".join(piece for piece, _ in released),
                                                           "index": i, "logprobs": _joined(released),
                                                           "finish_reason": None}]})
                    yield _chunk({**head, "choices": [{"text": "", "index": i, "logprobs": None,
                                                       "finish_reason": choice.finish}]})
                yield _chunk({**head, "choices": [], "usage": usage(choices), **extras})
                yield "data: [DONE]\n\n"
            finally:
                for choice in choices:
                    choice.cancel()

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _chunk(data: dict) -> str:
    return f"data: {json.dumps(data)}\n\n"


def _joined(released: list[tuple[str, dict | None]]) -> dict | None:
    """The logprobs of several pieces sent as one chunk: their lists end to end (OpenAI's shape)."""
    parts = [logprobs for _, logprobs in released if logprobs is not None]
    if not parts:
        return None
    return {key: [value for part in parts for value in part[key]] for key in parts[0]}


def usage(choices) -> dict:
    prompt = choices[0].prompt_tokens
    completion = sum(c.completion_tokens for c in choices)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class Choice:
    """One of the n completions: an engine stream, its text cut at the first stop string."""

    def __init__(self, lm, engine, prompt: str, request, seed: int, stops: list[str]):
        import torch
        self.lm, self.engine, self.request, self.stops = lm, engine, request, stops
        self.generator = torch.Generator().manual_seed(seed)
        self.detok = lm.tokenizer.detokenizer()
        self.prompt = prompt
        self.ids, self.first = lm.start(prompt or None, self.generator, self.detok)
        self.prompt_tokens = len(self.ids)
        self.completion_tokens = 0
        self.seed = seed
        self.text, self.tokens, self.token_logprobs, self.top = "", [], [], []
        self.finish: Literal["stop", "length"] = "length"
        self.stream = None

    def cancel(self) -> None:
        if self.stream is not None:
            self.stream.cancel()

    async def run(self, slot, counters, http) -> None:
        async for _ in self.batches(slot, counters):
            if await http.is_disconnected():
                return

    async def _tokens(self) -> AsyncIterator[list[tuple[str, float | None, dict | None]]]:
        """The new tokens as (piece, logprob, top alternatives), a batch at a time: an RNN's from the engine,
        a baseline's from its own sampler (whose first piece, the prompt or the start word, is skipped)."""
        r = self.request
        sampling = dict(temperature=r.temperature or 1.0, top_p=None if r.top_p == 1.0 else r.top_p, top_k=r.top_k,
                        greedy=r.temperature == 0)
        if self.engine is None:  # a baseline: lm.stream, one thread-pool hop per piece
            pieces = self.lm.stream(self.prompt or None, length=r.max_tokens, seed=self.seed, **sampling)
            try:
                await run_in_threadpool(next, pieces, None)
                while (piece := await run_in_threadpool(next, pieces, None)) is not None:
                    yield [(piece, None, None)]
            finally:
                pieces.close()
            return
        self.stream = self.engine.submit(
            self.ids, length=r.max_tokens, seed=self.seed, generator=self.generator,
            presence_penalty=r.presence_penalty, frequency_penalty=r.frequency_penalty,
            logprobs=r.logprobs if r.logprobs else None, **sampling)
        while (items := await self.stream.next_tokens(every=FLUSH_SECONDS)) is not None:
            batch = []
            for item in items:
                token, logprob, top = item if isinstance(item, tuple) else (item, None, None)
                alternatives = None if top is None else {self.lm.tokenizer.decode([t]): v for t, v in top.items()}
                batch.append((self.detok(token), logprob, alternatives))
            yield batch

    async def batches(self, slot, counters) -> AsyncIterator[list[tuple[str, dict | None]]]:
        """(text, logprobs) of the pieces released, one list for each batch of tokens the engine hands over
        (one chunk on the wire, not one a token): the prompt first if echo, then the tokens', up to a stop."""
        r = self.request
        async with slot():
            if r.echo and self.prompt:
                self.text += self.prompt
                yield [(self.prompt, None)]
            stops = self.stops
            pending: list[tuple[str, float | None, dict | None]] = []   # pieces that may begin a stop string
            if not self.prompt and self.first:  # no prompt: the random start word begins the text (not counted)
                pending.append((self.first, None, None))
            async for batch in self._tokens():
                out = []
                for entry in batch:
                    counters.tokens_generated += 1
                    self.completion_tokens += 1
                    pending.append(entry)
                    held = "".join(piece for piece, _, _ in pending)
                    cut = [i for i in (held.find(s) for s in stops) if i >= 0]
                    if cut:  # a stop string: the text ends before it
                        self.finish = "stop"
                        release, limit = [], min(cut)
                        for piece, lp, alt in pending:
                            if limit <= 0:
                                break
                            release.append((piece[:limit], lp, alt))
                            limit -= len(piece)
                        out += self._emit(release)
                        if out:
                            yield out
                        self.cancel()
                        return
                    # what cannot be the start of a stop string goes out; the rest waits for the next piece
                    keep = held_back(held, stops)
                    release = []
                    while pending and len(held) - len(pending[0][0]) >= keep:
                        release.append(pending.pop(0))
                        held = held[len(release[-1][0]):]
                    out += self._emit(release)
                if out:
                    yield out
            if tail := list(self._emit(pending)):
                yield tail
            if self.stream is not None:
                self.finish = self.stream.finish  # "stop" where the model ended its document

    def _emit(self, entries) -> Iterator[tuple[str, dict | None]]:
        """Record released pieces (and their logprobs) in the choice, and give them to the caller."""
        for piece, logprob, alternatives in entries:
            self.text += piece
            logprobs = None
            if logprob is not None:
                self.tokens.append(piece)
                self.token_logprobs.append(logprob)
                self.top.append(alternatives)
                logprobs = {"tokens": [piece], "token_logprobs": [logprob], "top_logprobs": [alternatives],
                            "text_offset": [len(self.text) - len(piece)]}
            if piece:
                yield piece, logprobs

    def result(self, index: int) -> dict:
        logprobs = None
        if self.request.logprobs is not None and self.tokens:
            offsets, at = [], len(self.text) - sum(len(t) for t in self.tokens)
            for token in self.tokens:
                offsets.append(at)
                at += len(token)
            logprobs = {"tokens": self.tokens, "token_logprobs": self.token_logprobs, "top_logprobs": self.top,
                        "text_offset": offsets}
        return {"text": self.text, "index": index, "logprobs": logprobs, "finish_reason": self.finish}
