"""One request's stream of tokens, as the batched engine (engine.py) hands them out, and its readers: an
iterator on any thread, `take` for a thread that collects what is ready, or `await next_tokens()` on an
asyncio event loop, which the engine wakes once a step for all its streams (no thread hop a token)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import queue
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from rnnlab.errors import RnnlabError
from rnnlab.inference.sampling import check_sampling
from rnnlab.options import MAX_GENERATION_SEED, check_seed

_DONE = object()
# A streaming reader on an event loop takes what the engine made at most this often (after the first
# token, which goes at once): text still arrives ten times a second, and at 32 streams the server and
# its clients write and read far fewer chunks (50 ms: 3,050 tok/s; 100 ms: 3,700; benchmarks/RESULTS.md)
FLUSH_SECONDS = 0.1


@dataclass(eq=False)
class Stream:
    """One request: iterate it for its token ids (it ends after `length`, or when cancelled)."""
    prompt: list[int]
    length: int
    seed: int
    sampling: dict
    generator: torch.Generator | None = None
    penalties: tuple[float, float] = (0.0, 0.0)   # OpenAI's presence and frequency penalties
    logprobs: int | None = None                   # with it, items are (token, logprob, {alternative: logprob})
    counts: dict = field(default_factory=dict)    # token -> times generated (for the penalties)
    finish: str = "length"                        # "stop": the model ended its document (not handed out)
    tokens: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)  # C-fast put and get
    cancelled: threading.Event = field(default_factory=threading.Event)
    made: int = 0
    over: bool = False                            # the end is queued: no more tokens will come
    ready: asyncio.Event | None = None            # for a reader on an event loop (next_tokens): a step was taken
    ended: asyncio.Event | None = None            # ... and the end is queued
    loop: asyncio.AbstractEventLoop | None = None
    handed: float = 0.0                           # when next_tokens last returned (loop time)
    waiting: bool = False                         # its reader awaits `ready`: only then is a step worth a wake-up
    on_cancel: Callable[[], None] | None = None   # an engine in another process is told (engine_process.py)
    feeding: collections.deque = field(default_factory=collections.deque)  # prompt tokens the batch still reads

    def cancel(self) -> None:
        """The reader is gone: the stream leaves the batch before the next step."""
        self.cancelled.set()
        if self.on_cancel is not None:
            self.on_cancel()

    def __iter__(self) -> Iterator[int]:
        while (item := self.tokens.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item

    def take(self, block: bool = True) -> list[int] | None:
        """Every token ready now (waiting for the first, or with `block=False` returning [] when none is):
        one hop for a reader on another thread, however many steps the engine took meanwhile. None at
        the end."""
        try:
            items = [self.tokens.get(block=block)]
        except queue.Empty:
            return []
        while True:
            try:
                items.append(self.tokens.get_nowait())
            except queue.Empty:
                break
        tokens = []
        for item in items:
            if item is _DONE or isinstance(item, BaseException):
                self.tokens.put(_DONE)  # the end stays visible to a caller that asks again
                if isinstance(item, BaseException):
                    raise item
                return tokens or None
            tokens.append(item)
        return tokens

    def end(self) -> None:
        """No more tokens: the reader sees the end, and a reader waiting to gather more stops waiting."""
        self.over = True
        self.tokens.put(_DONE)

    def fail(self, error: BaseException) -> None:
        self.tokens.put(error)
        self.end()

    async def next_tokens(self, every: float = 0.0) -> list[int] | None:
        """`take` for a reader on an asyncio event loop, without a thread: the tokens ready, or, when none
        is, the wait for the engine's wake-up (one call onto the loop a step for all its streams). With
        `every`, at most one batch per `every` seconds after the first (fewer, larger writes), except
        the last: the end is handed over at once."""
        if self.ready is None:  # before the first look: a token made from now on wakes this reader
            self.ready, self.ended, self.loop = asyncio.Event(), asyncio.Event(), asyncio.get_running_loop()
        elif not self.over and (wait := self.handed + every - self.loop.time()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ended.wait(), wait)
        # the flag goes up before the look: a token put after the look is put after the flag, so its step wakes us
        self.waiting = True
        try:
            while (items := self.take(block=False)) == []:
                await self.ready.wait()
                self.ready.clear()
        finally:
            self.waiting = False
        self.handed = self.loop.time()
        return items


def new_stream(prompt: list[int], *, length: int, seed: int, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, greedy: bool = False, generator: torch.Generator | None = None,
               presence_penalty: float = 0.0, frequency_penalty: float = 0.0, logprobs: int | None = None) -> Stream:
    """A request checked and made a stream (`Engine.submit`'s arguments)."""
    check_sampling(temperature, top_k, top_p)
    check_seed(seed, maximum=MAX_GENERATION_SEED)
    if not prompt:
        raise RnnlabError("a stream needs at least one prompt token")
    if length < 0:
        raise RnnlabError(f"--length must be >= 0, got {length}")
    return Stream(list(prompt), length, seed, dict(temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy),
                  generator, (presence_penalty, frequency_penalty), logprobs)
