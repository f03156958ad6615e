"""End to end over real HTTP: OpenAIChat against a loopback server with injected faults."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from _loopback import Faults, LoopbackServer, load_benchmark_server
from _sweepkit import FakePerturbation, requests

from afperturb import models
from afperturb.models.openai import OpenAIChat
from afperturb.records import Request
from afperturb.store import Store
from afperturb.sweep import SweepConfig, sweep, sweep_async

SENTINEL = "sk-SENTINEL-9f8e7d6c5b4a"
TESTS = Path(__file__).parent


def _requests(n: int) -> list[Request]:
    reqs = requests(n)
    # Every fifth request answers in two turns: the continuation goes over HTTP too.
    return [
        r.model_copy(update={"text": r.text + " [split]"}) if i % 5 == 0 else r
        for i, r in enumerate(reqs)
    ]


def _store_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


async def test_faults_every_trial_ends_completed_or_failed_with_reason(tmp_path: Path) -> None:
    faults = Faults(
        rate_429=0.10, rate_500=0.05, rate_malformed=0.02, rate_hang=0.01, retry_after_ms=20
    )
    server = LoopbackServer(faults=faults, seed=1)
    await server.start()
    db = tmp_path / "runs.sqlite"
    try:
        model = models.get("openai/test-model", base_url=server.base_url, api_key=SENTINEL)
        cfg = SweepConfig(timeout=0.5, max_retries=6, backoff_base=0.01, progress=False)
        res = await sweep_async(
            FakePerturbation(), model, _requests(150), store=db, concurrency=32, config=cfg
        )
        await model.aclose()
    finally:
        await server.stop()
    frame = res.to_frame()
    assert len(frame) == 300
    assert not frame.duplicated(["condition_id", "request_id", "sample"]).any()
    failed = frame[frame["status"] == "failed"]
    assert failed["error"].map(bool).all()
    assert set(frame["status"]) <= {"completed", "failed"}
    assert len(failed) <= 3  # 6 retries make exhaustion rare
    done = frame[frame["status"] == "completed"]
    assert (done["label"] == done["tier"].map({"free": "accepted", "paid": "rejected"})).all()
    # Faults really happened, were retried, and no answered prompt was asked twice.
    assert server.outcomes["429"] > 20 and server.outcomes["500"] > 5
    assert server.outcomes["malformed"] > 0 and server.outcomes["hang"] > 0
    assert max(server.served.values()) == 1
    assert sum(server.served.values()) == 300 + 60 - 2 * len(failed)  # 60 continuation turns
    # The key reached the server and nowhere else.
    assert server.auth_headers and all(SENTINEL in h for h in server.auth_headers)
    store = Store.open(db)
    assert store.count("trials") == 300
    store.close()
    assert SENTINEL.encode() not in _store_bytes(db)


async def test_rerun_of_finished_sweep_makes_zero_http_requests(tmp_path: Path) -> None:
    server = LoopbackServer()
    await server.start()
    db = tmp_path / "runs.sqlite"
    try:
        frames = []
        for _ in range(2):
            model = OpenAIChat("test-model", base_url=server.base_url, api_key=SENTINEL)
            res = await sweep_async(
                FakePerturbation(), model, _requests(20), store=db, progress=False
            )
            await model.aclose()
            frames.append(res.to_frame())
            if len(frames) == 1:
                first_count = server.requests
    finally:
        await server.stop()
    assert first_count == 40 + 8
    assert server.requests == first_count
    assert frames[1]["cached"].all()
    assert frames[0].drop(columns=["cached"]).equals(frames[1].drop(columns=["cached"]))


_CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from _sweepkit import FakePerturbation, requests
    from afperturb.models.openai import OpenAIChat
    from afperturb.sweep import sweep
    model = OpenAIChat("test-model", base_url={url!r}, api_key="k")
    sweep(FakePerturbation(), model, requests({n}), store={db!r}, concurrency={c},
          progress=False)
    """
)


def test_kill_9_then_rerun_resends_at_most_in_flight(tmp_path: Path) -> None:
    n, concurrency = 150, 8
    server = LoopbackServer(faults=Faults(latency_s=0.02))
    db = tmp_path / "runs.sqlite"
    with server.in_thread():
        code = _CHILD.format(tests=str(TESTS), url=server.base_url, n=n, db=str(db), c=concurrency)
        env = {**os.environ, "PYTHONPATH": str(TESTS.parent)}
        child = subprocess.Popen([sys.executable, "-c", code], env=env)
        deadline = time.monotonic() + 60
        while server.requests < 100 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        assert child.returncode == -signal.SIGKILL
        before = server.requests
        assert 100 <= before < 2 * n
        store = Store.open(db)
        saved = store.count("trials")
        store.close()
        assert saved >= before - concurrency  # everything answered before the kill was kept
        model = OpenAIChat("test-model", base_url=server.base_url, api_key="k")
        res = sweep(
            FakePerturbation(),
            model,
            requests(n),
            store=db,
            concurrency=concurrency,
            progress=False,
        )
    frame = res.to_frame()
    assert len(frame) == 2 * n and (frame["status"] == "completed").all()
    resent = sum(count - 1 for count in server.served.values() if count > 1)
    print(f"kill -9 after {before} requests: {saved} trials saved, {resent} re-sent")
    assert resent <= concurrency
    assert server.requests - before == 2 * n - saved


