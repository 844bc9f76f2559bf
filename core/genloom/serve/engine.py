"""The engines: each model's work runs on its own worker thread, off the event loop.

* :class:`ContinuousEngine` serves generators with batched step-wise decoding
  (:class:`genloom.interfaces.BatchedDecoding`) and a streaming decoder: every request's
  rows join the running batch at the next step and leave it when they finish or their
  client goes away (continuous batching). Each row has its own condition, options and seed.
* :class:`BatchingEngine` serves every other generator: requests that arrive within a
  short window and ask for the same thing (condition and options, no seed) are generated
  as one batch, up to a bounded size (dynamic request batching). A request with a seed is
  generated on its own, so that it is reproducible.

Both queues are bounded: :class:`Overloaded` is raised instead of queueing more, and the
server answers 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch

from genloom.serve.metrics import Metrics
from genloom.serve.models import BadRequest, MediaFile, ServedModel

log = logging.getLogger(__name__)


class Overloaded(RuntimeError):
    """The model's queue is full (or the server is shutting down): try again later."""

    retry_after = 1


@dataclass
class RowSpec:
    """One row to decode: a condition, the generator's options and the row's seed."""

    condition: torch.Tensor | None
    options: dict[str, Any]
    seed: int


Event = tuple[str, int | None, Any, int]  # (kind, row, value, tokens): see TokenStream


