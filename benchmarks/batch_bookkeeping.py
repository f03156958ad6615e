"""Bookkeeping overhead of batch mode: 100,000 batched trials against the in-process mock.

Runs ``sweep(..., mode="batch")`` on a two-condition design over 50,000 requests (every 50th
continues with ``<NEXT/>``, so a follow-up batch goes out too) through ``httpx.MockTransport``
onto the batch mock of the tests, with no polling delay. It reports the client's CPU per trial
with the mock's own time (building the provider's result files) subtracted: rendering, request
bodies, JSONL encoding, chunking, custom ids, the batch tables, result parsing, the completion
cache, trial rows and the tag + heuristic labels. Then it resumes the finished sweep (everything
cached, nothing sent) to show the cost of a no-op re-run.

    PYTHONPATH=.:tests python benchmarks/batch_bookkeeping.py [--requests 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from _batch_mock import BatchMock, split_requests  # noqa: E402
from _sweepkit import FakePerturbation  # noqa: E402

from afperturb.models.openai import OpenAIChat  # noqa: E402
from afperturb.store import Store  # noqa: E402
from afperturb.sweep import SweepConfig, sweep_async  # noqa: E402


class TimedMock(BatchMock):
    """The mock, timing its own handler so its CPU can be subtracted from the client's."""

    spent: float = 0.0

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        start = time.process_time()
        try:
            return super().handle(method, path, headers, body)
        finally:
            self.spent += time.process_time() - start


async def _noop(seconds: float) -> None:
    return None


async def run(n_requests: int, max_requests: int) -> dict[str, Any]:
    """One batch sweep and one no-op resume; returns the measurements."""
    mock = TimedMock()
    client = httpx.AsyncClient(transport=mock.transport())
    model = OpenAIChat("mock-model", base_url="http://mock/v1", api_key="k", client=client)
    cfg = SweepConfig(batch_max_requests=max_requests, batch_poll_interval=0.0, progress=False)
    reqs = split_requests(n_requests)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "batch.sqlite"
        wall0, cpu0 = time.perf_counter(), time.process_time()
        res = await sweep_async(
            FakePerturbation(), model, reqs, store=path, mode="batch", config=cfg, sleep=_noop
        )
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        trials = len(res)
        wall1, cpu1 = time.perf_counter(), time.process_time()
        again = await sweep_async(
            FakePerturbation(), model, reqs, store=path, mode="batch", config=cfg, sleep=_noop
        )
        resume_wall, resume_cpu = time.perf_counter() - wall1, time.process_time() - cpu1
        with Store.open(path) as db:
            rows = (db.count("batches"), db.count("batch_items"))
        size_mb = path.stat().st_size / 1e6
    await client.aclose()
    client_cpu = cpu - mock.spent
    return {
        "trials": trials,
        "batches": mock.batches_created,
        "batch_rows": rows,
        "wall_s": wall,
        "cpu_s": cpu,
        "mock_cpu_s": mock.spent,
        "client_cpu_ms_per_trial": 1000 * client_cpu / trials,
        "resume_wall_s": resume_wall,
        "resume_cpu_ms_per_trial": 1000 * resume_cpu / trials,
        "resume_sent": again.run_info["sent"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "store_mb": size_mb,
    }


def main() -> None:
    """Parse arguments, run, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50_000, help="requests (x2 trials)")
    parser.add_argument("--max-requests", type=int, default=50_000, help="requests per batch")
    args = parser.parse_args()
    out = asyncio.run(run(args.requests, args.max_requests))
    width = max(len(k) for k in out)
    for key, value in out.items():
        shown = f"{value:,.3f}" if isinstance(value, float) else f"{value}"
        print(f"{key:<{width}}  {shown}")


if __name__ == "__main__":
    main()
