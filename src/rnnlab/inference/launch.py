"""Running the served app: a socket bound here (a busy port is a one-line error), uvicorn on it, the
engine in this process or its own (`--engine`), and the app for uvicorn's own process manager.

    rnnlab serve MODEL            -> main_serve
    with running(app) as url:     -> a server on a background thread (tests, notebooks)
    RNNLAB_MODEL=runs/demo uvicorn --factory rnnlab.inference.launch:app_from_env --workers 2
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Iterator

import torch
import uvicorn
from fastapi import FastAPI

from rnnlab.errors import RnnlabError, RnnlabWarning
from rnnlab.inference.engine import Engine
from rnnlab.inference.lm import LanguageModel
from rnnlab.inference.loading import load
from rnnlab.inference.serve import Limits, create_app

ENGINES = ("thread", "process")


def bind(host: str = "127.0.0.1", port: int = 8000) -> socket.socket:
    """A listening socket; port 0 picks a free one. Binding here, not in uvicorn, turns a busy
    port into a one-line error, and tells a caller which port it got before the server starts."""
    if not 0 <= port <= 65535:
        raise RnnlabError(f"--port must be in 0..65535 (0: any free port), got {port}")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=128)
        # accepted connections inherit it (asyncio sets it only on sockets made with proto=IPPROTO_TCP): without it,
        # Nagle's algorithm and the client's delayed ACK held every response (and first token) back ~40 ms
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    except OSError as e:
        raise RnnlabError(f"cannot listen on {host}:{port}: {e.strerror or e}; "
                          f"choose another --port or --host") from None


def _server(app: FastAPI, log_level: str) -> uvicorn.Server:
    # open streams get a few seconds to finish at shutdown, then are cut
    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=3))


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextlib.contextmanager
def running(app: FastAPI, host: str = "127.0.0.1", port: int = 0, *,
            log_level: str = "warning") -> Iterator[str]:
    """Serve `app` from a background thread (tests, notebooks); yield its base URL, stop on exit.

        with running(create_app(rnnlab.load("runs/demo"))) as url:
            httpx.post(url + "/v1/generate", json={"prompt": "The "})
    """
    sock = bind(host, port)
    server = _server(app, log_level)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="rnnlab-serve", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server thread did not start")
            time.sleep(0.01)
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def app_from_env() -> FastAPI:
    """The app for a process manager that starts several workers on one port, each loading the model once:

        RNNLAB_MODEL=runs/demo uvicorn --factory rnnlab.inference.launch:app_from_env --workers 2 --port 8000

    $RNNLAB_MAX_CONCURRENT sets each worker's --max-concurrent (default 8), $RNNLAB_PRECISION its --precision,
    $RNNLAB_THREADS its engine's torch threads (default 1: the workers share the cores)."""
    model = os.environ.get("RNNLAB_MODEL")
    if not model:
        raise RnnlabError("set RNNLAB_MODEL to the model directory to serve")
    limits = Limits(max_concurrent=int(os.environ.get("RNNLAB_MAX_CONCURRENT", Limits.max_concurrent)))
    threads, busy_threads = engine_threads(int(os.environ.get("RNNLAB_THREADS", 1)))
    warnings.simplefilter("ignore", RnnlabWarning)
    torch.set_num_threads(1)  # this thread's; the engine's are its own (Engine's docstring)
    lm = load(model, precision=os.environ.get("RNNLAB_PRECISION", "fp32"))
    engine = None
    if isinstance(lm, LanguageModel):
        engine = Engine(lm, max_batch=limits.max_concurrent, threads=threads, busy_threads=busy_threads)
    return create_app(lm, limits, engine)


def engine_threads(threads: int | None) -> tuple[int, int]:
    """The engine's torch threads for `--threads` (None: the cores), and while more than `engine.BUSY_BATCH` streams
    step: by default one fewer, left to the HTTP side, whose work grows with the streams (RESULTS.md, run 20)."""
    if threads is None:
        cores = torch.get_num_threads()  # the cores, or $OMP_NUM_THREADS
        return cores, max(1, cores - 1)
    if threads < 1:
        raise RnnlabError(f"--threads must be at least 1, got {threads}")
    return threads, threads


def main_serve(model_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, *,
               max_prompt_chars: int = Limits.max_prompt_chars, max_tokens: int = Limits.max_tokens,
               max_concurrent: int = Limits.max_concurrent, device: str = "cpu", log_level: str = "info",
               threads: int | None = None, precision: str = "fp32", engine: str = "process") -> int:
    """`rnnlab serve`: load the model, listen, serve until Ctrl-C; the exit status. `threads`: torch's, for the
    engine's steps (`engine_threads`); this process's own threads run on one (`Engine`'s docstring says why).
    `engine` "process" (the default): an RNN's streams are stepped in a process of their own (engine_process.py),
    which served 32 clients 20% faster than "thread" (an engine thread in this process) on 2 cores."""
    if engine not in ENGINES:
        raise RnnlabError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    limits = Limits(max_prompt_chars=max_prompt_chars, max_tokens=max_tokens, max_concurrent=max_concurrent)
    threads, busy_threads = engine_threads(threads)
    torch.set_num_threads(1)
    with bind(host, port) as sock:  # before the model loads: a busy port fails in a moment, not after it
        lm = load(model_dir, device=device, precision=precision)
        if engine == "process" and isinstance(lm, LanguageModel):
            from rnnlab.inference.engine_process import ProcessEngine
            stepper = ProcessEngine(model_dir, max_batch=max_concurrent, precision=precision, device=device,
                                    threads=threads, busy_threads=busy_threads)
        elif isinstance(lm, LanguageModel):
            stepper = Engine(lm, max_batch=max_concurrent, threads=threads, busy_threads=busy_threads)
        else:  # a baseline, generated one request at a time on the server's threads
            stepper = None
            torch.set_num_threads(threads)
        app = create_app(lm, limits, stepper)
        # unknown prompt words are reported in each response; the server log need not repeat them
        warnings.simplefilter("ignore", RnnlabWarning)
        print(f"serving {lm} on {url_of(sock)}/  (API docs at /docs; Ctrl-C stops)", flush=True)
        with contextlib.suppress(ValueError):  # a host name, not an address: the user chose it
            if not ipaddress.ip_address(host).is_loopback:
                print(f"rnnlab: warning: listening on {host}: anyone who can reach this machine can use the "
                      f"model; there is no authentication", file=sys.stderr, flush=True)
        try:
            _server(app, log_level).run(sockets=[sock])
        except KeyboardInterrupt:
            pass  # uvicorn has shut down cleanly and passes Ctrl-C on; for a server it is the way to stop
    return 0
