"""Time attribute() on about a million trials. Target: ≤ 10 s on the 2-core machine.

Two modes:

* default: 4 simulated models × 51 conditions of the paper preset + null control × 4,900
  requests from ``simulate_frame()`` (no store; times the statistics alone);
* ``--store PATH``: a sweep's store (e.g. 10⁶ trials of the ``paper`` preset on
  ``sim/opus-like``, see benchmarks/README.md for how to build one); times
  ``SweepResult.load``, ``to_frame()`` (reading the store and building the table) and
  ``attribute()`` on that frame, each and in total, wall and CPU seconds (``--as-sweep N``:
  the result scoped as ``sweep(samples=N)`` returns it instead of ``SweepResult.load``; its
  "load" then includes reading the store's conditions and requests).

Usage:
    python benchmarks/bench_attribute.py [--requests 4900] [--models opus-like ...]
    python benchmarks/bench_attribute.py --store /tmp/bench/million.sqlite [--repeat 2]
    python benchmarks/bench_attribute.py --store /tmp/bench/million.sqlite --as-sweep 1
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from collections.abc import Callable
from typing import Any

import pandas as pd

from afperturb.hypotheses import attribute
from afperturb.stats import build_cells, simulate_frame

MODELS = ("opus-like", "sonnet-like", "sycophant", "no-gap")


def _timed(action: Callable[[], Any]) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    value = action()
    return value, time.perf_counter() - wall, time.process_time() - cpu


def _as_sweep(path: str, samples: int) -> Any:
    """The result ``sweep()`` returns: one model, scoped to the design's conditions, the
    requests and the samples (what ``attribute(perturbation.sweep(...))`` reads)."""
    from afperturb.results import SweepResult
    from afperturb.store import Store

    store = Store.open(path)
    (model,) = store.models()
    return SweepResult.from_store(
        store,
        model=model,
        conditions=list(store.conditions().values()),
        request_ids=list(store.requests()),
        samples=samples,
    )


def _store_mode(path: str, repeat: int, as_sweep: int | None) -> None:
    from afperturb.results import SweepResult

    print(f"store: {path} ({os.path.getsize(path) / 2**30:.2f} GiB)")
    opening: Callable[[], Any] = functools.partial(SweepResult.load, path)
    if as_sweep is not None:
        opening = functools.partial(_as_sweep, path, as_sweep)
    scoped = f"as sweep(samples={as_sweep}) returns it (from_store, scoped)"
    print("result: " + (scoped if as_sweep is not None else "SweepResult.load()"))
    for i in range(repeat):
        load = os.getloadavg()[0]
        result, w_load, c_load = _timed(opening)
        frame, w_frame, c_frame = _timed(result.to_frame)
        table, w_attr, c_attr = _timed(functools.partial(attribute, frame))
        total_w, total_c = w_load + w_frame + w_attr, c_load + c_frame + c_attr
        print(
            f"run {i + 1}: trials {len(frame):,}; load average {load:.2f} at start\n"
            f"  load          {w_load:6.2f} s wall  {c_load:6.2f} s CPU\n"
            f"  to_frame()    {w_frame:6.2f} s wall  {c_frame:6.2f} s CPU\n"
            f"  attribute()   {w_attr:6.2f} s wall  {c_attr:6.2f} s CPU\n"
            f"  total         {total_w:6.2f} s wall  {total_c:6.2f} s CPU"
            f"  (target 10 s: {'met' if total_w <= 10 else 'NOT met'})",
            flush=True,
        )
    print(table.verdicts().to_string())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=4900)
    ap.add_argument("--models", nargs="+", default=list(MODELS), help="afperturb.profiles names")
    ap.add_argument("--store", help="time load + to_frame + attribute on this sweep store")
    ap.add_argument("--repeat", type=int, default=1, help="store mode: runs (fresh each)")
    ap.add_argument(
        "--as-sweep",
        type=int,
        metavar="SAMPLES",
        help="store mode: the result as sweep(samples=SAMPLES) returns it",
    )
    args = ap.parse_args()
    if args.store:
        _store_mode(args.store, args.repeat, args.as_sweep)
        return
    t0 = time.perf_counter()
    frames = [
        simulate_frame("all", name, n_requests=args.requests, seed=0, model=name)
        for name in args.models
    ]
    t_sim = time.perf_counter() - t0
    big = pd.concat(frames, ignore_index=True)
    t0 = time.perf_counter()
    build_cells(big)
    t1 = time.perf_counter()
    table = attribute(big)
    t2 = time.perf_counter()
    print(f"trials: {len(big):,}; simulate_frame: {t_sim:.2f} s")
    print(f"aggregation to cells: {t1 - t0:.2f} s; attribute() end to end: {t2 - t1:.2f} s")
    print(table.verdicts().to_string())


if __name__ == "__main__":
    main()
