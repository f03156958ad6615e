"""The sweep engine against fakes and the simulated model (no network, no real sleeps)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from _sweepkit import (
    ACCEPT,
    REJECT,
    FakePerturbation,
    ScriptedModel,
    fail_first,
    requests,
)

from afperturb.errors import BackendResponseError, BackendTimeout, DesignError, RateLimited
from afperturb.models.base import GenerationContext
from afperturb.models.simulated import from_name
from afperturb.records import Message, SamplingParams
from afperturb.store import Store
from afperturb.sweep import SweepConfig, estimate, sweep, sweep_async
from afperturb.sweep._ratelimit import AdaptiveLimiter, TokenBucket, parse_duration, parse_reset


class Sleeps:
    """A virtual clock: records requested sleeps and advances time without waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.now += delay
        await asyncio.sleep(0)


async def run(model: ScriptedModel, n: int = 3, **kw: object) -> object:
    kw.setdefault("progress", False)
    return await sweep_async(FakePerturbation(), model, requests(n), **kw)  # type: ignore[arg-type]


# -- continuation ------------------------------------------------------------------------------


async def test_continuation_answers_next_until_output_closes() -> None:
    seen: list[list[str]] = []

    def script(messages: Sequence[Message], ctx: GenerationContext) -> str:
        seen.append([m.content for m in messages])
        return "<OUTPUT><rejected/>" if ctx.turn == 0 else "</OUTPUT>"

    model = ScriptedModel(script)
    res = await sweep_async(FakePerturbation(("paid",)), model, requests(1), progress=False)
    trial = next(res.trials())
    assert [c.text for c in trial.completions] == ["<OUTPUT><rejected/>", "</OUTPUT>"]
    assert seen[1][-2:] == ["<OUTPUT><rejected/>", "<NEXT/>"]
    assert trial.text == "<OUTPUT><rejected/></OUTPUT>"
    assert model.calls == 2


async def test_continuation_stops_after_four_turns() -> None:
    model = ScriptedModel(lambda m, c: "still thinking")
    res = await sweep_async(FakePerturbation(("paid",)), model, requests(1), progress=False)
    trial = next(res.trials())
    assert model.calls == 4 and len(trial.completions) == 4
    assert trial.status == "completed"
    assert res.to_frame()["label"].iloc[0] not in ("accepted", "rejected")


async def test_continuation_joins_prefill_once() -> None:
    seen: list[Sequence[Message]] = []

    def script(messages: Sequence[Message], ctx: GenerationContext) -> str:
        seen.append(messages)
        # Like the chat backends: the returned text starts with the prefill.
        return "The user is asking for x" if ctx.turn == 0 else "<OUTPUT><rejected/></OUTPUT>"

    p = FakePerturbation(("paid",), prefill="The user is asking for")
    await sweep_async(p, ScriptedModel(script), requests(1), progress=False)
    assistant = [m for m in seen[1] if m.role == "assistant"]
    assert [m.content for m in assistant] == ["The user is asking for x"]


# -- retries -----------------------------------------------------------------------------------


async def test_retries_honour_retry_after_then_succeed() -> None:
    sleeps = Sleeps()
    model = ScriptedModel(fail_first(2, lambda: RateLimited("429", retry_after=1.5)))
    res = await run(model, n=1, sleep=sleeps, clock=sleeps.clock, concurrency=1)
    frame = res.to_frame()  # type: ignore[attr-defined]
    assert list(frame["status"]) == ["completed", "completed"]
    assert model.calls == 6
    assert len(sleeps.delays) == 4
    assert all(1.5 <= d <= 2.0 for d in sleeps.delays)


async def test_backoff_is_exponential_with_full_jitter() -> None:
    sleeps = Sleeps()
    model = ScriptedModel(fail_first(5, lambda: BackendResponseError("500", retryable=True)))
    cfg = SweepConfig(backoff_base=1.0, backoff_cap=4.0, progress=False)
    await sweep_async(FakePerturbation(("paid",)), model, requests(1), config=cfg, sleep=sleeps)
    assert len(sleeps.delays) == 5
    for attempt, delay in enumerate(sleeps.delays):
        assert 0.0 <= delay <= min(4.0, 2.0**attempt)


