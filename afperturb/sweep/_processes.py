"""``processes=N``: one sweep split over N worker processes that share one WAL store.

Why: the engine's client CPU per trial (render, request, store, tag and heuristic labels) is
~0.5 ms, so one Python process tops out near 2,000 trials/s on its core whatever the transport
does; holding 512-1,024 requests in flight against a fast provider needs more than one core.

How: each worker runs the ordinary single-process engine on shard ``(i, N)`` of the work
(:func:`afperturb.shard.shard_of`, the same split as ``sweep(shard=(i, k))``), with
``concurrency / N`` slots, ``rate_limit / N`` and ``max_cost_usd / N``, writing to the same
SQLite file (WAL; the store is built for several writers). Workers are *forked*, so the design,
the backend and the requests need not be picklable and nothing is re-imported; each runs its
own event loop on a fresh thread (the forking thread is inside the parent's running loop) and
exits with ``os._exit`` so it never finalises the parent's inherited SQLite connections. The
parent writes nothing: it waits, then reads the result lazily from the store. Cached trials,
resuming and ``retry_failed`` behave exactly as in one process, because every worker's engine
is the ordinary one. The workers are reaped children, so their CPU shows in
``getrusage(RUSAGE_CHILDREN)`` of the calling process.

Workers never outlive the sweep (issue 14). Each holds the read end of a *lifeline* pipe whose
only write end is the parent's, and a thread in the worker waits on it: when the parent dies
(``kill -9``, SIGTERM, a crash) the kernel closes that end, the read sees EOF and the worker
stops. It also polls ``os.getppid()`` every :data:`_PPID_POLL_S` seconds, for the case where a
process forked by the parent meanwhile (another sweep's workers) keeps a copy of the write end.
Both work on Linux and macOS; ``prctl(PR_SET_PDEATHSIG)`` is not used (Linux-only, and tied to
the forking *thread*, which need not live as long as the parent). A cancelled or interrupted
parent (Ctrl-C, a cancelled task) closes the lifeline itself, waits up to :data:`_STOP_WAIT_S`
seconds and kills what is left. Stopping means: cancel the worker's sweep (in-flight requests
are abandoned, no new one is sent), let the store's writer commit what is already queued
(finished trials, earlier turns' completions), exit. Every trial is one SQLite transaction, so
even the last-resort ``os._exit`` after :data:`_HARD_EXIT_S` seconds (a writer stuck on a
locked store) leaves committed trials intact and nothing half-written. Workers ignore SIGINT
(Ctrl-C reaches the whole process group; the parent decides) and treat SIGTERM as a stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import os
import select
import signal
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from afperturb.errors import DesignError
from afperturb.records import Request

if TYPE_CHECKING:
    from afperturb.classify.base import Classifier
    from afperturb.models.base import Model
    from afperturb.results import SweepResult
    from afperturb.store import Store
    from afperturb.sweep._config import SweepConfig
    from afperturb.sweep._engine import PerturbationLike

#: Run-info counters that add up over workers.
_SUMMED = ("sent", "cached", "failed", "spent_usd", "rate_limit_cuts")


def worker_config(cfg: SweepConfig, index: int) -> SweepConfig:
    """Worker ``index``'s share of ``cfg``: shard ``(index, N)`` and 1/N of every budget."""
    n = cfg.processes
    rpm, tpm = cfg.rate_limit if cfg.rate_limit is not None else (None, None)
    return cfg.model_copy(
        update={
            "processes": 1,
            "shard": (index, n),
            "progress": False,
            "concurrency": max(1, math.ceil(cfg.concurrency / n)),
            "rate_limit": (
                None
                if cfg.rate_limit is None
                else (None if rpm is None else rpm / n, None if tpm is None else tpm / n)
            ),
            "max_cost_usd": None if cfg.max_cost_usd is None else cfg.max_cost_usd / n,
        }
    )


def check(cfg: SweepConfig, store: Store | str | Path | None) -> Path:
    """The store path the workers share, or a DesignError saying why N processes cannot run."""
    if cfg.mode != "realtime":
        raise DesignError(f"processes={cfg.processes} needs mode='realtime'; got {cfg.mode!r}")
    if cfg.shard is not None:
        raise DesignError(
            f"processes={cfg.processes} shards the sweep itself; do not also pass "
            f"shard={cfg.shard!r} (run several single-process shards instead)"
        )
    if "fork" not in multiprocessing.get_all_start_methods():
        raise DesignError(
            f"processes={cfg.processes} needs the 'fork' start method, which this platform "
            "lacks; run sweep(shard=(i, k)) in k separate processes instead"
        )
    if store is None:
        raise DesignError(
            f"processes={cfg.processes} needs a store (a path or a Store) that the worker "
            "processes share; store=None keeps results in one process's memory"
        )
    if isinstance(store, str | Path):
        return Path(store)
    store.flush()
    return store.path


