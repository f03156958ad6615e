"""Prompt caching end to end: sweeps against a server that applies the providers' rules (issue 18).

``benchmarks/caching_server.py`` simulates Anthropic's breakpoints (minimum 1,024 tokens, 5-minute
entries refreshed on hit, writes at 1.25×, reads at 0.1×) and OpenAI's automatic prefix cache
(``cached_tokens``, ``prompt_cache_key``), and keeps the bill. The sweep's own ``cost_usd`` must
agree with that bill, caching must cut the input bill, and caching must change nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from _loopback import load_caching_server

import afperturb as af
from afperturb.store import Store

PRICES = {"anthropic": {"input": 15.0, "output": 75.0}, "openai": {"input": 2.5, "output": 10.0}}
N = 20


def _design() -> af.Perturbation:
    return af.Perturbation.preset("rater_sycophancy")  # 3 conditions, the full ~8,200-token prompt


def _model(provider: str, url: str, **kw: Any) -> af.models.Model:
    if provider == "anthropic":
        return af.models.get(
            "anthropic/claude-3-opus-20240229", base_url=url.removesuffix("/v1"), api_key="k", **kw
        )
    return af.models.get("openai/gpt-4o", base_url=url, api_key="k", **kw)


async def _sweep(provider: str, url: str, store: Path, **kw: Any) -> af.SweepResult:
    model = _model(provider, url, **kw)
    try:
        return await _design().sweep_async(
            model, requests=af.datasets.synthetic(N), store=str(store), concurrency=16,
            progress=False,
        )  # fmt: skip
    finally:
        await model.aclose()


@pytest.mark.parametrize(("provider", "most"), [("anthropic", 0.30), ("openai", 0.60)])
async def test_caching_cuts_the_input_bill_and_cost_usd_is_the_providers_bill(
    tmp_path: Path, provider: str, most: float
) -> None:
    bench = load_caching_server()
    async with bench.CachingServer(latency=0.01) as server:
        kw = {"prompt_caching": True} if provider == "openai" else {}
        res = await _sweep(provider, server.base_url, tmp_path / "s.sqlite", **kw)
        totals = server.totals[provider]
        bill = server.bill_usd(PRICES)
        uncached = server.bill_usd(PRICES, without_caching=True)
        frame = res.to_frame()
        assert (frame["status"] == "completed").all() and len(frame) == 3 * N
        # Each condition's prefix is written once (its warm-up), then read by the rest.
        if provider == "anthropic":
            assert totals.cache_write_tokens > 0
            assert totals.cache_write_tokens <= 3 * max(frame["cache_write_tokens"])
        assert frame["cache_read_tokens"].gt(0).sum() == 3 * (N - 1)
        # The sweep's own cost is the provider's bill (within 2 %), and caching cut it.
        assert float(frame["cost_usd"].sum()) == pytest.approx(bill, rel=0.02)
        out = totals.output_tokens * PRICES[provider]["output"] / 1e6
        assert (bill - out) <= most * (uncached - out), (bill, uncached)
        # A re-run of the finished sweep sends nothing.
        before = server.requests
        again = await _sweep(provider, server.base_url, tmp_path / "s.sqlite", **kw)
        assert server.requests == before and len(again.to_frame()) == 3 * N


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_results_and_cache_keys_are_the_same_with_caching_on_or_off(
    tmp_path: Path, provider: str
) -> None:
    bench = load_caching_server()
    async with bench.CachingServer(latency=0.005) as server:
        on = await _sweep(provider, server.base_url, tmp_path / "on.sqlite", prompt_caching=True)
        off = await _sweep(provider, server.base_url, tmp_path / "off.sqlite", prompt_caching=False)
    keys = ["condition_id", "request_id", "sample", "status", "label", "complied"]
    a = on.to_frame()[keys].sort_values(keys[:3]).reset_index(drop=True)
    b = off.to_frame()[keys].sort_values(keys[:3]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    if provider == "anthropic":  # OpenAI caches by itself; caching off only drops the key
        assert off.to_frame()["cache_read_tokens"].eq(0).all()
    with Store.open(tmp_path / "on.sqlite") as s1, Store.open(tmp_path / "off.sqlite") as s2:
        k1 = {r[0] for r in s1._read.execute("SELECT cache_key FROM completions")}
        k2 = {r[0] for r in s2._read.execute("SELECT cache_key FROM completions")}
    assert k1 == k2 and len(k1) == 3 * N  # what the model is asked is the same


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_the_estimate_before_the_sweep_is_within_ten_percent_of_the_bill(
    tmp_path: Path, provider: str
) -> None:
    """On a deterministic mock whose replies have a known length (the estimate's output
    assumption is ``typical_output_tokens``), the caching-aware estimate matches the bill."""
    bench = load_caching_server()
    reply_tokens = len(bench.DEFAULT_REPLY) // 4
    async with bench.CachingServer(latency=0.005) as server:
        kw = {"prompt_caching": True} if provider == "openai" else {}
        model = _model(provider, server.base_url, **kw)
        est = _design().estimate(
            model, af.datasets.synthetic(N), typical_output_tokens=reply_tokens
        )
        await model.aclose()
        res = await _sweep(provider, server.base_url, tmp_path / "s.sqlite", **kw)
        bill = server.bill_usd(PRICES)
    assert est.cache_read_tokens > 0 and "5-minute" in est.assumptions
    assert "prompt cache" in repr(est)
    assert est.cost_usd == pytest.approx(bill, rel=0.10)
    assert float(res.to_frame()["cost_usd"].sum()) == pytest.approx(est.cost_usd, rel=0.10)
    plain = _design().estimate(
        _model(provider, server.base_url, prompt_caching=False), af.datasets.synthetic(N)
    )
    if provider == "anthropic":
        assert plain.cache_read_tokens == 0 and plain.assumptions == "no prompt caching"
