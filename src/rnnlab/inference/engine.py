"""A batched generation engine: many streams of one RNN stepped together.

An RNN's state has a fixed size, so every active stream can take its next step in one batched
call, with no cache growing with length. One worker thread owns the model:

    submit(prompt ids) ──► waiting (first come, first served) ──► admitted when a slot is free:
                           the prompts admitted together read in one packed call of the fused
                           kernel (Stepper.prefill) ──► their states join the batch (a row each)
    each step:  the batch's logits ──► each stream samples its own token (its own settings and random
                generator; the plain ones as one batch) ──► tokens handed out ──► one batched step;
                a stream that is done, or cancelled by its reader, leaves the batch (its row) at once
    readers:    an iterator on any thread, or `await stream.next_tokens()` on an event loop, which
                the engine wakes once a step for all its streams (no thread hop a token)

    engine = Engine(rnnlab.load("runs/shakespeare"), max_batch=32)
    stream = engine.submit(lm.encode_prompt("ROMEO:"), length=200, seed=1, temperature=0.8)
    text = "".join(lm.tokenizer.decode([t]) for t in stream)      # token ids as they are made
    engine.close()

A model trained on many files ends a stream at the end of a document (its `finish` is then "stop").
The model's `precision` ("bf16": `rnnlab.load(..., precision="bf16")`) is the stepper's. A stream with the
same prompt, settings and seed gives the same tokens whatever else runs beside it: its random generator is its
own, and its row of the batch (and of its prompt's packed read) is computed from its own state
(the batched matrix products may round differently from a batch of one in the last bit, which
changes a sampled token only if the draw falls within that rounding of a boundary).
"""

from __future__ import annotations

import collections
import threading
import time

import torch

from rnnlab.errors import RnnlabError
from rnnlab.inference.blocks import BLOCK, block_stepper
from rnnlab.inference.lm import LanguageModel
from rnnlab.inference.sampling import Stepper, gumbel_max, gumbel_sampled, next_token
from rnnlab.inference.stream import Stream, new_stream
from rnnlab.models.rnnlm import evaluating

# When every stream samples plainly, the engine takes several steps in one call (inference/blocks.py: no Python
# between the ops), as many as fit in this time: a request that arrives meanwhile waits at most that much longer.
# 10 ms served 32 clients 1.1x faster than 5 ms; 20 ms (and up to 32 steps) no faster, with TTFT p50 doubled
# (benchmarks/RESULTS.md, run 19)
BLOCK_SECONDS = 0.010
# Past this many streams `busy_threads` step them: the server's HTTP work grows with its streams, and on 2 cores a
# second torch thread then lost (32 clients: 0.83-0.90x the tokens/s of one thread) where it had won (16 clients:
# 1.15-1.21x; 1 client: 1.4-1.5x; benchmarks/RESULTS.md, run 20). CALM_SECONDS: see _threads_wanted
BUSY_BATCH = 16
CALM_SECONDS = 1.0


