"""Micro-benchmarks of the per-trial hot paths of a sweep (issue 4), in microseconds per call.

The engine's client CPU per trial is the sum of a few small costs; this prints each one so a
change can be measured in isolation (unit tests never assert timings; the numbers live here
and in ``benchmarks/README.md``):

- ``render``         ``Perturbation.render`` of one (condition, request) of the paper preset
- ``cache_key``      :func:`afperturb.store.cache_key` of one rendered prompt (~3.2 kB)
- ``json.dumps``     an OpenAI chat body of that prompt, as httpx's ``json=`` encodes it
- ``encode_json``    the same bytes through the backends' encoder (long strings memoised)
- ``tags``           ``TagClassifier().label`` of one simulated reply
- ``heuristic_af``   ``HeuristicAFClassifier().label`` of the same reply (after ``tags``, as in
                     a sweep, so the shared tag parse is reused)
- ``af_criteria``    the four phrase-family criteria on a scratchpad alone
- ``trial``          building the validated ``Trial`` record of one reply
- ``store_rows``     the store's row encoding of a trial and its two labels
- ``sim_generate``   ``Simulated.generate`` (``sim/opus-like``) calls
- ``engine``         a whole sweep per trial (render, key, store, labels, bookkeeping) with an
                     instant in-process model, i.e. everything but HTTP; CPU of all threads

    PYTHONPATH=. python benchmarks/hot_paths.py            # ~20 s
    PYTHONPATH=. python benchmarks/hot_paths.py --engine-trials 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from afperturb import datasets, models  # noqa: E402
from afperturb.classify.heuristics import HeuristicAFClassifier, af_criteria  # noqa: E402
from afperturb.classify.tags import TagClassifier, parse_tags  # noqa: E402
from afperturb.design import Perturbation  # noqa: E402
from afperturb.models._http import encode_json  # noqa: E402
from afperturb.models.base import GenerationContext  # noqa: E402
from afperturb.records import (  # noqa: E402
    Completion,
    Condition,
    Message,
    Request,
    SamplingParams,
    Trial,
    Usage,
)
from afperturb.store import TrialRow, cache_key  # noqa: E402
from afperturb.store._rows import _label_row, _trial_row  # noqa: E402


def per_call(fn: Callable[[int], object], n: int) -> float:
    """Microseconds of process CPU per call of ``fn(i)`` over ``n`` calls (best of three)."""
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        for i in range(n):
            fn(i)
        best = min(best, (time.process_time() - t0) / n * 1e6)
    return best


class InstantModel:
    """A backend that answers at once with a fixed reply: the engine's cost without HTTP."""

    name = "bench/instant"

    def __init__(self, text: str) -> None:
        self.text = text

    async def generate(
        self,
        messages: Sequence[Message],
        params: SamplingParams,
        context: GenerationContext | None = None,
    ) -> Completion:
        """The fixed reply, with token counts like a real backend's."""
        return Completion(
            text=self.text, usage=Usage(input_tokens=800, output_tokens=120), latency_s=0.0
        )

    def config(self) -> dict[str, Any]:
        """Identity for cache keys."""
        return {"provider": "bench", "model": "instant"}

    async def aclose(self) -> None:
        """Nothing to close."""


def _samples(n_requests: int) -> tuple[Perturbation, list[tuple[Condition, Request, Any]]]:
    p = Perturbation.preset("paper")
    conditions = p.conditions()
    requests = datasets.synthetic(n_requests, seed=0)
    sim = models.get("sim/opus-like")
    params = SamplingParams()

    async def make() -> list[tuple[Condition, Request, Any]]:
        out = []
        for c in conditions:
            for r in requests:
                comp = await sim.generate(p.render(c, r), params, GenerationContext(c, r, 0, 0, 0))
                out.append((c, r, comp))
        return out

    return p, asyncio.run(make())


