"""Cost estimates before running: tokens from the rendered prompts, prices from the table."""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from afperturb.models.base import Model
from afperturb.records import Request, Usage
from afperturb.sweep._config import SweepConfig
from afperturb.sweep._engine import PerturbationLike, price, resolve_model


@dataclass(frozen=True)
class CostEstimate:
    """What a sweep will cost before it runs (first turns only; continuations add more).

    ``input_tokens`` is the rendered prompt length / 4 summed over trials; ``output_tokens``
    assumes ``typical_output_tokens`` per trial and ``max_output_tokens`` is the worst case
    (every reply reaching ``max_tokens``). Costs are None when the model has no price.

    With the backend's prompt caching (Anthropic, OpenAI's API), ``cache_write_tokens`` and
    ``cache_read_tokens`` are the parts of ``input_tokens`` expected to be written and read:
    each condition's system prompt written once by its first trial and read by the others
    (the sweep sends a condition's first request alone, :mod:`afperturb.sweep._warmup`),
    which assumes a condition's trials run within the cache's lifetime (5 minutes, refreshed
    by every hit); ``assumptions`` says so in words.
    """

    model: str
    trials: int
    input_tokens: int
    output_tokens: int
    max_output_tokens: int
    cost_usd: float | None
    max_cost_usd: float | None
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    assumptions: str = "no prompt caching"

    def __repr__(self) -> str:
        cost = "unknown price" if self.cost_usd is None else f"${self.cost_usd:,.2f}"
        worst = "" if self.max_cost_usd is None else f" (≤ ${self.max_cost_usd:,.2f})"
        cache = ""
        if self.cache_read_tokens or self.cache_write_tokens:
            cache = (
                f"; prompt cache: {self.cache_write_tokens:,} written, "
                f"{self.cache_read_tokens:,} read"
            )
        return (
            f"<CostEstimate {self.model}: {self.trials} trials, "
            f"{self.input_tokens + self.output_tokens:,} tokens, {cost}{worst}{cache}>"
        )

    def to_frame(self) -> pd.DataFrame:
        """One row with every field."""
        return pd.DataFrame([self.__dict__])

    def to_markdown(self) -> str:
        """A two-column markdown table of the fields."""
        lines = ["| field | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in self.__dict__.items()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in self.__dict__.items()
        )
        return f"<table>{rows}</table>"


def estimate_cost(
    perturbation: PerturbationLike,
    model: Model | str,
    requests: Iterable[Request],
    cfg: SweepConfig,
) -> CostEstimate:
    """Render every (condition, request) once and price the sweep; sends nothing."""
    backend = resolve_model(model)
    reqs = list(requests)
    rules = _cache_rules(backend)
    chars = 0
    reads = writes = 0
    per_condition = len(reqs) * cfg.samples
    for condition in perturbation.conditions():
        system = 0
        for request in reqs:
            messages = perturbation.render(condition, request)
            chars += sum(len(m.content) for m in messages)
            system = sum(len(m.content) for m in messages if m.role == "system")
        if rules is not None and per_condition:
            cached = _cached_prefix(system // 4, *rules[:2])
            writes += cached if rules[2] else 0
            reads += cached * (per_condition - 1)
    n_trials = len(perturbation.conditions()) * per_condition
    input_tokens = chars // 4 * cfg.samples
    typical = min(cfg.params.max_tokens, cfg.typical_output_tokens) * n_trials
    worst = cfg.params.max_tokens * n_trials
    cache = {"cache_read_tokens": reads, "cache_write_tokens": writes}
    factor = cfg.batch_price_factor if cfg.mode == "batch" else 1.0
    cost = price(backend.name, Usage(input_tokens=input_tokens, output_tokens=typical, **cache))
    top = price(backend.name, Usage(input_tokens=input_tokens, output_tokens=worst, **cache))
    cost = None if cost is None else cost * factor
    top = None if top is None else top * factor
    assumptions = (
        "no prompt caching"
        if rules is None
        else f"prompt caching: each condition's system prompt (≥ {rules[0]:,} tokens) written "
        f"{'once' if rules[2] else 'free'} and read by its other {per_condition - 1} trials, "
        "within the cache's 5-minute lifetime"
    )
    if factor != 1.0:
        assumptions += f"; batch prices ({factor:g} × realtime)"
    return CostEstimate(
        backend.name, n_trials, input_tokens, typical, worst, cost, top, reads, writes, assumptions
    )


def _cache_rules(backend: Model) -> tuple[int, int, bool] | None:
    """(minimum prefix, increment, writes billed) of the backend's prompt cache, or None.

    Anthropic with ``prompt_caching``: a breakpoint's prefix of ≥ 1,024 tokens (2,048 for
    Haiku), written at 1.25×. OpenAI's own API (or ``prompt_caching=True``): prefixes of
    ≥ 1,024 tokens in 128-token steps, no write charge.
    """
    provider = backend.name.partition("/")[0]
    on = bool(getattr(backend, "prompt_caching", False))
    if provider == "anthropic" and on:
        return (2048 if "haiku" in backend.name.lower() else 1024), 1, True
    # OpenAI's own API caches by itself, key or no key.
    own_api = getattr(backend, "base_url", "") == "https://api.openai.com/v1"
    if provider == "openai" and (on or own_api):
        return 1024, 128, False
    return None


def _cached_prefix(tokens: int, minimum: int, step: int) -> int:
    """The cacheable part of a ``tokens``-long shared prefix (0 under the minimum)."""
    if tokens < minimum:
        return 0
    return minimum + (tokens - minimum) // step * step
