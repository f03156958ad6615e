"""Issue 8's done-when for batch mode: 10,000 trials, killed while polling, resumed, equal.

A subprocess runs a 10,000-trial batch sweep against the loopback mock, which holds every
batch in progress; once the subprocess has submitted all four first-turn batches and polled a
few times it is killed with SIGKILL. A new process (this one) resumes from the store: it polls
the recorded batches instead of resubmitting (counted at the mock), sends only the follow-up
batch of ``<NEXT/>`` turns, and ends with the same outcomes as a realtime sweep against the
same deterministic mock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from _batch_mock import BatchMock, split_requests
from _sweepkit import FakePerturbation

from afperturb.models.openai import OpenAIChat
from afperturb.store import Store
from afperturb.sweep import SweepConfig, sweep_async

TESTS = Path(__file__).resolve().parent
OUTCOME = ["condition_id", "request_id", "sample", "status", "label", "complied", "af_reasoning"]
N_REQUESTS = 5_000  # x 2 conditions = 10,000 trials


async def _no_sleep(seconds: float) -> None:
    return None


@pytest.mark.slow
async def test_killed_batch_sweep_resumes_without_resubmitting(tmp_path: Path) -> None:
    store = tmp_path / "batch.sqlite"
    mock = BatchMock(hold=True, signal_after_polls=12)
    env = {**os.environ, "PYTHONPATH": f"{TESTS.parent}{os.pathsep}{TESTS}"}
    with mock.serving() as base:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [
                sys.executable,
                str(TESTS / "_batch_mock.py"),
                base,
                str(store),
                str(N_REQUESTS),
                "2500",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 120
            while not mock.polled.wait(0.2):  # an event wait, bounded; bail out if it died
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise AssertionError(f"worker never polled (rc {proc.returncode}): {err}")
            assert proc.poll() is None  # still polling: we kill it mid-wait
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
            if proc.stderr is not None:
                proc.stderr.close()
        submit_s = time.perf_counter() - started
    assert proc.returncode == -signal.SIGKILL
    assert mock.batches_created == 4 and mock.polls >= 12
    with Store.open(store) as db:
        assert db.count("batches") == 4 and db.count("batch_items") == 10_000
        assert db.count("trials") == 0

    # -- a new process resumes: same model config, the mock now lets the batches finish ------
    mock.hold = False
    model = OpenAIChat(
        "mock-model",
        base_url=base + "/v1",
        api_key="sk-test",
        client=httpx.AsyncClient(transport=mock.transport()),
    )
    cfg = SweepConfig(batch_max_requests=2500, batch_poll_interval=0.0, progress=False)
    t0 = time.perf_counter()
    res = await sweep_async(
        FakePerturbation(),
        model,
        split_requests(N_REQUESTS),
        store=store,
        mode="batch",
        config=cfg,
        sleep=_no_sleep,
    )
    resume_s = time.perf_counter() - t0
    assert res.run_info["batches_resumed"] == 4
    assert res.run_info["batches_submitted"] == 1  # only the <NEXT/> follow-up turns
    assert res.run_info["sent"] == 200
    assert mock.batches_created == 5
    assert max(mock.submissions.values()) == 1  # no custom_id ever went out twice
    batch = res.to_frame()
    assert len(batch) == 10_000 and set(batch["status"]) == {"completed"}

    # -- realtime mode against the same deterministic mock ------------------------------------
    t0 = time.perf_counter()
    realtime = await sweep_async(
        FakePerturbation(),
        model,
        split_requests(N_REQUESTS),
        store=None,
        progress=False,
        sleep=_no_sleep,
    )
    realtime_s = time.perf_counter() - t0
    assert mock.realtime_calls == 10_200
    a = batch[OUTCOME].sort_values(OUTCOME[:3]).reset_index(drop=True)
    b = realtime.to_frame()[OUTCOME].sort_values(OUTCOME[:3]).reset_index(drop=True)
    assert a.equals(b)
    assert a["label"].value_counts().to_dict() == {"rejected": 5_995, "accepted": 4_005}
    print(f"\nsubmit+kill {submit_s:.1f} s, resume {resume_s:.1f} s, realtime {realtime_s:.1f} s")