def micro(n: int) -> dict[str, float]:
    """Per-call costs of the pieces, on the paper preset and simulated replies."""
    p, items = _samples(8)
    k = len(items)
    params = SamplingParams()
    prompts = [p.render(c, r) for c, r, _ in items]
    trials = [
        Trial(
            model="m",
            condition_id=c.id,
            request_id=r.id,
            sample=0,
            status="completed",
            completions=(comp,),
            cache_key="k",
        )
        for c, r, comp in items
    ]
    tags, heur = TagClassifier(), HeuristicAFClassifier()
    scratch = [parse_tags(t.text).scratchpad for t in trials]
    rows = [
        TrialRow(t, "run", False, (tags.label(t, c), heur.label(t, c)), ("k",))
        for t, (c, _, _) in zip(trials, items, strict=True)
    ]
    sim = models.get("sim/opus-like")
    loop = asyncio.new_event_loop()
    chat = models.get("openai/bench", base_url="http://127.0.0.1:9", api_key="x")
    bodies = [chat.body(m, params) for m in prompts]  # type: ignore[attr-defined]

    def both(i: int) -> None:
        t, c = trials[i % k], items[i % k][0]
        tags.label(t, c)
        heur.label(t, c)

    def store_rows(i: int) -> None:
        row = rows[i % k]
        _trial_row(row)
        for lab in row.labels:
            _label_row(lab)

    out = {
        "render": per_call(lambda i: p.render(items[i % k][0], items[i % k][1]), n),
        "cache_key": per_call(lambda i: cache_key("m" * 64, prompts[i % k], params, 0, 0), n),
        "json.dumps": per_call(
            lambda i: json.dumps(
                bodies[i % k], ensure_ascii=False, separators=(",", ":"), allow_nan=False
            ).encode(),
            n,
        ),
        "encode_json": per_call(lambda i: encode_json(bodies[i % k]), n),
        "tags": per_call(lambda i: tags.label(trials[i % k], items[i % k][0]), n),
        "tags+heuristic_af": per_call(both, n),
        "af_criteria": per_call(lambda i: af_criteria(scratch[i % k]), n),
        "trial": per_call(
            lambda i: Trial(
                model="m",
                condition_id="c",
                request_id="r",
                status="completed",
                completions=(items[i % k][2],),
            ),
            n,
        ),
        "store_rows": per_call(store_rows, n),
        "sim_generate": per_call(
            lambda i: loop.run_until_complete(
                sim.generate(
                    prompts[i % k],
                    params,
                    GenerationContext(items[i % k][0], items[i % k][1], i, 0, 0),
                )
            ),
            max(1, n // 4),
        ),
    }
    loop.close()
    return out


def engine(trials: int, concurrency: int) -> dict[str, float]:
    """A whole sweep with the instant model: engine CPU per trial (all threads)."""
    p, items = _samples(1)
    model = InstantModel(items[0][2].text)
    n_requests = max(1, trials // len(p.conditions()))
    requests = datasets.synthetic(n_requests, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        p.sweep(model, requests[:2], store=os.path.join(tmp, "w.sqlite"), progress=False)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        result = p.sweep(
            model,
            requests,
            store=os.path.join(tmp, "b.sqlite"),
            concurrency=concurrency,
            progress=False,
        )
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        n = result.run_info["sent"] if hasattr(result, "run_info") else trials
    done = n_requests * len(p.conditions())
    return {"engine_us_per_trial": cpu / done * 1e6, "engine_trials_per_s": done / wall, "n": n}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per micro-benchmark")
    parser.add_argument("--engine-trials", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=256)
    args = parser.parse_args(argv)
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print("| hot path | µs per call |\n|---|---|")
    for name, us in micro(args.calls).items():
        print(f"| {name} | {us:.1f} |")
    eng = engine(args.engine_trials, args.concurrency)
    print(
        f"| engine without HTTP (per trial, {args.engine_trials} trials, "
        f"{args.concurrency} in flight) | {eng['engine_us_per_trial']:.1f} |"
    )
    print(f"# engine without HTTP: {eng['engine_trials_per_s']:.0f} trials/s")


if __name__ == "__main__":
    main()