class _Stopper:
    """Cancels a worker's sweep once, from whichever thread notices first (see module doc)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._target: tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]] | None = None
        self.reason: str | None = None

    def attach(self) -> bool:
        """Register the running task as the one to cancel; False when already stopping."""
        task = asyncio.current_task()
        assert task is not None
        with self._lock:
            if self.reason is not None:
                return False
            self._target = (asyncio.get_running_loop(), task)
            return True

    def stop(self, reason: str) -> None:
        """Cancel the sweep (idempotent) and arm the last-resort exit."""
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
            target = self._target
        threading.Thread(target=_hard_exit, name="afperturb-shard-deadline", daemon=True).start()
        if target is not None:
            loop, task = target
            with contextlib.suppress(RuntimeError):  # the loop has just closed: nothing to stop
                loop.call_soon_threadsafe(task.cancel)


def _hard_exit() -> None:
    time.sleep(_HARD_EXIT_S)
    os._exit(_EXIT_HARD)


def _watch_parent(lifeline: int, parent_pid: int, stop: Callable[[str], None]) -> None:
    """Block until the parent is gone (EOF on the lifeline, or re-parented), then stop."""
    while True:
        ready, _, _ = select.select([lifeline], [], [], _PPID_POLL_S)
        if ready and not os.read(lifeline, 1):  # the parent never writes: EOF
            stop("the sweep's parent process ended or stopped the sweep")
            return
        if os.getppid() != parent_pid:
            stop(f"the sweep's parent process {parent_pid} is gone")
            return


def _worker(
    conn: Connection,
    lifeline: tuple[int, int],
    parent_pid: int,
    perturbation: PerturbationLike,
    model: Model | str,
    requests: Sequence[Request],
    cfg: SweepConfig,
    path: Path,
    classifiers: Sequence[Classifier] | None,
) -> None:
    """Body of one forked worker: run its shard on a fresh loop, send back its run info."""
    from afperturb.sweep._engine import run_sweep

    read_end, write_end = lifeline
    os.close(write_end)  # only the parent may hold it, or its death would go unnoticed
    stopper = _Stopper()
    # Never run a handler inherited from the parent's program; Ctrl-C is the parent's call.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(
        signal.SIGTERM,
        lambda *_: threading.Thread(target=stopper.stop, args=("SIGTERM",), daemon=True).start(),
    )
    reply: dict[str, Any] = {}

    async def main() -> SweepResult | None:
        if not stopper.attach():
            return None
        return await run_sweep(perturbation, model, requests, cfg, path, classifiers)

    def body() -> None:
        try:
            result = asyncio.run(main())
            if result is None:
                raise asyncio.CancelledError
            reply.update(ok=True, info=dict(result.run_info), stopped_reason=result.stopped_reason)
        except BaseException as exc:  # report every failure to the parent, never hang it
            if stopper.reason is not None:
                reply.update(ok=False, error=f"worker stopped: {stopper.reason}")
            else:
                reply.update(ok=False, error=f"{type(exc).__name__}: {exc}")

    watcher = threading.Thread(
        target=_watch_parent,
        args=(read_end, parent_pid, stopper.stop),
        name="afperturb-shard-lifeline",
        daemon=True,
    )
    watcher.start()
    # The forking thread is inside the parent's running event loop: a new thread has none.
    thread = threading.Thread(target=body, name="afperturb-shard")
    thread.start()
    thread.join()
    try:
        with contextlib.suppress(OSError):  # a dead parent cannot hear it
            conn.send(reply)
    finally:
        conn.close()
        os._exit(0)  # skip finalisers: never close the parent's inherited SQLite connections


async def run_processes(
    perturbation: PerturbationLike,
    model: Model | str,
    requests: Sequence[Request],
    cfg: SweepConfig,
    store: Store | str | Path | None,
    classifiers: Sequence[Classifier] | None,
) -> SweepResult:
    """Run ``cfg.processes`` forked shard workers on one store and read their result."""
    from afperturb.results import SweepResult
    from afperturb.store import Store as _Store
    from afperturb.store import model_hash
    from afperturb.sweep._engine import resolve_model, sweep_variant

    path = check(cfg, store)
    ctx = multiprocessing.get_context("fork")
    started = time.perf_counter()
    workers: list[tuple[Any, Connection]] = []
    # The lifeline (module docstring): its write end lives in this process only.
    lifeline = _Lifeline()
    try:
        for i in range(cfg.processes):
            receive, send = ctx.Pipe(duplex=False)
            args = (
                send,
                lifeline.fds,
                os.getpid(),
                perturbation,
                model,
                requests,
                worker_config(cfg, i),
                path,
                classifiers,
            )
            proc = ctx.Process(target=_worker, args=args, name=f"afperturb-shard-{i}", daemon=True)
            with warnings.catch_warnings():  # 3.12+ warns about fork with threads; see docstring
                warnings.simplefilter("ignore", DeprecationWarning)
                proc.start()
            send.close()
            workers.append((proc, receive))
        lifeline.close_read()
        backend = resolve_model(model) if isinstance(model, str) else model
        name = backend.name
        variant = sweep_variant(perturbation, model_hash(backend.config()), cfg)
        # Opened only now: a forked worker must not inherit a connection the parent uses.
        db = store if isinstance(store, _Store) else _Store.open(path)
        conditions = list(perturbation.conditions())
        total = len(conditions) * len(requests) * cfg.samples
        collecting = asyncio.gather(*(asyncio.to_thread(_collect, p, r) for p, r in workers))
        await _watch(collecting, db, name, total, cfg.progress, cfg.processes)
        replies = collecting.result()
    except BaseException:  # cancelled, interrupted, or a failure here: the workers stop too
        _stop_workers([proc for proc, _ in workers], lifeline)
        raise
    finally:
        lifeline.close()
    errors = [r["error"] for r in replies if not r.get("ok")]
    if errors:
        raise RuntimeError(f"{len(errors)} of {cfg.processes} sweep workers failed: {errors[0]}")
    info: dict[str, Any] = {k: sum(r["info"].get(k, 0) for r in replies) for k in _SUMMED}
    # Each worker read the same provider's headers: any worker's view of its limits will do.
    limits: dict[str, float] = next(
        (r["info"]["provider_limits"] for r in replies if r["info"].get("provider_limits")), {}
    )
    info.update(
        provider_limits=limits,
        run_ids=[r["info"].get("run_id") for r in replies],
        processes=cfg.processes,
        mode=cfg.mode,
        wall_s=time.perf_counter() - started,
    )
    stopped = next((r["stopped_reason"] for r in replies if r.get("stopped_reason")), None)
    return SweepResult.from_store(
        db,
        model=name,
        conditions=conditions,
        request_ids=[r.id for r in requests],
        samples=cfg.samples,
        stopped_reason=stopped,
        run_info=info,
        variant=variant,
    )


async def _watch(
    collecting: asyncio.Future[list[dict[str, Any]]],
    db: Store,
    model: str,
    total: int,
    enabled: bool,
    processes: int,
) -> None:
    """Wait for the workers; with progress on, show the model's stored trials meanwhile."""
    from afperturb.sweep._progress import Progress

    if not enabled:
        await asyncio.wait([collecting])
        return
    progress = Progress(total, enabled=True, desc=f"{model} ({processes} processes)")
    done = 0
    try:
        while not collecting.done():
            await asyncio.wait([collecting], timeout=_POLL_S)
            # The store's own read helper (same package): a COUNT over the trials_model index.
            rows = await asyncio.to_thread(
                db._query, "SELECT COUNT(*) FROM trials WHERE model=?", (model,)
            )
            done = min(total, int(rows[0][0]))
            progress.update(done, 0, 0, 0.0)
    finally:
        progress.close(done, 0, 0, 0.0)


