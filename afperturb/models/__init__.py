"""Model backends: OpenAI-compatible, Anthropic, completions (base models), simulated, replay.

``af.models.get("provider/model", **kwargs)`` builds any of them; the classes are importable
from here too. The HTTP backends (and httpx) load on first use, so ``import afperturb`` stays
fast for offline work on simulated models. ``MotivationProfile`` and ``PROFILES`` live in
:mod:`afperturb.profiles` (the truth the simulated backend and ``stats.simulate_frame`` share)
and are re-exported here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from afperturb.models.base import (
    GenerationContext,
    Model,
    ModelFactory,
    get,
    is_retryable,
    providers,
    register,
)

if TYPE_CHECKING:
    from afperturb.models.anthropic import AnthropicMessages
    from afperturb.models.openai import OpenAIChat, OpenAICompletions
    from afperturb.models.pricing import Price, cost, price, prices, reset_prices, set_price
    from afperturb.models.replay import Replay
    from afperturb.models.simulated import Simulated
    from afperturb.profiles import PROFILES, MotivationProfile

_LAZY: dict[str, str] = {
    "AnthropicMessages": "afperturb.models.anthropic",
    "MotivationProfile": "afperturb.profiles",
    "OpenAIChat": "afperturb.models.openai",
    "OpenAICompletions": "afperturb.models.openai",
    "PROFILES": "afperturb.profiles",
    "Price": "afperturb.models.pricing",
    "Replay": "afperturb.models.replay",
    "Simulated": "afperturb.models.simulated",
    "cost": "afperturb.models.pricing",
    "price": "afperturb.models.pricing",
    "prices": "afperturb.models.pricing",
    "reset_prices": "afperturb.models.pricing",
    "set_price": "afperturb.models.pricing",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'afperturb.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "PROFILES",
    "AnthropicMessages",
    "GenerationContext",
    "Model",
    "ModelFactory",
    "MotivationProfile",
    "OpenAIChat",
    "OpenAICompletions",
    "Price",
    "Replay",
    "Simulated",
    "cost",
    "get",
    "is_retryable",
    "price",
    "prices",
    "providers",
    "register",
    "reset_prices",
    "set_price",
]
