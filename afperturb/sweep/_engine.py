"""The sweep engine: a bounded worker pool that turns (condition, request, sample) into trials.

N worker tasks (N = ``concurrency``) pull from one lazy iterator of pending work, so a
million-trial sweep never holds a million coroutines; finished trials stream to the store (or,
without a store, to a list). Each trial: render → for each turn, look the generation up in the
cache or send it (through the adaptive limiter, with retries) → continue with ``<NEXT/>`` while
the reply has no ``</OUTPUT>`` → label with the inline classifiers → write, and only then take
new work, so a crash loses at most the in-flight trials.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from afperturb.classify.base import Classifier, labeller
from afperturb.errors import BackendTimeout, RateLimited
from afperturb.models.base import GenerationContext, Model, is_retryable
from afperturb.records import (
    Completion,
    Condition,
    Message,
    Request,
    SamplingParams,
    Trial,
    Usage,
)
from afperturb.results import SweepResult
from afperturb.store import (
    PendingCompletion,
    Store,
    TrialRow,
    cache_key,
    canonical_json,
    model_hash,
    run_variant,
    scrub,
)
from afperturb.sweep._config import SweepConfig
from afperturb.sweep._deadlines import Deadlines
from afperturb.sweep._progress import Progress
from afperturb.sweep._ratelimit import AdaptiveLimiter, Clock, Sleep
from afperturb.sweep._warmup import Warmup

END_TAG = "</OUTPUT>"


class PerturbationLike(Protocol):
    """What the engine needs from a :class:`~afperturb.design.Perturbation`."""

    def conditions(self) -> list[Condition]:
        """Every condition of the design."""
        ...

    def render(self, condition: Condition, request: Request) -> list[Message]:
        """The prompt of one condition for one request."""
        ...


def default_classifiers() -> list[Classifier]:
    """The free inline classifiers: accept/reject tags and the heuristic AF reader."""
    from afperturb.classify.heuristics import HeuristicAFClassifier
    from afperturb.classify.tags import TagClassifier

    return [TagClassifier(), HeuristicAFClassifier()]


def price(model_name: str, usage: Usage) -> float | None:
    """USD for one generation from the price table, or None when the model has no price."""
    return Pricer(model_name)(usage)


class Pricer:
    """A model's price looked up once per sweep (the table lookup is not free per trial)."""

    def __init__(self, model_name: str):
        self.price: Any = None
        try:
            from afperturb.models import pricing
        except ImportError:
            return
        found = pricing.price(model_name)
        if found is None and "/" in model_name:
            found = pricing.price(model_name.partition("/")[2])
        self.price = found

    def __call__(self, usage: Usage) -> float | None:
        """USD for ``usage`` (cache reads and writes at their rates), or None when unknown."""
        if self.price is None:
            return None
        return float(self.price.of(usage))


def dataset_hash(requests: Sequence[Request]) -> str:
    """Hash of the request set (ids and texts, in order): which data a run used."""
    h = hashlib.sha256()
    for r in requests:
        h.update(canonical_json([r.id, r.text]).encode())
    return h.hexdigest()


def _continuation(perturbation: object) -> str:
    scenario = getattr(perturbation, "scenario", None)
    text = getattr(scenario, "continuation_text", None)
    return text if isinstance(text, str) and text else "<NEXT/>"


def _extend(messages: list[Message], reply: str, continuation: str) -> list[Message]:
    """Messages for the next turn: the reply (joined to a prefill) then ``<NEXT/>``."""
    if messages and messages[-1].role == "assistant":
        prefill = messages[-1].content
        # Chat backends return the prefill joined to the reply; others only the new text.
        text = reply if reply.startswith(prefill) else prefill + reply
        head = [*messages[:-1], Message(role="assistant", content=text)]
    else:
        head = [*messages, Message(role="assistant", content=reply)]
    return [*head, Message(role="user", content=continuation)]


def _reason(error: BaseException, attempts: int) -> str:
    status = getattr(error, "status_code", None)
    where = f" [HTTP {status}]" if status is not None else ""
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}{where}: {text} (after {attempts} attempt(s))"