async def test_blocking_sweep_inside_running_loop_over_http_twice(tmp_path: Path) -> None:
    # As in Jupyter: a loop is running; sweep() must neither fail nor patch it, and the same
    # model object must work again (its HTTP client is bound to each call's own loop).
    server = LoopbackServer()
    with server.in_thread():
        model = OpenAIChat("test-model", base_url=server.base_url, api_key="k")
        first = sweep(FakePerturbation(), model, requests(5), progress=False)
        second = sweep(FakePerturbation(), model, requests(5), progress=False, seed=1)
    assert len(first.to_frame()) == len(second.to_frame()) == 10
    assert server.requests == 20


async def test_provider_rate_limit_headers_pace_the_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server allowing 6,000 requests/min (a burst of 100, then 100/s) that says so in its
    ``x-ratelimit-*`` headers; the sweep is given no rate limit. Reading the headers, the
    limiter adopts the stated limit and paces itself; ignoring them, only 429s slow it down."""
    from afperturb.sweep._ratelimit import AdaptiveLimiter

    bench = load_benchmark_server()

    async def rejected(read_headers: bool) -> tuple[int, int, dict[str, float]]:
        if not read_headers:
            monkeypatch.setattr(AdaptiveLimiter, "observe_headers", lambda self, headers: None)
        async with bench.LoopbackServer(rpm=6000, latency=0.02) as server:
            model = models.get("openai/m", base_url=server.base_url, api_key="k")
            cfg = SweepConfig(max_retries=20, backoff_base=0.01, backoff_cap=0.2, progress=False)
            res = await sweep_async(
                FakePerturbation(), model, requests(150), concurrency=64, config=cfg
            )
            await model.aclose()
            done = int(res.to_frame()["status"].eq("completed").sum())  # type: ignore[attr-defined]
            limits = res.run_info["provider_limits"]
            return server.stats()["by_fault"].get("429", 0), done, limits

    paced, done, limits = await rejected(read_headers=True)
    monkeypatch.undo()
    blind, _, _ = await rejected(read_headers=False)
    assert limits == {"requests": 6000.0} and done == 300
    # Measured: paced 0 rejections; blind ~1,400 (and some trials out of retries), each a
    # request the provider counts against the limit.
    assert paced < 30 and blind > 5 * (paced + 20), (paced, blind)


async def test_every_fault_kind_over_the_aiohttp_path_ends_each_trial_once(
    tmp_path: Path,
) -> None:
    """The benchmark server's faults, all at once, through the backends' aiohttp transport:
    dropped connections (fresh and reused), hangs, 429s with retry-after, 500s, malformed and
    missing bodies, truncated replies (continued with <NEXT/>). Every trial ends completed or
    failed with a reason, once; the retries are bounded."""
    bench = load_benchmark_server()
    faults = {"429": 0.05, "500": 0.05, "malformed": 0.03, "missing": 0.03, "hang": 0.02}
    faults.update({"close": 0.08, "truncated": 0.1})
    db = tmp_path / "runs.sqlite"
    async with bench.LoopbackServer(latency=0.005, faults=faults, seed=3) as server:
        model = models.get("openai/m", base_url=server.base_url, api_key="k")
        cfg = SweepConfig(timeout=0.5, max_retries=8, backoff_base=0.01, progress=False)
        res = await sweep_async(
            FakePerturbation(), model, requests(120), store=db, concurrency=32, config=cfg
        )
        await model.aclose()
        stats = server.stats()
    frame = res.to_frame()
    assert len(frame) == 240 and not frame.duplicated(["condition_id", "request_id"]).any()
    assert set(frame["status"]) <= {"completed", "failed"}
    assert frame[frame["status"] == "failed"]["error"].map(bool).all()
    assert (frame["status"] == "completed").mean() > 0.95
    assert all(stats["by_fault"].get(kind, 0) > 0 for kind in faults)
    # Each trial: one or two turns (truncated replies), each at most 9 attempts. Every request
    # the server saw is one the engine sent: the transport resends nothing.
    assert stats["requests"] < 240 * 2
    assert stats["requests"] == res.run_info["sent"]


async def test_a_connection_closed_mid_request_is_one_engine_retry_counted(tmp_path: Path) -> None:
    """A reused keep-alive connection that the server closes after reading a POST (before any
    reply byte: a load balancer cutting an idle connection during a long call) is not resent
    by the transport: the engine retries it once, and its attempt count says so. The provider
    may have billed the dropped request; the engine's count is the bill's."""
    bench = load_benchmark_server()
    async with bench.LoopbackServer(latency=0.001, seed=1) as server:
        server.script([None, "close"])  # trial 1 opens the connection; trial 2's POST is cut
        model = models.get("openai/m", base_url=server.base_url, api_key="k")
        cfg = SweepConfig(max_retries=3, backoff_base=0.001, progress=False)
        res = await sweep_async(
            FakePerturbation(), model, requests(1), store=tmp_path / "s.sqlite",
            concurrency=1, config=cfg,
        )  # fmt: skip
        await model.aclose()
        stats = server.stats()
    frame = res.to_frame()
    assert (frame["status"] == "completed").all() and len(frame) == 2
    assert stats["by_fault"] == {"close": 1}
    assert stats["requests"] == 3 == res.run_info["sent"]  # 2 trials + exactly one retry
