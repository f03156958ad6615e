"""Batch mode for anything that calls ``model.generate()``: the judges in particular.

:class:`BatchedModel` wraps a realtime backend and is itself a :class:`~afperturb.models.base.
Model`: each ``generate()`` call joins a queue and waits; a pump task submits the queue as
provider batches (chunked like the sweep's), polls them with the injected sleep, and resolves
every waiting call with its completion, or with a non-retryable
:class:`~afperturb.errors.BackendResponseError` naming the reason once an item has failed
``max_retries`` resubmissions. Its ``config()`` is the wrapped backend's, so the judges' cache
keys (and hence their cached votes) are the same in batch and realtime mode.

Judge with it by giving the judges a concurrency large enough to fill a batch::

    judge = af.classify.judges.get("af_reasoning").using(BatchedModel(model, store=db))
    result.classify(judge, concurrency=5_000)

With a ``store``, batch ids and items are recorded like the sweep's: a new process asking for
the same generations (the same messages, params and occurrence) waits for the recorded batches
instead of submitting again. Identical requests (several vote chunks of one prompt) are told
apart by their occurrence index in this process, so they stay independent samples.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from afperturb.batch._api import BatchAPI, BatchStatus, batch_api_for, now_iso, prefill_of
from afperturb.batch._runner import chunk, custom_id
from afperturb.errors import BackendError, BackendResponseError
from afperturb.models.base import GenerationContext, Model, is_retryable
from afperturb.records import Completion, Message, SamplingParams
from afperturb.store import Store, cache_key, model_hash

Sleep = Any  # an async callable taking seconds (asyncio.sleep, or a test's no-op)


@dataclass
class _Ask:
    key: str
    messages: Sequence[Message]
    params: SamplingParams
    waiters: list[asyncio.Future[Completion]] = field(default_factory=list)
    attempts: int = 0


class BatchedModel:
    """A backend whose generations go out through its provider's batch API.

    Args:
        model: An ``openai``, ``openai-completions`` or ``anthropic`` backend.
        store: Where batch ids are recorded (resume); None keeps them in memory only.
        max_requests: Most requests per batch.
        max_bytes: Most upload bytes per batch.
        linger: Seconds the pump waits for more calls before submitting a batch.
        poll_interval: Seconds between polls.
        max_retries: Resubmissions of an expired or retryably failed item.
        sleep: Async sleep (tests inject a no-op).
        api: A :class:`~afperturb.batch.BatchAPI` to use instead of the backend's own.
    """

    def __init__(
        self,
        model: Model,
        *,
        store: Store | None = None,
        max_requests: int = 50_000,
        max_bytes: int = 180_000_000,
        linger: float = 1.0,
        poll_interval: float = 30.0,
        max_retries: int = 3,
        sleep: Sleep = asyncio.sleep,
        api: BatchAPI | None = None,
    ):
        self.inner = model
        self.name = model.name
        self.api = api if api is not None else batch_api_for(model)
        self.store = store
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.linger = linger
        self.poll_interval = poll_interval
        self.max_retries = max_retries
        self.sleep = sleep
        self.mh = model_hash(model.config())
        self.queue: dict[str, _Ask] = {}
        self.open: dict[str, dict[str, _Ask]] = {}  # batch id -> custom_id -> ask
        self.recorded: dict[str, tuple[str, str]] = {}  # key -> (batch id, custom_id)
        self.seen: dict[str, int] = {}
        self.pump: asyncio.Task[None] | None = None
        self.batches_submitted = 0
        if store is not None:
            for bid, _provider, _info in store.open_batches(self.mh):
                self.open[bid] = {}
                for cid, key in store.batch_items(bid):
                    self.recorded[key] = (bid, cid)

    def __repr__(self) -> str:
        return f"<BatchedModel {self.name} via {self.api.provider} batches>"

    def config(self) -> dict[str, Any]:
        """The wrapped backend's config: batch and realtime share cache keys."""
        return self.inner.config()

    async def aclose(self) -> None:
        """Stop the pump and close the wrapped backend."""
        if self.pump is not None and not self.pump.done():
            self.pump.cancel()
        await self.inner.aclose()

    async def generate(
        self,
        messages: Sequence[Message],
        params: SamplingParams,
        context: GenerationContext | None = None,
    ) -> Completion:
        """Join the next batch and wait for this generation's result."""
        base = cache_key(self.mh, messages, params, 0)
        occurrence = self.seen.get(base, 0)
        self.seen[base] = occurrence + 1
        key = cache_key(self.mh, messages, params, occurrence)
        future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        where = self.recorded.pop(key, None)
        if where is not None and where[0] in self.open:  # a batch a killed process left behind
            bid, cid = where
            ask = self.open[bid].setdefault(cid, _Ask(key, messages, params))
            ask.waiters.append(future)
        else:
            self.queue.setdefault(key, _Ask(key, messages, params)).waiters.append(future)
        if self.pump is None or self.pump.done():
            self.pump = asyncio.create_task(self._pump())
        return await future

    # -- the pump ------------------------------------------------------------------------------

    async def _pump(self) -> None:
        try:
            while self.queue or any(self.open.values()):  # empty: only others' old batches
                await asyncio.sleep(0)  # let every caller of this loop pass join the queue
                await self.sleep(self.linger)
                if self.queue:
                    await self._submit()
                await self._poll_once()
        except BaseException as exc:  # tell every waiter, whatever stopped the pump
            self._fail_all(exc)
            raise

    def _fail_all(self, exc: BaseException) -> None:
        asks = [*self.queue.values(), *(a for b in self.open.values() for a in b.values())]
        for ask in asks:
            for w in ask.waiters:
                if not w.done():
                    w.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))

    async def _submit(self) -> None:
        asks = list(self.queue.values())
        self.queue.clear()
        items = [(custom_id(a.key), self.api.body(a.messages, a.params)) for a in asks]
        sizes = [self.api.line_bytes(cid, body) for cid, body in items]
        for part in chunk(items, sizes, self.max_requests, self.max_bytes):
            status = await self.api.submit([items[i] for i in part])
            mapping = {items[i][0]: asks[i] for i in part}
            if self.store is not None:
                prefills = {
                    cid: p for cid, a in mapping.items() if (p := prefill_of(a.messages, a.params))
                }
                self.store.put_batch(
                    status.batch_id,
                    self.api.provider,
                    self.mh,
                    now_iso(),
                    {"state": status.state, "prefills": prefills},
                    [(cid, a.key) for cid, a in mapping.items()],
                )
            self.open[status.batch_id] = mapping
            self.batches_submitted += 1

    async def _poll_once(self) -> None:
        # A batch left behind by a killed process is polled once someone waits for it.
        for bid in [b for b, asks in self.open.items() if asks]:
            try:
                status = await self.api.poll(bid)
            except BackendError as exc:
                if not is_retryable(exc):
                    raise
                continue
            if status.terminal:
                await self._collect(bid, status)
        if self.open and not self.queue:
            await self.sleep(self.poll_interval)

    async def _collect(self, bid: str, status: BatchStatus) -> None:
        asks = self.open.pop(bid)
        prefills = {cid: prefill_of(a.messages, a.params) for cid, a in asks.items()}
        results = {r.custom_id: r for r in await self.api.results(status, prefills)}
        failures: list[tuple[str, str, bool]] = []
        for cid, ask in asks.items():
            r = results.get(cid)
            if r is not None and r.completion is not None:
                for w in ask.waiters:
                    if not w.done():
                        w.set_result(r.completion)
                continue
            reason = r.error if r is not None and r.error else f"missing ({status.state})"
            retryable = r.retryable if r is not None else True
            failures.append((cid, reason, retryable))
            ask.attempts += 1
            if retryable and ask.attempts <= self.max_retries:
                self.queue.setdefault(ask.key, ask)
                continue
            error = BackendResponseError(
                f"{self.name}: batch item failed: {reason} (after {ask.attempts} attempt(s))",
                retryable=False,
            )
            for w in ask.waiters:
                if not w.done():
                    w.set_exception(error)
        if self.store is not None:
            self.store.finish_batch(bid, status.state, failures)


__all__ = ["BatchedModel"]