class Engine:
    """`threads`: torch's intra-op threads for the engine's steps, set on its own thread (default: the process's
    count as it is); `busy_threads`: the count instead while more than BUSY_BATCH streams step (default: the
    same). Threads are per thread in torch, and several help the engine only if no other thread of its process
    runs torch ops on more than one: GNU OpenMP (torch's, on Linux) then counts more threads than cores, stops
    spinning between parallel regions, and every product waits to wake its helper. One stream stepped on two
    threads that way made 1,270 tokens/s, against 4,600 with the process's other threads on one, and 2,800 on
    one thread (benchmarks/RESULTS.md, run 20). So a process that hosts the engine keeps its other threads to
    one: `torch.set_num_threads(1)` before the model loads, as `rnnlab serve` does."""

    def __init__(self, lm: LanguageModel, *, max_batch: int = 32, threads: int | None = None,
                 busy_threads: int | None = None):
        if not isinstance(lm, LanguageModel):
            raise RnnlabError(f"the batched engine steps RNNs; a {lm.model_type} baseline is served one by one")
        if max_batch < 1:
            raise RnnlabError(f"--max-batch must be at least 1, got {max_batch}")
        for count in (threads, busy_threads):
            if count is not None and count < 1:
                raise RnnlabError(f"--threads must be at least 1, got {count}")
        self.lm, self.max_batch = lm, max_batch
        self.threads, self.busy_threads = threads, busy_threads or threads
        self.document = getattr(lm.tokenizer, "doc_id", None)  # past a document's end is another document
        self.waiting: collections.deque[Stream] = collections.deque()
        self.wake = threading.Condition()
        self.closed = False
        self.stopped = False                # the worker is ending: submit refuses (nothing would step the stream)
        self.steps = 0                      # batched steps taken; largest batch seen (for tests and stats)
        self.largest_batch = 0
        self.step_seconds = 0.0             # the last step's time (a block's, divided by its steps)
        self.threads_now: int | None = None  # the torch threads the last step ran on, where the engine set them
        self.busy_until = 0.0               # busy_threads step until then (perf_counter; CALM_SECONDS past a busy step)
        self.worker = threading.Thread(target=self._run, name="rnnlab-engine", daemon=True)
        self.warm = threading.Event()        # the worker has warmed up (or failed): the first requests need not wait
        self.worker.start()
        self.warm.wait()

    def submit(self, prompt: list[int], *, length: int, seed: int, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None, greedy: bool = False,
               generator: torch.Generator | None = None, presence_penalty: float = 0.0,
               frequency_penalty: float = 0.0, logprobs: int | None = None) -> Stream:
        """Queue a request; `generator` (default: seeded with `seed`) is the stream's own. The
        penalties lower the logit of each token already generated by presence + count x frequency
        (OpenAI's definition); `logprobs=N` makes each item (token, its log-probability, the N most
        likely tokens with theirs), from the model's distribution before the penalties."""
        stream = new_stream(prompt, length=length, seed=seed, temperature=temperature, top_k=top_k, top_p=top_p,
                            greedy=greedy, generator=generator, presence_penalty=presence_penalty,
                            frequency_penalty=frequency_penalty, logprobs=logprobs)
        with self.wake:
            if self.closed or self.stopped or not self.worker.is_alive():
                raise RnnlabError("the generation engine has stopped; restart the server")
            self.waiting.append(stream)
            self.wake.notify()
        return stream

    def close(self) -> None:
        with self.wake:
            self.closed = True
            self.wake.notify()
        self.worker.join(timeout=10)

    # -- the worker ------------------------------------------------------------------------------

    def _run(self) -> None:
        admitted: list[Stream] = []
        lm = self.lm
        net = lm.net
        batch = _Batch(0)  # until the stepper is made (its dim): the error paths below read its streams, none yet
        try:
            with torch.inference_mode(), evaluating(net):
                stepper = Stepper.of(net, lm.precision)
                block = block_stepper(stepper)  # None: the model steps from Python only
                self._step_on(self.threads)
                self._warm_up(stepper, block)
                self.warm.set()
                batch = _Batch(stepper.batch_dim)
                while True:
                    with self.wake:
                        while not batch.streams and not self.waiting and not self.closed:
                            self.wake.wait()
                        if self.closed:
                            break
                        while self.waiting and len(batch.streams) + len(admitted) < self.max_batch:
                            admitted.append(self.waiting.popleft())
                    if admitted:
                        self._admit(stepper, batch, admitted)
                        admitted = []
                    keep = [i for i, (stream, _) in enumerate(batch.streams)
                            if not stream.cancelled.is_set() and stream.made < stream.length]
                    ended = [batch.streams[i][0] for i in sorted(set(range(len(batch.streams))) - set(keep))]
                    for stream in ended:
                        stream.end()
                    self._wake(ended)
                    batch.keep(keep)
                    if not batch.streams:
                        continue
                    self._step_on(self._threads_wanted(len(batch.streams)))
                    try:
                        started, steps = time.perf_counter(), self._block_length(block, batch.streams)
                        if steps > 1:
                            batch.logits, batch.state = self._step_block(block, steps, batch.streams, batch.state,
                                                                         batch.logits)
                        else:
                            batch.logits, batch.state = self._step(stepper, batch.streams, batch.state, batch.logits)
                        self.step_seconds = (time.perf_counter() - started) / steps
                        self.steps += steps
                        self.largest_batch = max(self.largest_batch, len(batch.streams))
                    except Exception as e:  # noqa: BLE001 — the batch's streams fail; the engine goes on
                        for stream, _ in batch.streams:
                            stream.fail(e)
                        self._wake([stream for stream, _ in batch.streams])
                        batch.keep([])
                    else:
                        self._wake([stream for stream, _ in batch.streams])
        except BaseException as e:  # noqa: BLE001 — handed to every reader, who raises it
            for stream in [*(s for s, _ in batch.streams), *admitted]:
                stream.fail(e)
            raise
        finally:
            with self.wake:  # before the waiting are ended below: a stream that came later would wait forever
                self.stopped = True
            self.warm.set()
            for stream, _ in batch.streams:
                stream.end()
            with self.wake:
                for stream in self.waiting:
                    stream.end()
                self._wake([*(s for s, _ in batch.streams), *admitted, *self.waiting])

    def _warm_up(self, stepper: Stepper, block) -> None:
        """A step and three blocks on zero states of one row and of `max_batch`, before the first request: a
        step's first call took ~20 ms and the scripted block's first two ~35 and ~14 ms (TorchScript profiles its
        first runs), which a server's first requests would wait for (benchmarks/RESULTS.md, run 20)."""
        if not stepper.fast:
            return
        vocab = self.lm.tokenizer.vocab_size
        try:
            for rows in sorted({1, self.max_batch}):
                stepper.step(torch.zeros(rows, dtype=torch.long, device=self.lm.device), stepper.zero_state(rows))
                for _ in range(3 if block is not None else 0):
                    block(torch.zeros(rows, vocab), stepper.zero_state(rows), torch.ones(2, rows, vocab),
                          torch.ones(rows, 1), torch.full((2, rows), -1, dtype=torch.long))
        except Exception:  # noqa: BLE001 — only a head start: a step that fails fails its requests, as it would anyway
            pass

    def _threads_wanted(self, streams: int) -> int | None:
        """`busy_threads` while more than BUSY_BATCH streams step and until CALM_SECONDS after, else `threads`. The
        wait: at 32 clients whose requests end and start in waves, the batch dips under BUSY_BATCH again and again,
        and switching to two threads in each dip cost a fifth of the tokens/s and made TTFT p50 ~100 ms."""
        now = time.perf_counter()
        if streams > BUSY_BATCH:
            self.busy_until = now + CALM_SECONDS
        return self.busy_threads if now < self.busy_until else self.threads

    def _step_on(self, threads: int | None) -> None:
        """This thread's torch threads (and new threads' default) from now on; None leaves them as they are."""
        if threads is not None and threads != self.threads_now:
            torch.set_num_threads(threads)
            self.threads_now = threads

    def _admit(self, stepper: Stepper, batch: _Batch, streams: list[Stream], together: bool = True) -> None:
        """Prefill. A prompt of up to `Stepper.STEPPED_PROMPT` tokens joins the batch at once, from a zero state,
        and is fed through the batch's next steps (`Stream.feeding`); the longer ones admitted together are read
        in one call of the fused kernel where the stepper can (`Stepper.prefill`), else one by one. A prompt that
        fails fails its stream alone."""
        if not (stepper.fast and together):
            groups = [[stream] for stream in streams]
        else:
            vocab = self.lm.tokenizer.vocab_size  # a bad token id would fail the batch's step; read alone, its own
            short, long = [], []
            for stream in streams:
                fits = len(stream.prompt) <= stepper.STEPPED_PROMPT and all(0 <= t < vocab for t in stream.prompt)
                (short if fits else long).append(stream)
            if short:
                for stream in short:
                    stream.feeding.extend(stream.prompt)
                batch.add(short, stepper.zero_state(len(short)), torch.zeros(len(short), vocab, device=self.lm.device))
            groups = [long] if long else []
        for group in groups:
            try:
                if stepper.fast:
                    logits, state = stepper.prefill([stream.prompt for stream in group])
                else:
                    out, _, hidden = self.lm.net(torch.tensor([group[0].prompt], device=self.lm.device))
                    logits, state = out[:, -1], stepper.begin(hidden)
            except Exception as e:  # noqa: BLE001 — handed to its reader, who raises it
                if len(group) > 1:  # which one? each alone
                    self._admit(stepper, batch, group, together=False)
                    continue
                group[0].fail(e)
                self._wake(group)
                continue
            batch.add(group, state, logits)

    @staticmethod
    def _wake(streams: list[Stream]) -> None:
        """Wake the asyncio readers (next_tokens) of these streams that wait for a token, or for the end: one
        call onto each loop for all of them. A reader gathering tokens for its next chunk is left alone, so
        the loop is not woken each step for tokens nobody takes yet."""
        by_loop: dict = {}
        for stream in streams:
            if stream.loop is not None and (stream.waiting or stream.over):
                wanted = by_loop.setdefault(stream.loop, [])
                wanted += [stream.ready, stream.ended] if stream.over else [stream.ready]
        for loop, events in by_loop.items():
            try:
                loop.call_soon_threadsafe(_set_all, events)
            except RuntimeError:  # the loop has closed: nobody is reading
                pass

    def _step(self, stepper: Stepper, active: list, state, logits: torch.Tensor) -> tuple[torch.Tensor, object]:
        """Sample each stream's token (on the CPU, where its generator lives), hand them out, and take
        one batched step. Returns the batch's new logits (B, V) and state."""
        rows = logits.float().cpu()                                            # (B, V)
        tokens = torch.empty(len(active), dtype=torch.long)
        feeding = {i for i, (stream, _) in enumerate(active) if stream.feeding}  # still reading their prompts
        for i in feeding:
            tokens[i] = active[i][0].feeding.popleft()
        plain = [i for i, (stream, _) in enumerate(active) if i not in feeding and _plain(stream)]
        if plain:  # next_token's Gumbel-max draw, batched: each row's noise from the row's own generator
            noise = torch.empty(len(plain), rows.size(1))
            for row, i in zip(noise, plain):
                row.exponential_(generator=active[i][1])
            temperature = torch.tensor([[active[i][0].sampling["temperature"]] for i in plain])
            tokens[plain] = gumbel_max(rows[plain], temperature, noise)
        for i in sorted(set(range(len(active))) - set(plain) - feeding):  # the others, one by one
            (stream, generator), row = active[i], rows[i:i + 1]
            presence, frequency = stream.penalties
            if stream.counts and (presence or frequency):
                ids = torch.tensor(list(stream.counts))
                row = row.clone()
                row[0, ids] -= presence + frequency * torch.tensor(list(stream.counts.values()), dtype=row.dtype)
            tokens[i] = next_token(row, generator=generator, **stream.sampling)[0]
        for i, ((stream, _), token) in enumerate(zip(active, tokens.tolist())):
            if i not in feeding:
                self._hand(stream, token, rows[i])
        return stepper.step(tokens.to(self.lm.device), state)

    def _hand(self, stream: Stream, token: int, logits: torch.Tensor | None = None) -> None:
        """A token sampled for the stream goes to its reader (with `logprobs`, from its row of logits (V,))."""
        if token == self.document:  # the stream ends here, as lm.stream does; it leaves at the next step
            stream.finish, stream.made = "stop", stream.length
            return
        stream.made += 1
        if any(stream.penalties):  # the counts are the penalties' only use
            stream.counts[token] = stream.counts.get(token, 0) + 1
        if stream.logprobs is None:
            stream.tokens.put(token)
        else:
            lp = logits.double().log_softmax(-1)
            top = lp.topk(min(stream.logprobs, lp.numel()))
            stream.tokens.put((token, lp[token].item(), dict(zip(top.indices.tolist(), top.values.tolist()))))

    def _block_length(self, block, active: list) -> int:
        """How many steps the next call takes: 1 unless every stream samples plainly (no penalties, no
        logprobs) and the model has a scripted block; then as many as fit in BLOCK_SECONDS, up to BLOCK,
        and no more than the longest stream still needs."""
        if block is None or not all(gumbel_sampled(**stream.sampling) and not any(stream.penalties)
                                    and stream.logprobs is None for stream, _ in active):
            return 1
        fit = int(BLOCK_SECONDS / self.step_seconds) if self.step_seconds > 0 else 1
        needed = max(stream.length - stream.made + len(stream.feeding) for stream, _ in active)
        return max(1, min(BLOCK, fit, needed))

    def _step_block(self, block, steps: int, active: list, state, logits: torch.Tensor) -> tuple[torch.Tensor, object]:
        """`steps` of `_step` in one call of the scripted block: each stream's noise drawn from its own generator
        for the steps it samples (the same draws, in the same order, as step by step), its prompt's tokens
        forced where it still reads one; then each stream is handed its tokens, up to its end."""
        vocab = logits.size(1)
        noise = torch.ones(len(active), steps, vocab)  # a stream's rows contiguous: drawn in place, as one draw
        forced = torch.full((steps, len(active)), -1, dtype=torch.long)
        feds = []
        for i, (stream, generator) in enumerate(active):
            feds.append(fed := min(steps, len(stream.feeding)))
            if fed:
                forced[:fed, i] = torch.tensor([stream.feeding.popleft() for _ in range(fed)])
            if fed < steps:
                noise[i, fed:].exponential_(generator=generator)
        temperature = torch.tensor([[stream.sampling["temperature"]] for stream, _ in active])
        tokens, logits, state = block(logits, state, noise.transpose(0, 1), temperature, forced)
        for (stream, _), fed, made in zip(active, feds, tokens.t().tolist()):
            for token in made[fed:]:  # the steps after its prompt's last forced token
                if stream.made >= stream.length:
                    break
                self._hand(stream, token)
        return logits, state


