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
    """

    model: str
    trials: int
    input_tokens: int
    output_tokens: int
    max_output_tokens: int
    cost_usd: float | None
    max_cost_usd: float | None

    def __repr__(self) -> str:
        cost = "unknown price" if self.cost_usd is None else f"${self.cost_usd:,.2f}"
        worst = "" if self.max_cost_usd is None else f" (≤ ${self.max_cost_usd:,.2f})"
        return (
            f"<CostEstimate {self.model}: {self.trials} trials, "
            f"{self.input_tokens + self.output_tokens:,} tokens, {cost}{worst}>"
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
    chars = 0
    for condition in perturbation.conditions():
        for request in reqs:
            chars += sum(len(m.content) for m in perturbation.render(condition, request))
    n_trials = len(perturbation.conditions()) * len(reqs) * cfg.samples
    input_tokens = chars // 4 * cfg.samples
    typical = min(cfg.params.max_tokens, cfg.typical_output_tokens) * n_trials
    worst = cfg.params.max_tokens * n_trials
    cost = price(backend.name, Usage(input_tokens=input_tokens, output_tokens=typical))
    top = price(backend.name, Usage(input_tokens=input_tokens, output_tokens=worst))
    return CostEstimate(backend.name, n_trials, input_tokens, typical, worst, cost, top)


__all__ = ["CostEstimate", "estimate_cost"]
