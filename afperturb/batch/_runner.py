"""The batch execution strategy of the sweep: rounds of submit → poll → collect.

Each round looks at every unfinished trial: its next turn is either in the completion cache
(consume it; a reply without ``</OUTPUT>`` gets a ``<NEXT/>`` turn whose new cache key goes out
in a *follow-up* batch), in flight in a recorded batch (wait), failed too often (the trial fails
with the reason), or new (submit). New requests are chunked by request count and upload bytes;
each batch id is written to the store with its ``custom_id → cache key`` items *before* polling,
so a process killed while polling is resumed by a new one that polls the same batches instead
of submitting again. Collected results go into the ordinary completion cache, keyed by cache key,
so a batch sweep and a realtime sweep share every generation, and cached trials never go into a
batch. Expired, cancelled and retryable errored items are resubmitted in a later batch until
``max_retries`` resubmissions, then the trial ends failed-with-reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from afperturb.batch._api import (
    BatchAPI,
    BatchStatus,
    ItemResult,
    batch_api_for,
    now_iso,
    prefill_of,
)
from afperturb.errors import BackendError, DesignError
from afperturb.models.base import is_retryable
from afperturb.records import Completion, Condition, Message, Request, Trial
from afperturb.store import Store, TrialRow, cache_key
from afperturb.sweep._engine import END_TAG, _Engine, _extend
from afperturb.sweep._progress import Progress


def custom_id(key: str) -> str:
    """The provider-side id of one generation: a short hash of its cache key.

    Example:
        >>> custom_id("0" * 64)
        'af-49f2ae67ce7f96a271cd1d15'
    """
    return "af-" + hashlib.blake2b(key.encode(), digest_size=12).hexdigest()


@dataclass
class _Pending:
    """One trial on its way through the rounds."""

    condition: Condition
    request: Request
    sample: int
    messages: list[Message]
    completions: list[Completion] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    cached: bool = True
    error: str | None = None
    next_key: str = ""


@dataclass
class _Open:
    """A submitted batch this process is waiting for."""

    items: dict[str, str]  # custom_id -> cache key
    prefills: dict[str, str]


def chunk(
    items: Sequence[tuple[str, dict[str, Any]]],
    sizes: Sequence[int],
    max_requests: int,
    max_bytes: int,
    groups: Sequence[str] | None = None,
) -> list[list[int]]:
    """Split item indices into batches of at most ``max_requests`` and ``max_bytes`` each.

    A single item larger than ``max_bytes`` goes alone (the provider then reports it). With
    ``groups`` (each item's condition), a batch that must be cut is cut where a group ends
    when that keeps the next group whole (it fits in one batch): a condition's requests then
    go in one batch, so its cached prompt prefix is written once and read within it.

    Example:
        >>> chunk([("a", {}), ("b", {}), ("c", {})], [5, 5, 5], max_requests=2, max_bytes=100)
        [[0, 1], [2]]
        >>> chunk([("a", {}), ("b", {}), ("c", {})], [60, 60, 10], max_requests=9, max_bytes=100)
        [[0], [1, 2]]
        >>> chunk([("a", {})] * 5, [1] * 5, 4, 100, groups=["x", "x", "y", "y", "y"])
        [[0, 1], [2, 3, 4]]
    """
    out: list[list[int]] = []
    current: list[int] = []
    used = 0
    whole: dict[str, tuple[int, int]] = {}  # group -> (items, bytes)
    for g, size in zip(groups or (), sizes, strict=False):
        n, b = whole.get(g, (0, 0))
        whole[g] = (n + 1, b + size)
    for i, size in enumerate(sizes):
        if current and (len(current) >= max_requests or used + size > max_bytes):
            cut = len(current)
            if groups is not None:
                start = cut
                while start > 0 and groups[current[start - 1]] == groups[i]:
                    start -= 1  # the current group's items already in this batch
                n, b = whole[groups[i]]
                if 0 < start < cut and n <= max_requests and b <= max_bytes:
                    cut = start
            out.append(current[:cut])
            current = current[cut:]
            used = sum(sizes[k] for k in current)
        current.append(i)
        used += size
    if current:
        out.append(current)
    return out


class BatchRunner:
    """Runs one sweep call's trials through a provider batch API; see the module docstring."""

    def __init__(self, engine: _Engine, api: BatchAPI | None = None):
        if engine.store is None:
            raise DesignError(
                "mode='batch' needs a store (store='runs.sqlite'): batch ids and results are "
                "recorded there so a new process can resume polling"
            )
        self.e = engine
        self.store: Store = engine.store
        self.api = api if api is not None else batch_api_for(engine.model)
        cfg = engine.cfg
        self.max_requests = cfg.batch_max_requests
        self.max_bytes = cfg.batch_max_bytes
        self.poll_interval = cfg.batch_poll_interval
        self.price_factor = cfg.batch_price_factor
        self.mh = engine.model_hash
        self.failures = self.store.batch_failures(self.mh)
        self.open: dict[str, _Open] = {}
        self.inflight: dict[str, str] = {}
        for bid, _provider, info in self.store.open_batches(self.mh):
            self._track(bid, dict(self.store.batch_items(bid)), dict(info.get("prefills", {})))
        self.got: dict[str, Completion] = {}
        #: Cache keys collected from batches by this process (their trials are not "cached").
        self.fresh: set[str] = set()
        self.wanted: dict[str, tuple[list[Message], int]] = {}
        self.may_hit = self.store.has_model(self.mh)
        self.batches_submitted = 0
        self.batches_resumed = len(self.open)

    def _track(self, batch_id: str, items: dict[str, str], prefills: dict[str, str]) -> None:
        self.open[batch_id] = _Open(items, prefills)
        for key in items.values():
            self.inflight[key] = batch_id

    # -- the rounds ----------------------------------------------------------------------------

    async def run(self, work: Iterable[tuple[Condition, Request, int]], total: int) -> None:
        """Run every trial to completion or failure (or until the cost cap stops new batches)."""
        e = self.e
        pending = [_Pending(c, r, s, list(e.p.render(c, r))) for c, r, s in work]
        progress = Progress(total, enabled=e.cfg.progress, desc=f"{e.model_name} [batch]")
        try:
            while pending:
                pending = self._advance_all(pending, progress)
                if not pending:
                    break
                need = {t.next_key: t for t in pending if t.next_key not in self.inflight}
                if need:
                    cap = e.cfg.max_cost_usd
                    if cap is not None and e.state.spent_usd >= cap:
                        e.state.stopped_reason = "max_cost_usd"
                        need = {}
                    else:
                        await self._submit(list(need.values()))
                if not self.open:
                    break  # stopped by the cost cap with nothing left in flight
                await self._wait_for_some()
            self.store.flush()
        finally:
            progress.close(e.state.done, e.state.failed, e.state.tokens, e.state.spent_usd)

    def _advance_all(self, pending: list[_Pending], progress: Progress) -> list[_Pending]:
        still: list[_Pending] = []
        state = self.e.state
        for t in pending:
            if not self._advance(t):
                self.wanted[t.next_key] = (t.messages, t.sample)
                still.append(t)
                continue
            row = self._finish(t)
            self.store.put_trial(row)
            state.done += 1
            state.failed += row.trial.status == "failed"
            state.cached += row.cached
            progress.update(state.done, state.failed, state.tokens, state.spent_usd)
        return still

    def _lookup(self, key: str) -> Completion | None:
        # Collected results are taken once (memory stays flat); a second trial asking for the
        # same generation finds it in the store, where _collect made it durable.
        found = self.got.pop(key, None)
        if found is None and self.may_hit and key not in self.inflight:
            found = self.store.get_completion(key)
        return found

    def _advance(self, t: _Pending) -> bool:
        """Consume cached turns; True once the trial is finished (completed or failed)."""
        e = self.e
        cfg = e.cfg
        while True:
            key = cache_key(self.mh, t.messages, cfg.params, t.sample, cfg.seed)
            t.next_key = key
            comp = self._lookup(key)
            if comp is None:
                failed = self.failures.get(key)
                if key not in self.inflight and failed is not None:
                    count, reason, retryable = failed
                    if not retryable or count > cfg.max_retries:
                        t.error = f"batch item failed: {reason} (after {count} attempt(s))"
                        return True
                return False
            t.completions.append(comp)
            t.keys.append(key)
            e.state.tokens += comp.usage.input_tokens + comp.usage.output_tokens
            if key in self.fresh:
                t.cached = False
            joined = "".join(c.text for c in t.completions[-2:])
            if END_TAG in comp.text or END_TAG in joined or len(t.completions) >= cfg.max_turns:
                return True
            t.messages = _extend(t.messages, comp.text, e.continuation)

    def _finish(self, t: _Pending) -> TrialRow:
        e = self.e
        cost = sum(e.pricer(c.usage) or 0.0 for c in t.completions) * self.price_factor
        trial = Trial(
            model=e.model_name,
            condition_id=t.condition.id,
            request_id=t.request.id,
            sample=t.sample,
            status="failed" if t.error is not None else "completed",
            error=t.error,
            completions=tuple(t.completions),
            cache_key=t.keys[0] if t.keys else t.next_key,
            cost_usd=cost,
            variant=e.variant,
        )
        # The engine's labellers, as in the realtime sweep: heuristics get the request too.
        labels = (
            tuple([label(trial, t.condition, t.request) for label in e.labellers])
            if trial.status == "completed"
            else ()
        )
        return TrialRow(trial, e.run_id, t.cached and bool(t.keys), labels, tuple(t.keys))

    # -- submitting ----------------------------------------------------------------------------

    async def _submit(self, trials: list[_Pending]) -> None:
        params = self.e.cfg.params
        items: list[tuple[str, dict[str, Any]]] = []
        keys: list[str] = []
        prefills: list[str] = []
        for t in trials:
            cid = custom_id(t.next_key)
            items.append((cid, self.api.body(t.messages, params)))
            keys.append(t.next_key)
            prefills.append(prefill_of(t.messages, params))
        sizes = [self.api.line_bytes(cid, body) for cid, body in items]
        groups = [t.condition.id for t in trials]
        for part in chunk(items, sizes, self.max_requests, self.max_bytes, groups):
            status = await self._create([items[i] for i in part])
            mapping = {items[i][0]: keys[i] for i in part}
            pre = {items[i][0]: prefills[i] for i in part if prefills[i]}
            info = {"state": status.state, "prefills": pre}
            self.store.put_batch(
                status.batch_id, self.api.provider, self.mh, now_iso(), info, list(mapping.items())
            )
            self._track(status.batch_id, mapping, pre)
            self.batches_submitted += 1
            self.e.state.sent += len(part)

    async def _create(self, items: list[tuple[str, dict[str, Any]]]) -> BatchStatus:
        attempt = 0
        while True:
            try:
                return await self.api.submit(items)
            except BackendError as exc:
                if not is_retryable(exc) or attempt >= self.e.cfg.max_retries:
                    raise
                await self.e.sleep(self.e.backoff(attempt, None))
                attempt += 1

    # -- polling and collecting ----------------------------------------------------------------

    async def _wait_for_some(self) -> None:
        """Poll every open batch until at least one has ended, and collect those."""
        while True:
            collected = 0
            for bid in list(self.open):
                try:
                    status = await self.api.poll(bid)
                except BackendError as exc:
                    if not is_retryable(exc):
                        raise
                    continue  # a flaky poll is asked again next time round
                if status.terminal:
                    await self._collect(bid, status)
                    collected += 1
            if collected:
                return
            await self.e.sleep(self.poll_interval)

    async def _collect(self, bid: str, status: BatchStatus) -> None:
        batch = self.open[bid]
        results: list[ItemResult] = await self.api.results(status, batch.prefills)
        params = self.e.cfg.params
        failures: list[tuple[str, str, bool]] = []
        seen: set[str] = set()
        for r in results:
            key = batch.items.get(r.custom_id)
            if key is None or r.custom_id in seen:
                continue
            seen.add(r.custom_id)
            if r.completion is None:
                failures.append((r.custom_id, r.error or "unknown error", r.retryable))
                continue
            self.got[key] = r.completion
            self.fresh.add(key)
            self.e.state.spent_usd += (self.e.pricer(r.completion.usage) or 0.0) * self.price_factor
            asked = self.wanted.pop(key, None)  # its messages are no longer needed
            if asked is not None:
                messages, sample = asked
                self.store.put_completion(
                    key, self.mh, messages, params, sample, r.completion, wait=False
                )
        why = _batch_reason(status)
        failures.extend((cid, why, True) for cid in batch.items if cid not in seen)
        self.store.flush()  # the completions are durable before the batch counts as collected
        self.may_hit = True
        self.store.finish_batch(bid, status.state, failures)
        for cid, error, retryable in failures:
            key = batch.items[cid]
            count = self.failures[key][0] if key in self.failures else 0
            self.failures[key] = (count + 1, error, retryable)
        for key in batch.items.values():
            self.inflight.pop(key, None)
        del self.open[bid]


def _batch_reason(status: BatchStatus) -> str:
    errors = status.info.get("errors")
    detail = ""
    if isinstance(errors, dict) and errors.get("data"):
        first = errors["data"][0]
        detail = f": {first.get('code', '')} {first.get('message', '')}".rstrip()
    return f"missing from the results of batch {status.batch_id} ({status.state}{detail})"


async def run_batch(
    engine: _Engine,
    work: Iterable[tuple[Condition, Request, int]],
    total: int,
    api: BatchAPI | None = None,
) -> BatchRunner:
    """Run ``work`` through the engine's backend's batch API; returns the runner (its counts)."""
    runner = BatchRunner(engine, api)
    await runner.run(work, total)
    return runner


__all__ = ["BatchRunner", "chunk", "custom_id", "run_batch"]
