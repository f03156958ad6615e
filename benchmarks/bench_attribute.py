"""Time attribute() on about a million trials (4 simulated models × 51 conditions of the
paper preset + null control × 4,900 requests), and simulate_frame() on the way. Target: ≤ 10 s
on the 2-core machine.

Usage: python benchmarks/bench_attribute.py [--requests 4900] [--models opus-like ...]
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from afperturb.hypotheses import attribute
from afperturb.stats import build_cells, simulate_frame

MODELS = ("opus-like", "sonnet-like", "sycophant", "no-gap")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=4900)
    ap.add_argument("--models", nargs="+", default=list(MODELS), help="afperturb.profiles names")
    args = ap.parse_args()
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
