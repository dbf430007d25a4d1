"""Load on `rnnlab serve`: N clients streaming at once for a fixed time, on 127.0.0.1.

    .venv/bin/python benchmarks/serve_load.py runs/demo --clients 8 --seconds 15
    .venv/bin/python benchmarks/serve_load.py runs/demo --clients 8 --api openai   # POST /v1/completions
    .venv/bin/python benchmarks/serve_load.py --url http://127.0.0.1:8000      # a server already running
    .venv/bin/python benchmarks/serve_load.py runs/demo --clients 32 --offline   # and the ratio to sampling offline

With --offline it first measures the offline sampler on the same model in this process (`sample_ids`,
1000 steps, one stream and as many streams as the engine batches: clients, up to --max-concurrent; the
better of two runs each), then prints the server's rate as a ratio of those.

Without --url it starts the server itself, in its own process (so that the clients do not share
its GIL), on a free port, and reports its RSS at the start and the end of the load (a soak: memory
that grows is a leak). The longest wait for a generation slot is the server's /healthz figure. Each client is one connection that loops until the time is up: POST
/v1/generate with "stream": true, read to the "done" event. Requests still streaming when the
time is up are read to the end and counted. Time to first token is from sending the request
to the first generated token: the event after the prompt's echo. TTFT is printed over all requests, over all
but each client's first, and over those sent 2 s or more after the start (clients that start together send
their first two requests in bursts).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import re
import ssl
import statistics
import subprocess
import sys
import time

import httpx

SETTLE_SECONDS = 2.0  # requests sent this long after the start are no longer in the synchronized first waves
SERVER = ("import sys; from rnnlab.inference.launch import main_serve; "
          "sys.exit(main_serve(sys.argv[1], port=0, log_level='warning', max_concurrent=int(sys.argv[2]), "
          "precision=sys.argv[3], engine=sys.argv[4], threads=int(sys.argv[5]) if sys.argv[5:] else None))")


async def one_completion(client: httpx.AsyncClient, body: dict) -> tuple[float, int]:
    """The same over the OpenAI protocol: POST /v1/completions with "stream": true, read to [DONE];
    the usage chunk gives the token count."""
    started = time.perf_counter()
    first_token = tokens = None
    async with client.stream("POST", "/v1/completions", json=body) as response:
        response.raise_for_status()
        done = False
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line.removeprefix("data:").strip()
            if data == "[DONE]":
                done = True
                continue
            chunk = json.loads(data)
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif chunk["choices"] and chunk["choices"][0]["text"] and first_token is None:
                first_token = time.perf_counter() - started
    if first_token is None or tokens is None or not done:
        raise RuntimeError(f"stream ended without text, usage or [DONE] ({tokens} tokens)")
    return first_token, tokens


async def one_request(client: httpx.AsyncClient, body: dict) -> tuple[float, int]:
    """(seconds to the first generated token, tokens) of one streamed generation."""
    if body.get("_api") == "openai":
        return await one_completion(client, {k: v for k, v in body.items() if k != "_api"})
    body = {k: v for k, v in body.items() if k != "_api"}
    started = time.perf_counter()
    first_token = tokens = None
    async with client.stream("POST", "/v1/generate", json=body) as response:
        response.raise_for_status()
        pieces, event = 0, "message"
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line.removeprefix("event:").strip()
            elif line.startswith("data:") and event == "done":
                tokens = json.loads(line.removeprefix("data:"))["tokens"]
            elif line.startswith("data:"):
                pieces += 1
                if pieces == 2:
                    first_token = time.perf_counter() - started
    if first_token is None or tokens != pieces - 1:
        raise RuntimeError(f"{pieces} pieces, done event says {tokens} tokens")
    return first_token, tokens


async def client_loop(client: httpx.AsyncClient, body: dict, deadline: float, results: list, errors: list,
                      later: list, settled: list, settled_from: float) -> None:
    """Requests one after another until the deadline; `later` gets the results of all but the first (the
    first of every client arrives in the start-up burst, all clients at once), `settled` those sent from
    `settled_from` on (clients that started together also finish their first requests together, and their
    second ones: the first waves are bursts)."""
    first = True
    while time.perf_counter() < deadline:
        try:
            sent = time.perf_counter()
            result = await one_request(client, body)
            results.append(result)
            if not first:
                later.append(result)
            if sent >= settled_from:
                settled.append(result)
        except (httpx.HTTPError, RuntimeError, ValueError) as e:
            errors.append(f"{type(e).__name__}: {e}")
        first = False


def rss_mb(pid: int | None) -> float | None:
    """The resident memory of the server and its child processes (`--engine process`'s engine), in MB."""
    if pid is None:
        return None
    with open(f"/proc/{pid}/status") as f:
        own = next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return own + sum(rss_mb(int(child)) or 0 for child in f.read().split())


def offline_rates(model: str, counts: list[int], steps: int = 1000, precision: str = "fp32") -> dict[int, float]:
    """Tokens/s of rnnlab's offline sampler (`sample_ids`) on `model`, for each count of streams at once."""
    import rnnlab
    lm = rnnlab.load(model, precision=precision)
    return {streams: offline_rate(lm, streams, steps) for streams in counts}


def offline_rate(lm, streams: int, steps: int) -> float:
    import torch

    from rnnlab.inference.sampling import sample_ids
    prompt = torch.tensor([lm.tokenizer.encode("ROMEO:").tolist()]).repeat(streams, 1)
    best = 0.0
    with torch.inference_mode():
        for _ in range(2):
            started = time.perf_counter()
            for _ in sample_ids(lm.net, prompt, steps, generator=torch.Generator().manual_seed(1),
                                precision=lm.precision):
                pass
            best = max(best, streams * steps / (time.perf_counter() - started))
    return best


async def load(url: str, clients: int, seconds: float, body: dict, server_pid: int | None = None) -> float:
    results: list[tuple[float, int]] = []
    later: list[tuple[float, int]] = []
    settled: list[tuple[float, int]] = []
    errors: list[str] = []
    rss_start = rss_mb(server_pid)
    # a client object and a connection each, made before the clock starts. Not one client's pool for all: with 256
    # connections httpcore's pool spent seconds of this process's CPU matching requests to connections
    # (AsyncConnectionPool._assign_requests_to_connections, in py-spy), and the server sat idle, waiting for
    # requests (RESULTS.md, run 20). One SSL context for all: each client would build its own, ~30 ms each
    tls = ssl.create_default_context()
    one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    collections = []  # this process's full (generation-2) garbage collections during the load, and their ms
    timer = {}

    def gen2(phase: str, info: dict) -> None:
        if info["generation"] == 2:
            timer[phase] = time.perf_counter()
            if phase == "stop":
                collections.append(1000 * (timer["stop"] - timer["start"]))

    async with contextlib.AsyncExitStack() as stack:
        each = [await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=60, limits=one, verify=tls))
                for _ in range(clients)]
        # what start-up made (torch, with --offline) out of the collector's full passes, as the server does: a pass
        # over it took ~85 ms, which would land in the TTFT of every request then in flight
        gc.freeze()
        gc.callbacks.append(gen2)
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client, body, started + seconds, results, errors, later, settled,
                                           started + SETTLE_SECONDS)
                               for client in each))
        elapsed = time.perf_counter() - started
        gc.callbacks.remove(gen2)
    rss_end = rss_mb(server_pid)
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        health = (await client.get("/healthz")).json()

    print(f"clients   {clients} for {seconds:g} s, {body['max_tokens']} tokens per request, "
          f"prompt {body['prompt']!r}")
    if results:
        ttft = sorted(first for first, _ in results)
        p99 = statistics.quantiles(ttft, n=100, method="inclusive")[98] if len(ttft) > 1 else ttft[0]
        tokens = sum(n for _, n in results)
        print(f"requests  {len(results)} in {elapsed:.1f} s: {len(results) / elapsed:.1f} requests/s, "
              f"{tokens / elapsed:,.0f} tokens/s")
        print(f"ttft      p50 {1000 * statistics.median(ttft):.1f} ms, p99 {1000 * p99:.1f} ms")
        if len(later) > 1:
            steady = sorted(first for first, _ in later)
            print(f"ttft      after each client's first request (the start-up burst left out): p50 "
                  f"{1000 * statistics.median(steady):.1f} ms, p99 "
                  f"{1000 * statistics.quantiles(steady, n=100, method='inclusive')[98]:.1f} ms ({len(later)} requests)")
        if len(settled) > 1:
            steady = sorted(first for first, _ in settled)
            p99 = statistics.quantiles(steady, n=100, method="inclusive")[98]
            print(f"ttft      sent {SETTLE_SECONDS:g} s or more after the start (the first waves left out): p50 "
                  f"{1000 * statistics.median(steady):.1f} ms, p99 {1000 * p99:.1f} ms ({len(settled)} requests)")
    print(f"client    {len(collections)} full garbage collection(s) in the load generator during the load"
          + (f", the longest {max(collections):.0f} ms" if collections else ""))
    print(f"errors    {len(errors)}" + "".join(f"\n  {e}" for e in sorted(set(errors))[:5]))
    print(f"queue     longest wait for a generation slot {health.get('longest_wait_s', float('nan')):.3f} s "
          f"(server's /healthz)")
    if rss_start is not None:
        print(f"memory    server RSS {rss_start:.0f} MB at the start, {rss_end:.0f} MB at the end "
              f"({rss_end / rss_start:.2f}x)")
    return sum(n for _, n in results) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="model directory to serve (omit with --url)")
    parser.add_argument("--url", help="an rnnlab server already running, e.g. http://127.0.0.1:8000")
    parser.add_argument("--clients", type=int, default=8, help="concurrent streaming clients (default: 8)")
    parser.add_argument("--seconds", type=float, default=15, help="how long to keep starting requests (default: 15)")
    parser.add_argument("--max-tokens", type=int, default=200, help="tokens per request (default: 200)")
    parser.add_argument("--prompt", default="ROMEO:", help="prompt of every request (default: ROMEO:)")
    parser.add_argument("--max-concurrent", type=int, default=8,
                        help="the server's --max-concurrent, the engine's batch (default: 8)")
    parser.add_argument("--api", choices=["rnnlab", "openai"], default="rnnlab",
                        help="POST /v1/generate (rnnlab) or /v1/completions (openai) (default: rnnlab)")
    parser.add_argument("--server-threads", type=int,
                        help="the server's --threads (default: the server's, one fewer than the cores)")
    parser.add_argument("--engine", choices=["process", "thread"], default="process",
                        help="the server's --engine (default: process, as rnnlab serve's)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="the server's --precision, and the offline sampler's (default: fp32)")
    parser.add_argument("--offline", action="store_true",
                        help="first measure the offline sampler on the same model, and print the ratios")
    args = parser.parse_args()
    if not (args.model or args.url):
        parser.error("give a MODEL directory to serve, or the --url of a running server")
    if args.offline and not args.model:
        parser.error("--offline needs the MODEL directory")
    offline = {}
    if args.offline:
        offline = offline_rates(args.model, sorted({1, min(args.clients, args.max_concurrent)}),  # the engine's batch
                                precision=args.precision)
        for streams in offline:
            print(f"offline   {streams} stream(s): {offline[streams]:,.0f} tokens/s (sample_ids, same model, "
                  f"{args.precision})")

    body = {"prompt": args.prompt, "max_tokens": args.max_tokens, "stream": True, "_api": args.api}
    server = None
    url = args.url
    if url is None:
        server = subprocess.Popen([sys.executable, "-c", SERVER, args.model, str(args.max_concurrent), args.precision,
                                   args.engine, *([str(args.server_threads)] if args.server_threads else [])],
                                  stdout=subprocess.PIPE, text=True)
        banner = server.stdout.readline()  # "serving LanguageModel(...) on http://127.0.0.1:PORT/ ..."
        found = re.search(r"http://\S+?(?=/)", banner)
        if not found:
            server.kill()
            sys.exit(f"the server did not start: {banner!r}")
        url = found.group()
        print(f"server    {banner.split(' on ')[0].removeprefix('serving ')} at {url}")
    try:
        served = asyncio.run(load(url, args.clients, args.seconds, body, server.pid if server else None))
        batch = min(args.clients, args.max_concurrent)
        if offline and batch in offline:
            print(f"ratio     {served / offline[batch]:.2f}x the offline sampler's rate for {batch} stream(s)")
    finally:
        if server:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