class TokenStream:
    """One request's rows as they are decoded, read by the event loop.

    The worker thread puts events; the event loop awaits them. Events are
    ``("text", row, piece, tokens)``, ``("done", row, finish_reason, tokens)`` and
    ``("error", None, exception, 0)``. :meth:`cancel` (a client went away) frees the
    request's slots at the next step.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, rows: list[RowSpec]) -> None:
        self.loop = loop
        self.rows = rows
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.cancelled = threading.Event()
        self.submitted = time.perf_counter()
        self.first_token_at: float | None = None

    def put(self, kind: str, row: int | None, value: Any, tokens: int = 0) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, row, value, tokens))

    def cancel(self) -> None:
        self.cancelled.set()


def post(events: list[tuple[TokenStream, Event]]) -> None:
    """Hand a decoding step's events to their streams with one wake-up of each event loop.

    Waking the loop once per event instead (a write to its self-pipe each) costs a busy
    batch more than the server's own work per event.
    """
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue, Event]]] = {}
    for stream, event in events:
        by_loop.setdefault(stream.loop, []).append((stream.events, event))
    for loop, batch in by_loop.items():
        loop.call_soon_threadsafe(_put_all, batch)


def _put_all(batch: list[tuple[asyncio.Queue, Event]]) -> None:
    for queue, event in batch:
        queue.put_nowait(event)


@dataclass
class _Active:
    stream: TokenStream
    row: int
    piece_of: Callable[[torch.Tensor], str]
    tokens: list[torch.Tensor] = field(default_factory=list)
    count: int = 0


class ContinuousEngine:
    """Continuous batching over a model's :class:`~genloom.interfaces.SlotDecoder`."""

    def __init__(self, model: ServedModel, *, max_batch: int, max_queue: int, metrics: Metrics) -> None:
        self.model = model
        self.max_queue = max_queue
        self.metrics = metrics
        self.slots = model.generator.open_slots(max_batch)
        self.pending: deque[tuple[TokenStream, int]] = deque()
        self.active: dict[int, _Active] = {}
        self.lock = threading.Condition()
        self.closing = False
        self.thread = threading.Thread(target=self._run, name=f"genloom-serve-{model.name}", daemon=True)
        self.thread.start()

    def submit(self, stream: TokenStream) -> None:
        with self.lock:
            if self.closing:
                raise Overloaded("the server is shutting down")
            if len({id(s) for s, _ in self.pending}) >= self.max_queue:
                raise Overloaded(f"model {self.model.name!r} has {self.max_queue} requests waiting")
            self.pending.extend((stream, row) for row in range(len(stream.rows)))
            self.metrics.queue_depth.labels(self.model.name).set(len(self.pending))
            self.lock.notify()

    @property
    def busy(self) -> int:
        with self.lock:
            return len(self.pending) + len(self.active)

    def close(self) -> None:
        """Finish the rows admitted and queued, then stop the worker."""
        with self.lock:
            self.closing = True
            self.lock.notify()

    def _run(self) -> None:
        while True:
            with self.lock:
                while not self.pending and not self.active and not self.closing:
                    self.lock.wait()
                if self.closing and not self.pending and not self.active:
                    return
                admitted = []
                while self.pending and len(self.active) + len(admitted) < self.slots.capacity:
                    admitted.append(self.pending.popleft())
                self.metrics.queue_depth.labels(self.model.name).set(len(self.pending))
            for stream, row in admitted:
                self._admit(stream, row)
            for slot in [s for s, a in self.active.items() if a.stream.cancelled.is_set()]:
                self.slots.free(slot)
                del self.active[slot]
            if not self.active:
                continue
            self.metrics.batch_size.labels(self.model.name).set(len(self.active))
            started = time.perf_counter()
            try:
                outputs = self.slots.step()
            except Exception as err:  # a bug in the generator: fail its requests, keep serving
                log.exception("decoding step of model %s failed", self.model.name)
                for slot, active in self.active.items():
                    self.slots.free(slot)
                    active.stream.put("error", None, err)
                self.active.clear()
                continue
            produced = 0
            events: list[tuple[TokenStream, Event]] = []
            for slot, output in outputs.items():
                active = self.active[slot]
                produced += output.tokens.numel()
                events += self._events(active, output.tokens, output.finish)
                if output.done:
                    del self.active[slot]
            post(events)
            elapsed = time.perf_counter() - started
            self.metrics.tokens.labels(self.model.name).inc(produced)
            if elapsed > 0:
                self.metrics.tokens_per_second.labels(self.model.name).set(produced / elapsed)
            self.metrics.batch_size.labels(self.model.name).set(len(self.active))

    def _admit(self, stream: TokenStream, row: int) -> None:
        if stream.cancelled.is_set():
            return
        spec = stream.rows[row]
        try:
            rng = torch.Generator(device=self.model.device).manual_seed(spec.seed)
            slot = self.slots.add(condition=spec.condition, rng=rng, **spec.options)
        except ValueError as err:
            stream.cancel()  # the other rows of this request are not started either
            stream.put("error", None, BadRequest(f"model {self.model.name!r}: {err}"))
            return
        except Exception as err:  # a bug: fail this request, keep the engine serving the others
            log.exception("admitting a row of model %s failed", self.model.name)
            stream.cancel()
            stream.put("error", None, err)
            return
        self.active[slot] = _Active(stream, row, self.model.decoder.incremental())

    def _events(self, active: _Active, tokens: torch.Tensor, finish: str | None,
                ) -> list[tuple[TokenStream, Event]]:
        """What a row's step gives its stream: a piece of text, and its end if it finished."""
        events = []
        if tokens.numel():
            active.tokens.append(tokens)
            active.count += tokens.numel()
            piece = active.piece_of(tokens)
            if piece:
                stream = active.stream
                if stream.first_token_at is None:
                    stream.first_token_at = time.perf_counter()
                    self.metrics.time_to_first_token.labels(self.model.name).observe(
                        stream.first_token_at - stream.submitted)
                events.append((stream, ("text", active.row, piece, tokens.numel())))
        if finish is not None:
            all_tokens = torch.cat(active.tokens) if active.tokens else torch.empty(0, dtype=torch.long)
            events.append((active.stream, ("done", active.row, (finish, all_tokens), active.count)))
        return events


