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
    """USD per million input and output tokens, and per million cached-input tokens.

    ``cache_read_per_m`` is the price of a prompt token read from the provider's cache,
    ``cache_write_per_m`` of one written to it (Anthropic: 0.1× and 1.25× the input price for
    the 5-minute cache; OpenAI: a model's cached-input price, and no write charge). None means
    "the input price" (a provider without prompt caching).
    """

    input_per_m: float
    output_per_m: float
    cache_read_per_m: float | None = None
    cache_write_per_m: float | None = None

    def __repr__(self) -> str:
        text = f"${self.input_per_m:g}/M in, ${self.output_per_m:g}/M out"
        if self.cache_read_per_m is not None:
            text += f", ${self.cache_read_per_m:g}/M cache read"
        if self.cache_write_per_m is not None:
            text += f", ${self.cache_write_per_m:g}/M cache write"
        return f"Price({text})"

    def of(self, usage: Usage) -> float:
        """USD for ``usage`` (cache reads and writes at their own rates)."""
        read = self.input_per_m if self.cache_read_per_m is None else self.cache_read_per_m
        write = self.input_per_m if self.cache_write_per_m is None else self.cache_write_per_m
        total = (
            usage.uncached_input_tokens * self.input_per_m
            + usage.cache_read_tokens * read
            + usage.cache_write_tokens * write
            + usage.output_tokens * self.output_per_m
        )
        return total / 1e6


#: Anthropic's prompt-cache multipliers of the input price (5-minute entries).
ANTHROPIC_CACHE_READ = 0.1
ANTHROPIC_CACHE_WRITE = 1.25
#: OpenAI's cached-input price as a share of the input price, by model (list prices; the
#: models not named here get 0.5, the rate of the gpt-4o family).
_OPENAI_CACHED_SHARE = {
    "gpt-4-1": 0.25,
    "gpt-4-1-mini": 0.25,
    "gpt-4-1-nano": 0.25,
    "gpt-5": 0.1,
    "gpt-5-mini": 0.1,
    "gpt-5-nano": 0.1,
    "o3": 0.25,
    "o4-mini": 0.25,
}
_OPENAI_DEFAULT_SHARE = 0.5


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


def set_price(
    model: str,
    input_per_m: float,
    output_per_m: float,
    *,
    cache_read_per_m: float | None = None,
    cache_write_per_m: float | None = None,
) -> None:
    """Override (or add) a model's price for this process; ``model`` is matched as in lookups.

    Without ``cache_read_per_m`` / ``cache_write_per_m`` a known provider's cache rates are
    derived from ``input_per_m`` (Anthropic 0.1× / 1.25×, OpenAI its cached share / none);
    give them to state a provider's own.
    """
    values = {
        "input_per_m": input_per_m,
        "output_per_m": output_per_m,
        "cache_read_per_m": cache_read_per_m,
        "cache_write_per_m": cache_write_per_m,
    }
    for name, value in values.items():
        if value is not None and value < 0:
            raise ValueError(f"prices must be non-negative; got {name}={value}")
    key = normalize(model)
    derived = _with_cache_rates(key, float(input_per_m), float(output_per_m))
    _OVERRIDES[key] = Price(
        derived.input_per_m,
        derived.output_per_m,
        derived.cache_read_per_m if cache_read_per_m is None else float(cache_read_per_m),
        derived.cache_write_per_m if cache_write_per_m is None else float(cache_write_per_m),
    )


def _with_cache_rates(key: str, input_per_m: float, output_per_m: float) -> Price:
    """The price with the provider's prompt-cache rates for table key ``key``."""
    if key.startswith("claude"):
        return Price(
            input_per_m,
            output_per_m,
            input_per_m * ANTHROPIC_CACHE_READ,
            input_per_m * ANTHROPIC_CACHE_WRITE,
        )
    if key.startswith(("gpt-", "o1", "o3", "o4")):
        share = _OPENAI_CACHED_SHARE.get(key, _OPENAI_DEFAULT_SHARE)
        return Price(input_per_m, output_per_m, input_per_m * share, input_per_m)
    return Price(input_per_m, output_per_m)


def reset_prices() -> None:
    """Drop every :func:`set_price` override."""
    _OVERRIDES.clear()


def prices() -> dict[str, Price]:
    """The whole table, overrides applied."""
    table = {k: _with_cache_rates(k, *v) for k, v in _TABLE.items()}
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
    return _OVERRIDES.get(best) or _with_cache_rates(best, *_TABLE[best])


def cost(model_name: str, usage: Usage) -> float | None:
    """USD for one completion's usage, or None when the model's price is unknown."""
    p = price(model_name)
    if p is None:
        return None
    return p.of(usage)


__all__ = [
    "ANTHROPIC_CACHE_READ",
    "ANTHROPIC_CACHE_WRITE",
    "Price",
    "cost",
    "normalize",
    "price",
    "prices",
    "reset_prices",
    "set_price",
]