#: Seconds between progress polls of the shared store (a COUNT over one index).
_POLL_S = 0.5

#: Seconds between a worker's checks that its parent is still its parent (the lifeline's EOF
#: is immediate; this catches a write end kept open by a process the parent forked meanwhile).
_PPID_POLL_S = 0.5

#: Seconds a stopping worker has to commit what is queued before it exits regardless.
_HARD_EXIT_S = 3.0

#: Seconds a stopping parent waits for its workers before it kills them.
_STOP_WAIT_S = _HARD_EXIT_S + 1.0

#: Exit code of a worker that stopped by its last-resort exit.
_EXIT_HARD = 70


class _Lifeline:
    """The parent's side of the lifeline pipe; each end is closed at most once."""

    def __init__(self) -> None:
        self.fds = os.pipe()
        self._open = list(self.fds)

    def close_read(self) -> None:
        """Close the read end (after forking: only the workers read)."""
        self._close(self.fds[0])

    def close(self) -> None:
        """Close whatever is still open: every worker still running stops."""
        for fd in list(self._open):
            self._close(fd)

    def _close(self, fd: int) -> None:
        if fd in self._open:  # never twice: the number may belong to another file by then
            self._open.remove(fd)
            os.close(fd)


def _stop_workers(procs: Sequence[Any], lifeline: _Lifeline) -> None:
    """Close the lifeline (every worker stops), wait for them, kill the ones left."""
    lifeline.close()
    deadline = time.monotonic() + _STOP_WAIT_S
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join()


def _collect(proc: Any, receive: Connection) -> dict[str, Any]:
    """Wait for one worker's reply and its exit (a blocking call: run it in a thread)."""
    try:
        reply: dict[str, Any] = receive.recv()
    except EOFError:
        reply = {"ok": False, "error": "worker exited without a reply"}
    finally:
        receive.close()
    proc.join()
    if proc.exitcode not in (0, None) and reply.get("ok"):
        reply = {"ok": False, "error": f"worker exit code {proc.exitcode}"}
    return reply


__all__ = ["check", "run_processes", "worker_config"]