@dataclass
class MediaRequest:
    """``n`` examples under one condition with the generator's options; ``seed`` or None."""

    n: int
    condition: torch.Tensor | None
    options: dict[str, Any]
    seed: int | None
    future: Future = field(default_factory=Future)

    def key(self) -> tuple | None:
        """Requests with equal keys may share a batch; a seeded request shares with none."""
        if self.seed is not None:
            return None
        condition = None if self.condition is None else (
            tuple(self.condition.shape), tuple(self.condition.reshape(-1).tolist()))
        return condition, tuple(sorted((k, repr(v)) for k, v in self.options.items()))


@dataclass
class MediaResult:
    seed: int | None
    media: list[Any]
    files: list[MediaFile]
    gallery: list[MediaFile]


class BatchingEngine:
    """Dynamic request batching: a short window gathers compatible requests into one batch."""

    def __init__(
        self, model: ServedModel, *, max_batch: int, max_queue: int, window_s: float, metrics: Metrics
    ) -> None:
        self.model = model
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.window_s = window_s
        self.metrics = metrics
        self.pending: deque[MediaRequest] = deque()
        self.running = 0
        self.lock = threading.Condition()
        self.closing = False
        self.thread = threading.Thread(target=self._run, name=f"genloom-serve-{model.name}", daemon=True)
        self.thread.start()

    def submit(self, request: MediaRequest) -> Future:
        with self.lock:
            if self.closing:
                raise Overloaded("the server is shutting down")
            if len(self.pending) >= self.max_queue:
                raise Overloaded(f"model {self.model.name!r} has {self.max_queue} requests waiting")
            self.pending.append(request)
            self.metrics.queue_depth.labels(self.model.name).set(len(self.pending))
            self.lock.notify()
        return request.future

    @property
    def busy(self) -> int:
        with self.lock:
            return len(self.pending) + self.running

    def close(self) -> None:
        with self.lock:
            self.closing = True
            self.lock.notify()

    def _run(self) -> None:
        while True:
            with self.lock:
                while not self.pending and not self.closing:
                    self.lock.wait()
                if not self.pending:
                    return
                batch = self._gather()
                self.running = len(batch)
                self.metrics.queue_depth.labels(self.model.name).set(len(self.pending))
            self.metrics.batch_size.labels(self.model.name).set(sum(r.n for r in batch))
            try:
                self._generate(batch)
            except Exception as err:  # noqa: BLE001 - each request gets its error
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(err)
            finally:
                with self.lock:
                    self.running = 0
                self.metrics.batch_size.labels(self.model.name).set(0)

    def _gather(self) -> list[MediaRequest]:
        """The first waiting request and, within the window, those that may share its batch."""
        first = self.pending.popleft()
        batch, key, rows = [first], first.key(), first.n
        if key is None:
            return batch
        deadline = time.perf_counter() + self.window_s
        while rows < self.max_batch:
            for request in list(self.pending):
                if request.key() == key and rows + request.n <= self.max_batch:
                    self.pending.remove(request)
                    batch.append(request)
                    rows += request.n
            remaining = deadline - time.perf_counter()
            if remaining <= 0 or self.closing:
                break
            self.lock.wait(remaining)
        return batch

    def _generate(self, batch: list[MediaRequest]) -> None:
        first = batch[0]
        rows = sum(r.n for r in batch)
        rng = None
        if first.seed is not None:
            # As `genloom sample n=N seed=S` draws them (one generator, seeded once).
            rng = torch.Generator(device=self.model.device).manual_seed(first.seed)
        generator, decoder = self.model.generator, self.model.decoder
        try:
            with torch.inference_mode():
                outputs = generator.generate(rows, condition=first.condition, rng=rng, **first.options)
                media = [decoder.decode(out) for out in outputs]
        except ValueError as err:
            raise BadRequest(f"model {self.model.name!r}: {err}") from None
        start = 0
        for request in batch:
            part = media[start : start + request.n]
            start += request.n
            files, gallery = self.model.files(part)
            request.future.set_result(MediaResult(request.seed, part, files, gallery))