@dataclass
class _State:
    """Counters shared by the workers (one event loop: no locks needed)."""

    done: int = 0
    failed: int = 0
    cached: int = 0
    sent: int = 0
    tokens: int = 0
    spent_usd: float = 0.0
    stopped_reason: str | None = None
    rows: list[TrialRow] = field(default_factory=list)


class _Engine:
    """One sweep call's machinery; see the module docstring."""

    def __init__(
        self,
        perturbation: PerturbationLike,
        model: Model,
        cfg: SweepConfig,
        store: Store | None,
        classifiers: Sequence[Classifier],
        run_id: str,
        clock: Clock,
        sleep: Sleep,
    ):
        self.p = perturbation
        self.model = model
        self.cfg = cfg
        self.store = store
        self.classifiers = list(classifiers)
        # Heuristics get the request too: its words quoted in a reply are not the model's.
        self.labellers = [labeller(c) for c in self.classifiers]
        self.run_id = run_id
        self.sleep = sleep
        self.model_name = model.name
        self.pricer = Pricer(model.name)
        self.model_hash = model_hash(model.config())
        self.variant = sweep_variant(perturbation, self.model_hash, cfg)
        rpm, tpm = cfg.rate_limit if cfg.rate_limit is not None else (None, None)
        self.limiter = AdaptiveLimiter(cfg.concurrency, rpm, tpm, clock=clock, sleep=sleep)
        self.deadlines = Deadlines(cfg.timeout)
        # Prompt caching pays when a condition's first request writes the prefix alone.
        self.warmup = Warmup(bool(getattr(model, "prompt_caching", False)))
        self.rng = random.Random(cfg.seed)
        self.continuation = _continuation(perturbation)
        # A store that has never seen this model config cannot hit: skip the per-turn lookups.
        self.lookup = store is not None and store.has_model(self.model_hash)
        self.state = _State()

    # -- one generation ------------------------------------------------------------------------

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Full-jitter exponential backoff, never shorter than the server's retry-after."""
        ceiling = min(self.cfg.backoff_cap, self.cfg.backoff_base * (2**attempt))
        delay = self.rng.uniform(0.0, ceiling)
        if retry_after is not None:
            delay = retry_after + self.rng.uniform(0.0, min(retry_after, self.cfg.backoff_base))
        return delay

    async def generate(
        self, messages: list[Message], ctx: GenerationContext
    ) -> tuple[Completion | None, str | None]:
        """One turn with retries: the completion, or None and the failure reason."""
        params = self.cfg.params
        est = sum(len(m.content) for m in messages) / 4 + min(
            params.max_tokens, self.cfg.typical_output_tokens
        )
        attempt = 0
        while True:
            outcome = await self._attempt(messages, params, ctx, est)
            if isinstance(outcome, Completion):
                return outcome, None
            error = outcome
            retry_after = error.retry_after if isinstance(error, RateLimited) else None
            if isinstance(error, RateLimited):
                self.limiter.on_rate_limited(retry_after)
            if not is_retryable(error) or attempt >= self.cfg.max_retries:
                return None, _reason(error, attempt + 1)
            await self.sleep(self.backoff(attempt, retry_after))
            attempt += 1

    async def _attempt(
        self, messages: list[Message], params: SamplingParams, ctx: GenerationContext, est: float
    ) -> Completion | BaseException:
        """One HTTP attempt holding a limiter slot: the completion, or the error it raised."""
        await self.limiter.acquire(est)
        self.state.sent += 1
        task = asyncio.current_task()
        assert task is not None  # the engine's attempts always run in a task
        deadlines = self.deadlines
        deadlines.enter(task)
        try:
            completion = await self.model.generate(messages, params, ctx)
        except asyncio.CancelledError:
            if not deadlines.timed_out(task):
                raise
            return self._timeout_error(ctx)
        except TimeoutError:  # a backend's own bare timeout: the same retryable failure
            deadlines.leave(task)
            return self._timeout_error(ctx)
        except Exception as exc:  # backend errors, and backend bugs: fail the trial, not lose it
            deadlines.leave(task)
            return exc
        finally:
            self.limiter.release(est)
        deadlines.leave(task)
        self.limiter.on_success()
        used = completion.usage.input_tokens + completion.usage.output_tokens
        self.limiter.settle_tokens(est, used)
        return completion

    def _timeout_error(self, ctx: GenerationContext) -> BackendTimeout:
        return BackendTimeout(
            f"no answer within {self.cfg.timeout:g} s",
            condition_id=ctx.condition.id if ctx.condition else None,
            request_id=ctx.request.id if ctx.request else None,
        )

    # -- one trial -----------------------------------------------------------------------------

    async def run_trial(
        self, condition: Condition, request: Request, sample: int
    ) -> tuple[TrialRow, list[PendingCompletion]]:
        """Render, generate (continuing with ``<NEXT/>``), label; never raises for backends.

        Returns the row and the last generation still to cache: it goes to the store in the
        trial's own commit. Earlier turns are queued as soon as the next turn is sent, so a
        crash mid-continuation does not pay for them again.
        """
        cfg = self.cfg
        store = self.store
        messages = list(self.p.render(condition, request))
        completions: list[Completion] = []
        keys: list[str] = []
        pending: list[PendingCompletion] = []
        cached = True
        error: str | None = None
        for turn in range(cfg.max_turns):
            key = cache_key(self.model_hash, messages, cfg.params, sample, cfg.seed)
            comp = store.get_completion(key) if self.lookup and store is not None else None
            if comp is None:
                cached = False
                if pending and store is not None:
                    store.put_completion(*pending.pop(), wait=False)
                ctx = GenerationContext(
                    condition, request, sample, cfg.seed, turn, self.limiter.observe_headers
                )
                opens = turn == 0 and self.warmup.begin(condition.id)
                if turn == 0 and not opens:
                    await self.warmup.wait(condition.id)
                try:
                    comp, error = await self.generate(messages, ctx)
                finally:
                    if opens:
                        self.warmup.release(condition.id)
                if comp is None:
                    break
                if store is not None:
                    pending.append(
                        PendingCompletion(key, self.model_hash, messages, cfg.params, sample, comp)
                    )
                self.state.spent_usd += self.pricer(comp.usage) or 0.0
            self.state.tokens += comp.usage.input_tokens + comp.usage.output_tokens
            completions.append(comp)
            keys.append(key)
            # The closing tag may straddle two turns: look at the joined reply too.
            if END_TAG in comp.text or (
                len(completions) > 1 and END_TAG in completions[-2].text + comp.text
            ):
                break
            messages = _extend(messages, comp.text, self.continuation)
        # Not model_construct: with pydantic 2 it is ~2x slower than validating these records
        # (4.5 vs 2.2 us per Trial, measured); nested Completions are not re-validated.
        trial = Trial(
            model=self.model_name,
            condition_id=condition.id,
            request_id=request.id,
            sample=sample,
            status="failed" if error is not None else "completed",
            error=error,
            completions=tuple(completions),
            cache_key=keys[0] if keys else key,
            cost_usd=sum(self.pricer(c.usage) or 0.0 for c in completions),
            variant=self.variant,
        )
        labels = (
            tuple([label(trial, condition, request) for label in self.labellers])
            if error is None
            else ()
        )
        # Without a store the completions are not kept anywhere else: no references then.
        refs = tuple(keys) if store is not None else ()
        return TrialRow(trial, self.run_id, cached, labels, refs), pending

    # -- the pool ------------------------------------------------------------------------------

    async def worker(
        self, work: Iterator[tuple[Condition, Request, int]], progress: Progress
    ) -> None:
        """Pull work until it runs out or the sweep stops; keep the slot until the row is saved."""
        state = self.state
        for condition, request, sample in work:
            row, pending = await self.run_trial(condition, request, sample)
            if self.store is not None:
                await self.store.put_trial_async(row, pending)
            else:
                state.rows.append(row)
            state.done += 1
            state.failed += row.trial.status == "failed"
            state.cached += row.cached
            progress.update(state.done, state.failed, state.tokens, state.spent_usd)
            cap = self.cfg.max_cost_usd
            if cap is not None and state.spent_usd >= cap and state.stopped_reason is None:
                state.stopped_reason = "max_cost_usd"
            if state.stopped_reason is not None:
                return

    async def run(self, work: Iterator[tuple[Condition, Request, int]], total: int) -> None:
        """Run the worker pool to completion (or to the cost cap)."""
        progress = Progress(total, enabled=self.cfg.progress, desc=self.model_name)
        reserve = getattr(self.model, "reserve_connections", None)
        if callable(reserve):  # every worker gets a connection slot: none waits in the client
            reserve(self.cfg.concurrency)
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self.cfg.concurrency, max(total, 1))):
                    group.create_task(self.worker(work, progress))
        except BaseExceptionGroup as eg:
            raise eg.exceptions[0] from None
        finally:
            self.deadlines.close()
            progress.close(
                self.state.done, self.state.failed, self.state.tokens, self.state.spent_usd
            )