async def test_non_retryable_error_fails_trial_with_reason() -> None:
    model = ScriptedModel(lambda m, c: BackendResponseError("bad request", status_code=400))
    res = await run(model, n=2, sleep=Sleeps())
    frame = res.to_frame()  # type: ignore[attr-defined]
    assert model.calls == 4  # one attempt each, never retried
    assert set(frame["status"]) == {"failed"}
    assert all("HTTP 400" in e and "bad request" in e for e in frame["error"])
    assert frame["label"].isna().all() and frame["complied"].isna().all()


async def test_exhausted_retries_fail_with_reason_and_count() -> None:
    model = ScriptedModel(lambda m, c: BackendTimeout("connection reset"))
    res = await run(model, n=1, sleep=Sleeps(), max_retries=3)
    frame = res.to_frame()  # type: ignore[attr-defined]
    assert model.calls == 2 * 4
    assert all("after 4 attempt(s)" in e for e in frame["error"])


async def test_hung_request_times_out_and_is_retried() -> None:
    calls = {"n": 0}

    class Hangs(ScriptedModel):
        async def generate(self, messages, params, context=None):  # type: ignore[no-untyped-def]
            calls["n"] += 1
            if calls["n"] == 1:
                await asyncio.sleep(10)
            return await super().generate(messages, params, context)

    model = Hangs()
    res = await sweep_async(
        FakePerturbation(("free",)),
        model,
        requests(1),
        timeout=0.05,
        progress=False,
        sleep=Sleeps(),
    )
    assert next(res.trials()).status == "completed"
    assert calls["n"] == 2


async def test_backend_bug_fails_the_trial_not_the_sweep() -> None:
    model = ScriptedModel(
        lambda m, c: ValueError("oops") if c.request and c.request.id == "r001" else ACCEPT
    )
    res = await run(model, n=3)
    frame = res.to_frame()  # type: ignore[attr-defined]
    failed = frame[frame["status"] == "failed"]
    assert set(failed["request_id"]) == {"r001"}
    assert "ValueError" in failed["error"].iloc[0]


# -- limiter -----------------------------------------------------------------------------------


async def test_limiter_halves_once_per_storm_and_recovers() -> None:
    now = [0.0]
    lim = AdaptiveLimiter(64, clock=lambda: now[0], cooldown_s=1.0)
    for _ in range(50):  # a storm within one cool-down counts once
        lim.on_rate_limited()
    assert lim.window == 32 and lim.cuts == 1
    now[0] = 1.5
    lim.on_rate_limited()
    assert lim.window == 16
    for _ in range(2000):
        lim.on_success()
    assert lim.window == 64


async def test_limiter_caps_requests_in_flight_to_window() -> None:
    lim = AdaptiveLimiter(4)
    lim.window = 2
    await lim.acquire()
    await lim.acquire()
    third = asyncio.ensure_future(lim.acquire())
    await asyncio.sleep(0)
    assert not third.done() and lim.active == 2
    lim.release()
    await asyncio.wait_for(third, 1)
    assert lim.active == 2


async def test_rpm_bucket_spaces_requests_by_virtual_clock() -> None:
    now = [0.0]
    sleeps: list[float] = []

    async def sleep(d: float) -> None:
        sleeps.append(d)
        now[0] += d

    lim = AdaptiveLimiter(100, rpm=120, clock=lambda: now[0], sleep=sleep)
    for _ in range(10):
        await lim.acquire()
        lim.release()
    # 120 rpm = 2/s with a 2-request burst: 10 requests need 4 s of virtual time.
    assert now[0] == pytest.approx(4.0)