def _plain(stream: Stream) -> bool:
    """Sampled by next_token's Gumbel-max branch, with no penalty in play: batchable."""
    return gumbel_sampled(**stream.sampling) and not (stream.counts and any(stream.penalties))


def _set_all(events: list) -> None:
    for event in events:
        event.set()


class _Batch:
    """The active streams and their state as one batch (the state as the Stepper keeps it between steps,
    its rows along `dim`; the logits (B, V)): rows are added when a stream joins and dropped when one
    leaves, not gathered every step."""

    def __init__(self, dim: int):
        self.dim = dim
        self.streams: list[tuple[Stream, torch.Generator]] = []
        self.state = None
        self.logits: torch.Tensor | None = None

    def add(self, streams: list[Stream], state, logits: torch.Tensor) -> None:
        """Streams join as rows of `state` and `logits`, in order, each with its random generator (its own,
        or one seeded with its seed)."""
        self.streams += [(s, s.generator or torch.Generator().manual_seed(s.seed)) for s in streams]
        if self.state is None:
            self.state, self.logits = state, logits
        else:
            self.state = _each(lambda a, b: torch.cat([a, b], self.dim), self.state, state)
            self.logits = torch.cat([self.logits, logits])

    def keep(self, rows: list[int]) -> None:
        if len(rows) == len(self.streams):
            return
        self.streams = [self.streams[i] for i in rows]
        if not rows:
            self.state = self.logits = None
            return
        index = torch.tensor(rows, device=self.logits.device)
        self.logits = self.logits[index]
        self.state = _each(lambda part: part.index_select(self.dim, index), self.state)


def _each(fn, *states):
    """`fn` over the tensors of states of one shape (a tensor, or lists and tuples of them), zipped."""
    if isinstance(states[0], torch.Tensor):
        return fn(*states)
    return type(states[0])(_each(fn, *parts) for parts in zip(*states))
