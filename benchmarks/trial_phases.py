"""Where one trial's time goes: waiting for the reply, and waiting for its row to be durable.

A trial keeps its concurrency slot from the moment it is taken until its row is committed, so
anything that delays either phase lowers the rate at a fixed number in flight. This runs one
single-process sweep (the ``paper`` preset, the loopback server at ``--latency``) with timing
wrappers around the engine's ``generate`` and the store's commit, and prints:

- trials/s and client CPU per trial;
- per trial: the reply wait (``generate``: send, the server's latency, the event loop's lag)
  and the durable wait (from the finished row to its commit) as mean / p50 / p90 / p99;
- per group commit of the store's writer thread: wall time, CPU time, trials and rows.

    PYTHONPATH=. python benchmarks/trial_phases.py                      # 256 in flight, 20,480
    PYTHONPATH=. python benchmarks/trial_phases.py --concurrency 512 --trials 10240

The wrappers add a little CPU of their own; compare runs of this script with each other, not
with ``throughput.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from loopback_server import spawn  # noqa: E402

import afperturb.store._store as store_module  # noqa: E402
import afperturb.sweep._engine as engine_module  # noqa: E402
from afperturb import datasets, models  # noqa: E402
from afperturb.design import Perturbation  # noqa: E402
from afperturb.models._transport import make_async_client  # noqa: E402


class Probes:
    """Timing wrappers installed on the engine and the store (for one process, one sweep)."""

    def __init__(self) -> None:
        self.replies: list[float] = []
        self.durable: list[float] = []
        self.commits: list[tuple[float, float, int, int]] = []

    def install(self) -> None:
        engine = engine_module._Engine
        store = store_module.Store
        generate, put, commit = engine.generate, store.put_trial_async, store._commit
        replies, durable, commits = self.replies, self.durable, self.commits

        async def timed_generate(self: Any, messages: Any, ctx: Any) -> Any:
            start = time.perf_counter()
            try:
                return await generate(self, messages, ctx)
            finally:
                replies.append(time.perf_counter() - start)

        async def timed_put(self: Any, row: Any, completions: Any = ()) -> None:
            start = time.perf_counter()
            await put(self, row, completions)
            durable.append(time.perf_counter() - start)

        def timed_commit(self: Any, conn: Any, batches: Any) -> None:
            wall, cpu = time.perf_counter(), time.thread_time()
            commit(self, conn, batches)
            trials = sum(len(b.trials) for b in batches)
            rows = trials + sum(len(b.completions) + len(b.labels) + len(b.texts) for b in batches)
            commits.append((time.perf_counter() - wall, time.thread_time() - cpu, trials, rows))

        engine.generate = timed_generate  # type: ignore[method-assign]
        store.put_trial_async = timed_put  # type: ignore[method-assign]
        store._commit = timed_commit  # type: ignore[method-assign]

    def clear(self) -> None:
        self.replies.clear()
        self.durable.clear()
        self.commits.clear()


def _spread(seconds: Sequence[float]) -> str:
    ms = sorted(1000 * s for s in seconds)
    if not ms:
        return "-"
    at = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # noqa: E731
    return f"{statistics.mean(ms):.1f} / {at(0.5):.1f} / {at(0.9):.1f} / {at(0.99):.1f}"


def _design(total: int, seed: int) -> tuple[Any, Any]:
    perturbation = Perturbation.preset("paper")
    n_requests = max(1, -(-total // len(perturbation.conditions())))
    return perturbation, datasets.synthetic(n_requests, seed=seed)


async def _run(args: argparse.Namespace, base_url: str, tmp: str, probes: Probes) -> None:
    client = make_async_client(concurrency=args.concurrency, timeout=120.0)
    model = models.get("openai/bench", base_url=base_url, api_key="x", client=client)
    options: dict[str, Any] = {
        "samples": 1,
        "seed": 0,
        "concurrency": args.concurrency,
        "progress": False,
    }
    try:
        perturbation, warm = _design(args.concurrency, 1)  # opens the connections
        await perturbation.sweep_async(model, warm, store=os.path.join(tmp, "w.sqlite"), **options)
        probes.clear()
        perturbation, requests = _design(args.trials, 0)
        cpu, wall = time.process_time(), time.perf_counter()
        await perturbation.sweep_async(
            model, requests, store=os.path.join(tmp, "b.sqlite"), **options
        )
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await model.aclose()
        await client.aclose()
    done = len(probes.durable)
    ideal = args.concurrency / args.latency
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.concurrency} in flight, "
        f"latency {args.latency * 1000:.0f} ms, {done} trials"
    )
    print(
        "| trials/s | % ideal | CPU ms/trial | reply wait ms (mean / p50 / p90 / p99) "
        "| durable wait ms (mean / p50 / p90 / p99) |"
    )
    print("|---|---|---|---|---|")
    print(
        f"| {done / wall:.0f} | {100 * done / wall / ideal:.0f} % | {1000 * cpu / done:.3f} "
        f"| {_spread(probes.replies)} | {_spread(probes.durable)} |"
    )
    c = probes.commits
    if c:
        print(
            f"\nstore writer: {len(c)} commits, wall {_spread([x[0] for x in c])} ms, "
            f"CPU mean {1000 * statistics.mean(x[1] for x in c):.2f} ms, "
            f"{statistics.mean(x[2] for x in c):.1f} trials and "
            f"{statistics.mean(x[3] for x in c):.1f} rows per commit"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--trials", type=int, default=20_480)
    parser.add_argument("--latency", type=float, default=0.1, help="server latency, seconds")
    args = parser.parse_args(argv)
    probes = Probes()
    probes.install()
    with spawn(latency=args.latency) as server, tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_run(args, server.base_url, tmp, probes))


if __name__ == "__main__":
    main()
