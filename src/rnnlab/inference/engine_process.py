"""The batched engine in a process of its own: `rnnlab serve --engine process`.

In one process, the engine's worker thread and the event loop that writes the HTTP responses take turns
holding Python's global interpreter lock: every torch call of a step hands the lock back and waits for it
again, behind the event loop's JSON and socket work. Here the engine (inference/engine.py, unchanged)
runs in a child process with the model loaded there too, and the server keeps only its streams:

    server process                                   engine process
    submit ── ("submit", id, prompt, settings) ──►   Engine.submit; each step the tokens made
    stream.cancel ── ("cancel", id) ──────────────►  go back in one message for all streams:
    receiver thread ◄── [(id, tokens, end, finish, error), ...] ──┘
        └─► the streams' queues, and one wake-up of their event loops (as the engine itself does)

Each stream's random generator travels with its request (its state, after the server drew a start
word from it), so a seed gives the same text as in process and as `lm.generate`. The child is
started with "spawn" (no fork of a process with threads running) and loads the model once more: the
server holds it twice.
"""

from __future__ import annotations

import itertools
import multiprocessing
import threading
from pathlib import Path

import torch

from rnnlab.errors import RnnlabError
from rnnlab.inference.engine import Engine
from rnnlab.inference.stream import Stream, new_stream

STOPPED = "the generation engine's process has stopped; restart the server"


class ProcessEngine:
    """`Engine`'s interface (submit, close, steps), the engine itself in a child process."""

    def __init__(self, path: str | Path, *, max_batch: int = 32, precision: str = "fp32", device: str = "cpu",
                 threads: int | None = None, busy_threads: int | None = None):
        if max_batch < 1:
            raise RnnlabError(f"--max-batch must be at least 1, got {max_batch}")
        context = multiprocessing.get_context("spawn")
        requests_in, self._requests = context.Pipe(duplex=False)
        self._results, results_out = context.Pipe(duplex=False)
        self.process = context.Process(target=_child, name="rnnlab-engine", daemon=True,
                                       args=(str(path), max_batch, precision, str(device),
                                             threads or torch.get_num_threads(), busy_threads, requests_in,
                                             results_out))
        self.process.start()
        requests_in.close()
        results_out.close()
        try:
            ready = self._results.recv()
        except EOFError:
            ready = ("error", f"exit status {self.process.exitcode}")
        if ready[0] != "ready":
            self.process.join(timeout=10)
            raise RnnlabError(f"the generation engine's process did not start: {ready[1]}")
        self.streams: dict[int, Stream] = {}
        self.lock = threading.Lock()      # the streams and the request pipe
        self.ids = itertools.count()
        self.closed = False
        self.steps = 0
        self.receiver = threading.Thread(target=self._receive, name="rnnlab-engine-receiver", daemon=True)
        self.receiver.start()

    def submit(self, prompt: list[int], *, length: int, seed: int, generator: torch.Generator | None = None,
               **settings) -> Stream:
        """As `Engine.submit`: the request is checked here, then stepped in the engine's process."""
        stream = new_stream(prompt, length=length, seed=seed, generator=generator, **settings)
        state = None if generator is None else generator.get_state()
        if state is not None and torch.equal(state, torch.Generator().manual_seed(seed).get_state()):
            state = None  # untouched: the engine seeds its own, and the request stays ~100 bytes, not 5 kB
        elif state is not None:  # as bytes: a tensor would travel as shared memory, a file and a connection back
            state = state.numpy().tobytes()
        with self.lock:
            if self.closed or not self.receiver.is_alive():
                raise RnnlabError(STOPPED)
            sid = next(self.ids)
            stream.on_cancel = lambda: self._cancel(sid)
            self.streams[sid] = stream  # before it is sent: the engine's answer can come back at once
            try:
                self._requests.send(("submit", sid, stream.prompt, dict(length=length, seed=seed, **settings), state))
            except OSError:  # it has just died; the receiver is about to see it
                del self.streams[sid]
                raise RnnlabError(STOPPED) from None
        return stream

    def _cancel(self, sid: int) -> None:
        with self.lock:
            if not self.closed and sid in self.streams:  # not yet ended there (a reader cancels every stream it leaves)
                try:
                    self._requests.send(("cancel", sid))
                except OSError:  # the engine's process is gone; the receiver fails its streams
                    pass

    def _receive(self) -> None:
        """The engine's messages into the streams' queues, and the readers woken: one message a step."""
        while True:
            try:
                batch = self._results.recv()
            except (EOFError, OSError):
                break
            self.steps += 1
            touched = []
            for sid, items, end, finish, error in batch:
                stream = self.streams.get(sid)
                if stream is None:
                    continue
                for item in items:
                    stream.tokens.put(item)
                if error is not None:
                    stream.fail(error)
                elif end:
                    stream.finish = finish
                    stream.end()
                if error is not None or end:
                    with self.lock:
                        self.streams.pop(sid, None)
                touched.append(stream)
            Engine._wake(touched)
        with self.lock:  # the child has gone: whatever still runs ends, with the reason
            left, self.streams = list(self.streams.values()), {}
            crashed = not self.closed
        for stream in left:
            if crashed:
                stream.fail(RnnlabError(STOPPED))
            else:
                stream.end()
        Engine._wake(left)

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            try:
                self._requests.send(("close",))
            except OSError:
                pass
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=10)
        self.receiver.join(timeout=10)


