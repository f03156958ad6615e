"""What prompt caching saves on a paper-sized sweep, against the caching server.

Runs the ``paper`` design (41 conditions) × ``--requests`` synthetic requests through the real
engine and backends (Anthropic Messages, OpenAI Chat Completions) against
``benchmarks/caching_server.py``, which applies the providers' caching rules and keeps the bill,
and prints: tokens written and read, the input bill as a share of the uncached input bill, the
sweep's summed ``cost_usd`` against the server's bill, and the estimate before the sweep against
the bill. ``python benchmarks/caching_cost.py [--requests 100] [--concurrency 64]``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
from pathlib import Path
from typing import Any

import afperturb as af

PRICES = {"anthropic": {"input": 15.0, "output": 75.0}, "openai": {"input": 2.5, "output": 10.0}}
MODELS = {"anthropic": "anthropic/claude-3-opus-20240229", "openai": "openai/gpt-4o"}


def _server_module() -> Any:
    path = Path(__file__).with_name("caching_server.py")
    spec = importlib.util.spec_from_file_location("afperturb_bench_caching", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _model(provider: str, url: str) -> af.models.Model:
    if provider == "anthropic":
        return af.models.get(MODELS[provider], base_url=url.removesuffix("/v1"), api_key="x")
    return af.models.get(MODELS[provider], base_url=url, api_key="x", prompt_caching=True)


async def run(provider: str, requests: int, concurrency: int) -> dict[str, Any]:
    bench = _server_module()
    design = af.Perturbation.preset("paper")
    reqs = af.datasets.synthetic(requests)
    async with bench.CachingServer(latency=0.01) as server:
        model = _model(provider, server.base_url)
        est = design.estimate(model, reqs, typical_output_tokens=len(bench.DEFAULT_REPLY) // 4)
        res = await design.sweep_async(
            model, requests=reqs, concurrency=concurrency, progress=False
        )
        await model.aclose()
        totals = server.totals[provider]
        bill = server.bill_usd(PRICES)
        uncached = server.bill_usd(PRICES, without_caching=True)
    out = totals.output_tokens * PRICES[provider]["output"] / 1e6
    spent = float(res.to_frame()["cost_usd"].sum())
    return {
        "model": MODELS[provider],
        "trials": totals.requests,
        "written": totals.cache_write_tokens,
        "read": totals.cache_read_tokens,
        "input_share": (bill - out) / (uncached - out),
        "bill": bill,
        "cost_usd": spent,
        "estimate": est.cost_usd,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    print("| model | trials | tokens written | tokens read | input billed vs uncached "
          "| cost_usd / bill | estimate / bill |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for provider in ("anthropic", "openai"):
        r = asyncio.run(run(provider, args.requests, args.concurrency))
        print(
            f"| `{r['model']}` | {r['trials']:,} | {r['written']:,} | {r['read']:,} "
            f"| {r['input_share']:.1%} | {r['cost_usd'] / r['bill']:.4f} "
            f"| {r['estimate'] / r['bill']:.4f} |"
        )


if __name__ == "__main__":
    main()