async def _renew(db: Store, run_id: str) -> None:
    """Keep this sweep's lease alive (every third of its time to live) until cancelled."""
    from afperturb.store._store import LEASE_TTL_S

    while True:
        await asyncio.sleep(LEASE_TTL_S / 3)
        await asyncio.to_thread(db.renew_lease, run_id)


def sweep_variant(perturbation: object, model_config_hash: str, cfg: SweepConfig) -> str:
    """The configuration id of this sweep's trials (:func:`afperturb.store.run_variant`)."""
    scenario = getattr(perturbation, "scenario", None)
    hashes = getattr(scenario, "template_hashes", None)
    return run_variant(
        model_config_hash,
        seed=cfg.seed,
        params=cfg.params,
        max_turns=cfg.max_turns,
        template_hashes=hashes() if callable(hashes) else {},
    )


def _work(
    conditions: Sequence[Condition],
    requests: Sequence[Request],
    samples: int,
    skip: set[str],
    model_name: str,
    shard: tuple[int, int] | None = None,
    variant: str = "",
    warmup: bool = False,
) -> Iterator[tuple[Condition, Request, int]]:
    """The pending trials, condition by condition.

    With ``warmup`` (a backend with prompt caching, :mod:`afperturb.sweep._warmup`) every
    condition's first pending trial comes first, then the rest in the same order.
    """
    from afperturb.records import trial_key

    part, parts = shard if shard is not None else (0, 1)
    if parts > 1:  # issue 8 (H8): the same stable hash as afperturb.shard.plan()
        from afperturb.shard import shard_of

    def pending(condition: Condition) -> Iterator[tuple[Condition, Request, int]]:
        for request in requests:
            for sample in range(samples):
                key = trial_key(model_name, condition.id, request.id, sample)
                if (
                    skip
                    and trial_key(model_name, condition.id, request.id, sample, variant) in skip
                ):
                    continue
                # Shards split the grid (the key without its variant), as shard.plan() does.
                if parts > 1 and shard_of(key, parts) != part:
                    continue
                yield condition, request, sample

    if not warmup:
        for condition in conditions:
            yield from pending(condition)
        return
    firsts: dict[str, tuple[str, int]] = {}
    for condition in conditions:
        for item in pending(condition):
            firsts[condition.id] = (item[1].id, item[2])
            yield item
            break
    for condition in conditions:
        first = firsts.get(condition.id)
        for item in pending(condition):
            if first is not None and (item[1].id, item[2]) == first:
                first = None
                continue
            yield item