class _ForwardingEngine(Engine):
    """The engine in the child: where it would wake readers, it sends what they would take to the server."""

    def __init__(self, lm, results, **options):
        self.results, self.ids, self.sending = results, {}, threading.Lock()   # stream -> its id in the server
        super().__init__(lm, **options)

    def send(self, batch: list) -> None:
        with self.sending:  # from the engine's thread and from the child's main thread
            try:
                self.results.send(batch)
            except OSError:  # the server has gone
                pass

    def _wake(self, streams: list[Stream]) -> None:  # noqa: D102 — Engine._wake, for another process
        batch = []
        for stream in streams:
            sid = self.ids.get(stream)
            if sid is None:
                continue
            try:
                items = stream.take(block=False)
            except BaseException as e:  # noqa: BLE001 — the stream's failure, handed to its reader there
                batch.append((sid, [], True, stream.finish, e))
                del self.ids[stream]
                continue
            if items is None:
                batch.append((sid, [], True, stream.finish, None))
                del self.ids[stream]
            elif items:
                batch.append((sid, items, False, stream.finish, None))
        if batch:
            self.send(batch)


def _child(path: str, max_batch: int, precision: str, device: str, threads: int, busy_threads: int | None, requests,
           results) -> None:
    """The engine's process: load the model, then submit and cancel as the server asks, until it closes."""
    import signal

    from rnnlab.inference.loading import load
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole terminal; the server closes this one
    torch.set_num_threads(1)  # this thread's: the engine's thread alone steps on `threads` (Engine's docstring)
    try:
        engine = _ForwardingEngine(load(path, device=device, precision=precision), results, max_batch=max_batch,
                                   threads=threads, busy_threads=busy_threads)
    except Exception as e:  # noqa: BLE001 — reported to the server, which raises it in one line
        results.send(("error", str(e)))
        return
    results.send(("ready",))
    streams: dict[int, Stream] = {}
    while True:
        try:
            message = requests.recv()
        except (EOFError, OSError):  # the server has gone
            break
        if message[0] == "close":
            break
        if message[0] == "cancel":
            if (stream := streams.pop(message[1], None)) is not None:
                stream.cancel()
            continue
        _, sid, prompt, settings, state = message
        generator = None
        if state is not None:
            generator = torch.Generator()
            generator.set_state(torch.frombuffer(bytearray(state), dtype=torch.uint8))
        with engine.wake:  # the stream is known by its id before the engine can step it
            try:
                stream = engine.submit(prompt, generator=generator, **settings)
            except Exception as e:  # noqa: BLE001 — a request the server let through but the engine refused
                engine.send([(sid, [], True, "length", e)])
                continue
            engine.ids[stream] = sid
            streams[sid] = stream
        for done in [sid for sid, stream in streams.items() if stream.over]:
            del streams[done]
    engine.close()
