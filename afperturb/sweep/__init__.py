"""The sweep engine: run a perturbation's conditions × requests × samples on one model.

``sweep()`` and ``await sweep_async()`` take the same arguments; options can also come grouped
in a :class:`SweepConfig` (explicit keyword arguments that differ from their defaults override
it). Everything is cached in the store by content, so running the same call again sends no
request, and a killed sweep resumes where it stopped. See ``docs/sweep.md``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from afperturb.classify.base import Classifier
from afperturb.errors import DesignError, StoreError, short_repr, unknown_choice
from afperturb.models.base import Model
from afperturb.records import Request, SamplingParams
from afperturb.results import SweepResult
from afperturb.store import Store
from afperturb.sweep._config import DEFAULTS, SweepConfig
from afperturb.sweep._engine import PerturbationLike, default_classifiers, run_sweep
from afperturb.sweep._estimate import CostEstimate, estimate_cost
from afperturb.sweep._ratelimit import AdaptiveLimiter, Clock, Sleep

_UNSET = object()


def _config(config: SweepConfig | None, **options: Any) -> SweepConfig:
    """Merge explicit options over ``config``; an option equal to its default does not count."""
    base = config if config is not None else DEFAULTS
    if options.get("params") is None:
        options.pop("params", None)
    # An unknown name never equals a default, so merged() reports it (with the valid ones).
    changed = {k: v for k, v in options.items() if v != getattr(DEFAULTS, k, _UNSET)}
    if config is None:
        changed = {k: v for k, v in options.items() if k != "params" or v is not None}
    return base.merged(changed)


def _mode(mode: str) -> str:
    """Check ``mode`` early, naming the valid ones (issue 8)."""
    if mode not in ("realtime", "batch"):
        raise unknown_choice("mode", mode, ["batch", "realtime"])
    return mode


def _check_keywords(unknown: dict[str, Any]) -> None:
    """A misspelled keyword of sweep() is a DesignError naming it and the valid ones."""
    if unknown:
        valid = [p for p in inspect.signature(sweep_async).parameters if p != "unknown"]
        raise unknown_choice("sweep option", sorted(unknown)[0], valid, suggest=True)


def check_requests(requests: Iterable[Request]) -> list[Request]:
    """The request set as a list; a DesignError unless every item is a Request with its own id.

    Catches a bare string (which would iterate into characters), plain strings or dicts in
    the list, and two requests sharing an id (their trials would silently merge into one).
    """
    hint = "build them with af.datasets.make_requests(texts, source) or af.datasets.from_csv"
    if isinstance(requests, str | bytes | Request):
        raise DesignError(
            f"requests must be a list of Request objects, got one {type(requests).__name__} "
            f"{short_repr(requests)}; {hint}"
        )
    try:
        items = list(requests)
    except TypeError as exc:
        raise DesignError(
            f"requests must be a list of Request objects, got {short_repr(requests)} "
            f"({type(requests).__name__}); {hint}"
        ) from exc
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        if not isinstance(item, Request):
            raise DesignError(
                f"requests[{index}] is {short_repr(item)} ({type(item).__name__}), not a "
                f"Request; {hint}"
            )
        first = seen.setdefault(item.id, index)
        if first != index:
            raise DesignError(
                f"duplicate request id {item.id!r} at requests[{first}] and requests[{index}]; "
                "every request needs its own id (trials are keyed by it)"
            )
    return items


def check_store_path(store: Store | str | Path | None) -> None:
    """A store path's folder must exist: a StoreError naming it (nothing is created)."""
    if isinstance(store, str | Path):
        folder = Path(store).parent
        if not folder.is_dir():
            raise StoreError(
                f"cannot create store {str(store)!r}: directory {str(folder)!r} does not "
                "exist (create it first)"
            )


def _shard(shard: tuple[int, int] | None) -> tuple[int, int] | None:
    """Check ``shard=(i, k)`` early with a DesignError naming the valid range (issue 8)."""
    if shard is None:
        return None
    try:
        i, k = (int(x) for x in shard)
    except (TypeError, ValueError) as exc:
        raise DesignError(f"shard must be a pair (i, k) of integers; got {shard!r}") from exc
    if k < 1 or not 0 <= i < k:
        raise DesignError(f"shard (i, k) needs k >= 1 and 0 <= i < k; got {shard!r}")
    return (i, k)


def _check_processes(processes: int) -> int:
    """Check ``processes`` early with a DesignError naming the bad value (issue 4)."""
    if not isinstance(processes, int) or processes < 1:
        raise DesignError(f"processes must be an integer >= 1; got {processes!r}")
    return processes