def resolve_model(model: Model | str) -> Model:
    """A Model instance from a Model or a ``provider/model`` name."""
    if isinstance(model, str):
        from afperturb.models.base import get

        return get(model)
    return model


def manifest(
    perturbation: object,
    model: Model,
    cfg: SweepConfig,
    conditions: Sequence[Condition],
    requests: Sequence[Request],
    classifiers: Sequence[Classifier],
    created: str,
    variant: str,
) -> dict[str, Any]:
    """The run manifest: enough to know what produced a store, and nothing secret."""
    import afperturb

    scenario = getattr(perturbation, "scenario", None)
    hashes = getattr(scenario, "template_hashes", None)
    describe = getattr(perturbation, "describe", None)
    return {
        "afperturb_version": afperturb.__version__,
        "created": created,
        "scenario": getattr(scenario, "name", None),
        "template_hashes": hashes() if callable(hashes) else {},
        "design": describe() if callable(describe) else {},
        "condition_ids": [c.id for c in conditions],
        "dataset_hash": dataset_hash(requests),
        "n_requests": len(requests),
        "model": model.name,
        "model_config": scrub(model.config()),
        "seed": cfg.seed,
        "samples": cfg.samples,
        "params": cfg.params.model_dump(mode="json"),
        "max_turns": cfg.max_turns,
        "classifiers": {c.name: c.config_hash for c in classifiers},
        "variant": variant,
        "mode": cfg.mode,  # issue 8: how it ran, and which part (not compared by merge)
        "shard": list(cfg.shard) if cfg.shard is not None else None,
    }


