"""Prices of common models (USD per million tokens) and the cost of one completion.

The table holds list prices for realtime calls, checked in 2025; providers change them, so
:func:`set_price` overrides any entry (or adds a model) for the rest of the process. Names are
matched by their last ``/`` segment, case-insensitively, with dots between digits read as dashes
(``claude-3.5-sonnet`` = ``claude-3-5-sonnet``), and the longest table entry that is a prefix of
the name at a ``-`` boundary wins, so dated snapshots (``gpt-4o-2024-08-06``) and router names
(``meta-llama/llama-3.1-405b-instruct``) find their price. Simulated and replayed models cost 0.

Example:
    >>> from afperturb.records import Usage
    >>> cost("openai/gpt-4o-2024-08-06", Usage(input_tokens=1_000_000, output_tokens=100_000))
    3.5
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from afperturb.records import Usage


@dataclass(frozen=True)
class Price:
    """USD per million input and output tokens."""

    input_per_m: float
    output_per_m: float

    def __repr__(self) -> str:
        return f"Price(${self.input_per_m:g}/M in, ${self.output_per_m:g}/M out)"


_TABLE: dict[str, tuple[float, float]] = {
    # OpenAI
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4-1": (2.00, 8.00),
    "gpt-4-1-mini": (0.40, 1.60),
    "gpt-4-1-nano": (0.10, 0.40),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-4": (30.00, 60.00),
    "gpt-3-5-turbo": (0.50, 1.50),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "o1": (15.00, 60.00),
    "o1-mini": (1.10, 4.40),
    "o3": (2.00, 8.00),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "davinci-002": (2.00, 2.00),
    "babbage-002": (0.40, 0.40),
    # Anthropic
    "claude-3-opus": (15.00, 75.00),
    "claude-3-sonnet": (3.00, 15.00),
    "claude-3-haiku": (0.25, 1.25),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-opus-4": (15.00, 75.00),
    # Open-weight models at typical hosted prices (Together / OpenRouter)
    "llama-3-1-405b": (3.50, 3.50),
    "llama-3-1-70b": (0.88, 0.88),
    "llama-3-1-8b": (0.18, 0.18),
    "llama-3-405b": (3.50, 3.50),
    "llama-3-70b": (0.88, 0.88),
    # Others from the paper's model list
    "gemini-2-0-flash": (0.10, 0.40),
    "grok-3": (3.00, 15.00),
    "deepseek-chat": (0.27, 1.10),
}
_OVERRIDES: dict[str, Price] = {}
_FREE_PROVIDERS = ("sim", "replay")
_DIGIT_DOT = re.compile(r"(?<=\d)\.(?=\d)")


def normalize(model_name: str) -> str:
    """The table key form of a model name: last path segment, lower case, digit dots → dashes."""
    return _DIGIT_DOT.sub("-", model_name.rsplit("/", 1)[-1].strip().lower())


def set_price(model: str, input_per_m: float, output_per_m: float) -> None:
    """Override (or add) a model's price for this process; ``model`` is matched as in lookups."""
    if input_per_m < 0 or output_per_m < 0:
        raise ValueError(
            f"prices must be non-negative; got input_per_m={input_per_m}, "
            f"output_per_m={output_per_m}"
        )
    _OVERRIDES[normalize(model)] = Price(float(input_per_m), float(output_per_m))


def reset_prices() -> None:
    """Drop every :func:`set_price` override."""
    _OVERRIDES.clear()


def prices() -> dict[str, Price]:
    """The whole table, overrides applied."""
    table = {k: Price(*v) for k, v in _TABLE.items()}
    table.update(_OVERRIDES)
    return table


def price(model_name: str) -> Price | None:
    """The price of ``model_name`` (``provider/model`` or bare), or None when unknown."""
    if model_name.split("/", 1)[0] in _FREE_PROVIDERS and "/" in model_name:
        return Price(0.0, 0.0)
    name = normalize(model_name)
    best: str | None = None
    for key in (*_OVERRIDES, *_TABLE):
        matches = name == key or name.startswith(key + "-")
        if matches and (best is None or len(key) > len(best)):
            best = key
    if best is None:
        return None
    return _OVERRIDES.get(best) or Price(*_TABLE[best])


def cost(model_name: str, usage: Usage) -> float | None:
    """USD for one completion's usage, or None when the model's price is unknown."""
    p = price(model_name)
    if p is None:
        return None
    return (usage.input_tokens * p.input_per_m + usage.output_tokens * p.output_per_m) / 1e6


__all__ = ["Price", "cost", "normalize", "price", "prices", "reset_prices", "set_price"]