async def sweep_async(
    perturbation: PerturbationLike,
    model: Model | str,
    requests: Iterable[Request],
    samples: int = 1,
    seed: int = 0,
    store: Store | str | Path | None = None,
    concurrency: int = 64,
    rate_limit: tuple[float | None, float | None] | None = None,
    timeout: float = 120.0,
    max_retries: int = 6,
    max_cost_usd: float | None = None,
    progress: bool = True,
    params: SamplingParams | None = None,
    classifiers: Sequence[Classifier] | None = None,
    config: SweepConfig | None = None,
    *,
    mode: str = "realtime",
    shard: tuple[int, int] | None = None,
    processes: int = 1,
    clock: Clock | None = None,
    sleep: Sleep | None = None,
    **unknown: Any,
) -> SweepResult:
    """Run every condition × request × sample on ``model``; the native async form of sweep().

    Every argument is checked before any request is sent: a misspelled keyword, an option out
    of range, requests that are not :class:`~afperturb.records.Request` objects or share an
    id, and a store path in a folder that does not exist are
    :class:`~afperturb.errors.DesignError` (the last a :class:`~afperturb.errors.StoreError`)
    naming the value and what is allowed.

    Args:
        perturbation: the design (``conditions()`` and ``render()``).
        model: a backend, or a ``provider/model`` name for :func:`afperturb.models.get`.
        requests: the request set.
        samples: samples per (condition, request).
        seed: the sweep seed (simulated models and retry jitter draw from it).
        store: a :class:`Store` or a path; None keeps everything in memory (no cache).
        concurrency: worker tasks, i.e. the most trials in flight.
        rate_limit: ``(requests per minute, tokens per minute)``, either may be None.
        timeout: seconds per HTTP attempt before it counts as a retryable timeout.
        max_retries: retries per generation before the trial fails with its reason.
        max_cost_usd: stop taking new trials once this much has been spent.
        progress: show a tqdm bar (notebook or terminal).
        params: sampling parameters (temperature, max_tokens, ...).
        classifiers: inline classifiers; None means tags + heuristic AF; ``[]`` means none.
        config: a :class:`SweepConfig`; explicit arguments that differ from defaults win.
        mode: ``"realtime"`` (one HTTP request per generation) or ``"batch"`` (the provider's
            batch API at the batch price; needs a store; see ``docs/scale.md``).
        shard: ``(i, k)`` runs only the work items whose stable hash % k == i
            (:func:`afperturb.shard.plan`); merge the stores with :func:`afperturb.shard.merge`.
        processes: worker processes; N > 1 forks N shard workers that share the store (which
            must be given), each with 1/N of ``concurrency``, ``rate_limit`` and
            ``max_cost_usd``: for more trials/s than one core's worth of client CPU allows.
        clock: monotonic clock for the rate limiter (tests).
        sleep: async sleep for backoff and rate limits (tests).
        unknown: nothing is accepted here: a misspelled keyword is a DesignError.

    Returns:
        A :class:`~afperturb.results.SweepResult` (lazy over the store when there is one);
        ``stopped_reason`` is ``"max_cost_usd"`` when the cost cap ended the sweep early.
    """
    _check_keywords(unknown)
    cfg = _config(
        config,
        samples=samples,
        seed=seed,
        concurrency=concurrency,
        rate_limit=rate_limit,
        timeout=timeout,
        max_retries=max_retries,
        max_cost_usd=max_cost_usd,
        progress=progress,
        params=params,
        mode=_mode(mode),
        shard=_shard(shard),
        processes=_check_processes(processes),
    )
    reqs = check_requests(requests)
    check_store_path(store)
    return await run_sweep(
        perturbation,
        model,
        reqs,
        cfg,
        store,
        classifiers,
        clock=clock or time.monotonic,
        sleep=sleep or asyncio.sleep,
    )


def sweep(
    perturbation: PerturbationLike,
    model: Model | str,
    requests: Iterable[Request],
    samples: int = 1,
    seed: int = 0,
    store: Store | str | Path | None = None,
    concurrency: int = 64,
    rate_limit: tuple[float | None, float | None] | None = None,
    timeout: float = 120.0,
    max_retries: int = 6,
    max_cost_usd: float | None = None,
    progress: bool = True,
    params: SamplingParams | None = None,
    classifiers: Sequence[Classifier] | None = None,
    config: SweepConfig | None = None,
    **kwargs: Any,
) -> SweepResult:
    """Blocking form of :func:`sweep_async`, with the same arguments.

    Inside a running event loop (Jupyter) it runs the sweep on a fresh thread with its own
    loop and waits for it, so nothing patches the caller's loop. Backends that hold an HTTP
    client bound to another loop should be created fresh (``models.get`` clients are lazy).
    """

    async def run_and_close() -> _Boxed:
        try:
            return _Boxed(
                await sweep_async(
                    perturbation,
                    model,
                    requests,
                    samples=samples,
                    seed=seed,
                    store=store,
                    concurrency=concurrency,
                    rate_limit=rate_limit,
                    timeout=timeout,
                    max_retries=max_retries,
                    max_cost_usd=max_cost_usd,
                    progress=progress,
                    params=params,
                    classifiers=classifiers,
                    config=config,
                    **kwargs,
                )
            )
        finally:
            # Each sweep() call has its own loop; a client bound to it must not outlive it.
            if not isinstance(model, str):
                await model.aclose()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run_and_close()).value
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="afperturb-sweep") as ex:
        return ex.submit(asyncio.run, run_and_close()).result().value


class _Boxed:
    """The sweep's result inside the task that produced it, with a constant repr.

    On Python 3.11, ``asyncio.run`` restoring the SIGINT handler formats a repr of the
    finished main task, and with it of the task's result (signal._int_to_enum). A
    ``SweepResult``'s repr reads the whole results table: on a 1e6-trial sweep that was ~1.7 GiB
    and most of the end-of-sweep memory peak (H11, issue 4). The box keeps that repr trivial.
    """

    __slots__ = ("value",)

    def __init__(self, value: SweepResult) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<sweep result>"


def estimate(
    perturbation: PerturbationLike,
    model: Model | str,
    requests: Iterable[Request],
    samples: int = 1,
    params: SamplingParams | None = None,
    config: SweepConfig | None = None,
    **options: Any,
) -> CostEstimate:
    """Estimate a sweep's tokens and cost before running it (sends nothing)."""
    cfg = _config(config, samples=samples, params=params, **options)
    return estimate_cost(perturbation, model, check_requests(requests), cfg)


__all__ = [
    "AdaptiveLimiter",
    "CostEstimate",
    "SweepConfig",
    "SweepResult",
    "check_requests",
    "check_store_path",
    "default_classifiers",
    "estimate",
    "sweep",
    "sweep_async",
]
