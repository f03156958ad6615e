"""Time attribute() on about a million trials (4 simulated models × 31 conditions × 8,100
requests). Target: ≤ 10 s on the 2-core machine.

Usage: python benchmarks/bench_attribute.py [--requests 8100]
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from afperturb.hypotheses import attribute
from afperturb.stats import PROFILES, build_cells, simulate_frame


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=8100)
    args = ap.parse_args()
    frames = [
        simulate_frame("all", name, n_requests=args.requests, seed=i, model=name)
        for i, name in enumerate(PROFILES)
    ]
    big = pd.concat(frames, ignore_index=True)
    t0 = time.perf_counter()
    build_cells(big)
    t1 = time.perf_counter()
    table = attribute(big)
    t2 = time.perf_counter()
    print(f"trials: {len(big):,}")
    print(f"aggregation to cells: {t1 - t0:.2f} s; attribute() end to end: {t2 - t1:.2f} s")
    print(table.verdicts().to_string())


if __name__ == "__main__":
    main()