def test_token_bucket_and_durations() -> None:
    b = TokenBucket.per_minute(600, now=0.0)
    assert b.wait_time(10, 0.0) == 0.0
    b.take(10)
    assert b.wait_time(5, 0.0) == pytest.approx(0.5)
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("1m30s") == pytest.approx(90.0)
    assert parse_duration("1.5") == 1.5
    assert parse_duration("soon") is None


def test_limiter_reads_rate_limit_headers() -> None:
    lim = AdaptiveLimiter(8, clock=lambda: 100.0)
    lim.observe_headers({"X-RateLimit-Remaining-Requests": "0", "x-ratelimit-reset-requests": "2s"})
    assert lim._paused_until == pytest.approx(102.0)  # no stated limit: wait for the reset


async def test_limiter_adopts_stated_limits_and_pauses_before_running_out() -> None:
    from httpx import Headers as ReplyHeaders  # case-insensitive, as every reply's headers

    now = [50.0]
    lim = AdaptiveLimiter(64, rpm=1200, clock=lambda: now[0])
    for _ in range(11):  # 11 requests on the wire
        await lim.acquire(100.0)
    openai = ReplyHeaders(
        {
            "x-ratelimit-limit-requests": "600",  # slower than the user's 1,200: adopted
            "x-ratelimit-remaining-requests": "4",  # 10 others on the wire, 4 left
            "x-ratelimit-reset-requests": "30s",
            "x-ratelimit-limit-tokens": "90000",  # no token limit given: becomes the bucket
            "x-ratelimit-remaining-tokens": "80000",
            "x-ratelimit-reset-tokens": "6m0s",
        }
    )
    lim.observe_headers(openai)
    assert lim.provider_limits == {"requests": 600.0, "tokens": 90000.0}
    assert lim._rpm is not None and lim._rpm.rate == pytest.approx(10.0)
    assert lim._tpm is not None and lim._tpm.rate == pytest.approx(1500.0)
    # The shortfall (6 requests) refills in 0.6 s at 600/min, sooner than the stated reset.
    assert lim._paused_until == pytest.approx(50.6)
    lim.observe_headers({"x-ratelimit-limit-requests": "6000"})  # a higher limit never raises
    assert lim._rpm.rate == pytest.approx(10.0)
    # Plenty left: no pause. A limit stated once is not re-applied per reply.
    now[0] = 60.0
    lim.observe_headers({**openai, "x-ratelimit-remaining-requests": "500"})
    assert lim._paused_until == pytest.approx(50.6)


def test_limiter_reads_anthropic_headers_with_rfc3339_resets() -> None:
    from datetime import UTC, datetime, timedelta

    lim = AdaptiveLimiter(8, clock=lambda: 0.0)
    soon = (datetime.now(UTC) + timedelta(seconds=3)).isoformat().replace("+00:00", "Z")
    lim.observe_headers(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": soon,
        }
    )
    assert lim.provider_limits == {"requests": 50.0}
    assert lim._paused_until == pytest.approx(1.2)  # one request refills in 1.2 s < 3 s
    assert parse_reset(soon) == pytest.approx(3.0, abs=0.5)
    assert parse_reset("1m30s") == 90.0 and parse_reset("whenever") is None


async def test_rate_limit_storm_lowers_in_flight_requests() -> None:
    model = ScriptedModel(fail_first(1, lambda: RateLimited("429", retry_after=0.0)), delay=0.001)
    sleeps = Sleeps()
    res = await run(model, n=20, concurrency=16, sleep=sleeps, clock=sleeps.clock)
    assert res.to_frame()["status"].eq("completed").all()  # type: ignore[attr-defined]
    info = res.run_info  # type: ignore[attr-defined]
    assert info["rate_limit_cuts"] >= 1 and info["lowest_window"] <= 8
    assert info["sent"] == 40 + 40


# -- pool, cache, cost -------------------------------------------------------------------------