async def run_sweep(
    perturbation: PerturbationLike,
    model: Model | str,
    requests: Iterable[Request],
    cfg: SweepConfig,
    store: Store | str | Path | None,
    classifiers: Sequence[Classifier] | None,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
) -> SweepResult:
    """The body of :func:`sweep_async` once options are resolved."""
    if cfg.processes > 1:  # issue 4 (H11): N forked shard workers sharing the store
        from afperturb.sweep._processes import run_processes

        return await run_processes(perturbation, model, list(requests), cfg, store, classifiers)
    backend = resolve_model(model)
    reqs = list(requests)
    conditions = list(perturbation.conditions())
    clfs = default_classifiers() if classifiers is None else list(classifiers)
    owned = isinstance(store, str | Path)
    db = Store.open(store) if isinstance(store, str | Path) else store
    created = datetime.now(UTC).isoformat()
    run_id = uuid.uuid4().hex
    engine = _Engine(perturbation, backend, cfg, db, clfs, run_id, clock, sleep)
    skip: set[str] = set()
    batch_info: dict[str, Any] = {}
    renewing: asyncio.Task[None] | None = None
    try:
        if db is not None:
            # Refused here, before anything is sent, when another live sweep of this
            # configuration writes into the same store (it would pay for the same trials).
            await asyncio.to_thread(
                db.acquire_lease, backend.name, engine.variant, run_id, cfg.shard
            )
            renewing = asyncio.create_task(_renew(db, run_id))
            info = manifest(
                perturbation, backend, cfg, conditions, reqs, clfs, created, engine.variant
            )
            await asyncio.to_thread(
                db.put_run, run_id, backend.name, created, info, conditions, reqs
            )
            if not cfg.retry_failed:
                failed = db.trials(model=backend.name, status="failed", variant=engine.variant)
                skip = {t.key for t in failed}
        total = len(conditions) * len(reqs) * cfg.samples
        grid = (
            conditions,
            reqs,
            cfg.samples,
            skip,
            backend.name,
            cfg.shard,
            engine.variant,
            # A batch is answered whole: ordering its warm-ups first would not make them first.
            engine.warmup.enabled and cfg.mode != "batch",
        )
        work = _work(*grid)
        if cfg.shard is not None:  # issue 8 (H8): the progress total of this shard only
            total = sum(1 for _ in _work(*grid))
            work = _work(*grid)
        if cfg.mode == "batch":  # issue 8 (H8): provider batch APIs instead of the worker pool
            from afperturb.batch import run_batch

            runner = await run_batch(engine, work, total)
            batch_info = {
                "batches_submitted": runner.batches_submitted,
                "batches_resumed": runner.batches_resumed,
            }
        else:
            await engine.run(work, total)
        if db is not None:
            await asyncio.to_thread(db.flush)
    finally:
        if renewing is not None:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            await asyncio.shield(asyncio.to_thread(db.release_lease, run_id))  # type: ignore[union-attr]
        if owned and db is not None:
            await asyncio.to_thread(db.stop_writer)
        if isinstance(model, str):
            await backend.aclose()
    state = engine.state
    info = {
        "run_id": run_id,
        "sent": state.sent,
        "cached": state.cached,
        "failed": state.failed,
        "spent_usd": state.spent_usd,
        "rate_limit_cuts": engine.limiter.cuts,
        "lowest_window": engine.limiter.lowest,
        "provider_limits": dict(engine.limiter.provider_limits),
        "mode": cfg.mode,
        **batch_info,
    }
    if db is not None:
        return SweepResult.from_store(
            db,
            model=backend.name,
            conditions=conditions,
            request_ids=[r.id for r in reqs],
            samples=cfg.samples,
            stopped_reason=state.stopped_reason,
            run_info=info,
            variant=engine.variant,
        )
    return SweepResult.from_rows(
        state.rows, conditions, stopped_reason=state.stopped_reason, run_info=info
    )


__all__ = ["PerturbationLike", "default_classifiers", "price", "run_sweep"]