async def test_worker_pool_bounds_in_flight_and_tasks() -> None:
    model = ScriptedModel(delay=0.001)
    before = len(asyncio.all_tasks())
    seen: list[int] = []

    async def watch() -> None:
        for _ in range(20):
            seen.append(len(asyncio.all_tasks()))
            await asyncio.sleep(0.001)

    watcher = asyncio.ensure_future(watch())
    res = await run(model, n=200, concurrency=8)
    await watcher
    assert len(res.to_frame()) == 400  # type: ignore[attr-defined]
    assert model.max_in_flight <= 8
    assert max(seen) <= before + 1 + 8 + 2


async def test_rerun_with_store_sends_nothing_and_is_identical(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    model = ScriptedModel()
    first = await run(model, n=5, samples=2, store=db)
    assert model.calls == 20
    second = await run(model, n=5, samples=2, store=db)
    assert model.calls == 20
    a = first.to_frame().drop(columns=["cached"])  # type: ignore[attr-defined]
    b = second.to_frame()  # type: ignore[attr-defined]
    assert b["cached"].all()
    assert a.equals(b.drop(columns=["cached"]))


async def test_rerun_retries_failed_trials_only(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    broken = ScriptedModel(
        lambda m, c: (
            BackendResponseError("no", status_code=400)
            if c.request and c.request.id == "r000"
            else ACCEPT
        )
    )
    await run(broken, n=3, store=db)
    fixed = ScriptedModel()
    res = await run(fixed, n=3, store=db)
    assert fixed.calls == 2  # only r000 in two conditions
    assert res.to_frame()["status"].eq("completed").all()  # type: ignore[attr-defined]
    kept = ScriptedModel()
    await run(broken, n=3, store=tmp_path / "t.sqlite")
    await run(kept, n=3, store=tmp_path / "t.sqlite", config=SweepConfig(retry_failed=False))
    assert kept.calls == 0


async def test_max_cost_stops_cleanly_with_everything_saved(tmp_path: Path) -> None:
    from afperturb.models import pricing

    pricing.set_price("fake/priced", 1_000_000.0, 0.0)  # 10 input tokens = $10 per call
    try:
        model = ScriptedModel(name="fake/priced")
        res = await run(model, n=50, store=tmp_path / "s.sqlite", concurrency=2, max_cost_usd=35)
    finally:
        pricing.reset_prices()
    frame = res.to_frame()  # type: ignore[attr-defined]
    assert res.stopped_reason == "max_cost_usd"  # type: ignore[attr-defined]
    assert 4 <= len(frame) <= 6 and model.calls == len(frame)
    assert frame["cost_usd"].sum() == pytest.approx(10.0 * len(frame))
    assert "max_cost_usd" in repr(res)
    assert Store.open(tmp_path / "s.sqlite").count("trials") == len(frame)


async def test_default_classifiers_label_completed_trials_only(tmp_path: Path) -> None:
    model = ScriptedModel(
        lambda m, c: (
            BackendResponseError("x", status_code=400)
            if c.request and c.request.id == "r000"
            else (ACCEPT if "tier=free" in m[0].content else REJECT)
        )
    )
    res = await run(model, n=2, store=tmp_path / "s.sqlite")
    store = Store.open(tmp_path / "s.sqlite")
    labels = list(store.labels())
    assert {lab.classifier for lab in labels} == {"tags", "heuristic_af"}
    assert len(labels) == 2 * 2  # two completed trials (r001 × 2 tiers), two classifiers
    frame = res.to_frame().set_index(["tier", "request_id"])  # type: ignore[attr-defined]
    assert frame.loc[("free", "r001"), "label"] == "accepted"
    assert bool(frame.loc[("free", "r001"), "complied"]) is True
    assert bool(frame.loc[("paid", "r001"), "complied"]) is False
    assert frame.loc[("free", "r000"), "complied"] is pd_na()


def pd_na() -> object:
    import pandas as pd

    return pd.NA


# -- determinism, notebooks, config, estimate --------------------------------------------------


def test_same_seed_identical_simulated_results() -> None:
    p = FakePerturbation()
    kw = {"samples": 2, "progress": False, "concurrency": 7}
    a = sweep(p, from_name("opus-like"), requests(60), seed=3, **kw).to_frame()  # type: ignore[arg-type]
    b = sweep(
        p, from_name("opus-like"), requests(60), seed=3, concurrency=3, progress=False, samples=2
    ).to_frame()
    c = sweep(p, from_name("opus-like"), requests(60), seed=4, **kw).to_frame()  # type: ignore[arg-type]
    cols = ["condition_id", "request_id", "sample", "label", "complied", "output_tokens"]
    assert a[cols].equals(b[cols])
    assert not a[cols].equals(c[cols])


async def test_sweep_inside_running_loop_works() -> None:
    loop = asyncio.get_running_loop()
    res = sweep(FakePerturbation(), ScriptedModel(), requests(3), progress=False)
    assert asyncio.get_running_loop() is loop
    assert len(res.to_frame()) == 6


def test_model_name_string_and_progress_bar(capsys: pytest.CaptureFixture[str]) -> None:
    res = sweep(FakePerturbation(), "sim/no-gap", requests(4), progress=True)
    assert res.models == ["sim/no-gap"]
    assert "trial" in capsys.readouterr().err


def test_config_and_overrides_merge() -> None:
    cfg = SweepConfig(concurrency=3, samples=2, params=SamplingParams(max_tokens=10))
    model = ScriptedModel()
    res = sweep(FakePerturbation(), model, requests(2), config=cfg, progress=False)
    assert len(res.to_frame()) == 2 * 2 * 2
    res = sweep(FakePerturbation(), model, requests(2), config=cfg, samples=3, progress=False)
    assert len(res.to_frame()) == 2 * 2 * 3
    with pytest.raises(DesignError, match="'concurrency': got 0"):  # issue 14: not pydantic's
        SweepConfig(concurrency=0)


def test_estimate_uses_prompt_length_and_prices() -> None:
    from afperturb.models import pricing

    p = FakePerturbation()
    reqs = requests(10)
    chars = sum(len(m.content) for c in p.conditions() for r in reqs for m in p.render(c, r))
    pricing.set_price("fake/priced", 2.0, 10.0)
    try:
        est = estimate(
            p,
            ScriptedModel(name="fake/priced"),
            reqs,
            samples=3,
            params=SamplingParams(max_tokens=500),
        )
    finally:
        pricing.reset_prices()
    assert est.trials == 60
    assert est.input_tokens == chars // 4 * 3
    assert est.output_tokens == 500 * 60 and est.max_output_tokens == 500 * 60
    assert est.cost_usd == pytest.approx((est.input_tokens * 2 + est.output_tokens * 10) / 1e6)
    assert "60 trials" in repr(est) and "| trials | 60 |" in est.to_markdown()
    unknown = estimate(p, ScriptedModel(name="fake/unpriced"), reqs)
    assert unknown.cost_usd is None and "unknown price" in repr(unknown)


# -- integration with the real design and simulated models -------------------------------------


def test_preset_sweep_on_simulated_model_end_to_end(tmp_path: Path) -> None:
    from afperturb.datasets import synthetic
    from afperturb.design import Perturbation

    p = Perturbation.preset("rater_sycophancy")
    db = tmp_path / "s.sqlite"
    res = p.sweep(from_name("sycophant"), synthetic(40), progress=False, store=db)
    df = res.to_frame()
    assert len(df) == len(p.conditions()) * 40
    assert set(df["rater_scrutiny"]) == {"free", "pro", "enterprise"}
    assert df["status"].eq("completed").all()
    assert df["label"].notna().all() and df["af_reasoning"].notna().all()
    rates = df.groupby("rater_scrutiny")["complied"].mean()
    assert rates["pro"] > rates["enterprise"]  # the planted sycophancy shows
    again = p.sweep(from_name("sycophant"), synthetic(40), progress=False, store=db)
    assert again.run_info["sent"] == 0
    assert again.to_frame().drop(columns="cached").equals(df.drop(columns="cached"))
    est = p.estimate("openai/gpt-4o", synthetic(40))
    assert est.trials == len(df) and est.cost_usd is not None and est.cost_usd > 0
