"""The model protocol every backend implements, and the ``provider/model`` registry.

A backend turns a list of messages into a :class:`~afperturb.records.Completion`. Real backends
speak HTTP through an injected :class:`httpx.AsyncClient` (tests pass one built on
``httpx.MockTransport``); the simulated model reads the condition's facts from the
:class:`GenerationContext` and never parses the prompt.

Backends raise the :mod:`afperturb.errors` backend errors; whether to retry is decided by
:func:`is_retryable`, in one place, so the sweep engine and the judges agree.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from afperturb.errors import BackendError, unknown_choice
from afperturb.records import Completion, Condition, Message, Request, SamplingParams


@dataclass(frozen=True)
class GenerationContext:
    """Who is asking: the trial a generation belongs to.

    Real backends use it to label errors and hand every reply's headers to ``on_headers``
    (the sweep's rate limiter reads the provider's ``x-ratelimit-*`` headers there); the
    simulated model reads ``condition.facts`` and ``request.id`` (its ground truth), and
    ``turn`` for continuations.
    """

    condition: Condition | None = None
    request: Request | None = None
    sample: int = 0
    seed: int = 0
    turn: int = 0
    #: Called with each HTTP reply's headers (a case-insensitive mapping), 429s included.
    on_headers: Callable[[Mapping[str, str]], None] | None = field(
        default=None, compare=False, repr=False
    )


@runtime_checkable
class Model(Protocol):
    """What the sweep engine and the judges need from a backend."""

    #: ``provider/model`` as given to :func:`get`.
    name: str

    async def generate(
        self,
        messages: Sequence[Message],
        params: SamplingParams,
        context: GenerationContext | None = None,
    ) -> Completion:
        """Return one completion, or raise a :class:`~afperturb.errors.BackendError`."""
        ...

    def config(self) -> dict[str, Any]:
        """Everything that changes the output (for the cache key and manifest); never secrets."""
        ...

    async def aclose(self) -> None:
        """Release connections the backend opened itself."""
        ...


def is_retryable(error: BaseException) -> bool:
    """Whether the sweep should try a failed generation again.

    429s, timeouts, connection errors, 5xx and unparseable bodies are retryable; other 4xx are
    not (the request itself is wrong, and sending it again only costs money).
    """
    if isinstance(error, BackendError):
        return error.retryable
    return False


ModelFactory = Callable[..., Model]

#: provider prefix → "module:attribute" of a factory ``f(model_name, **kwargs) -> Model``.
#: Imported lazily so that ``import afperturb`` stays fast and optional parts stay optional.
_PROVIDERS: dict[str, str] = {
    "openai": "afperturb.models.openai:OpenAIChat",
    "openai-completions": "afperturb.models.openai:OpenAICompletions",
    "anthropic": "afperturb.models.anthropic:AnthropicMessages",
    "sim": "afperturb.models.simulated:from_name",
    "replay": "afperturb.models.replay:from_name",
}
_FACTORIES: dict[str, ModelFactory] = {}


def register(provider: str) -> Callable[[ModelFactory], ModelFactory]:
    """Register a factory for ``provider/...`` names (decorator)."""

    def decorate(factory: ModelFactory) -> ModelFactory:
        _FACTORIES[provider] = factory
        return factory

    return decorate


def providers() -> list[str]:
    """Every provider prefix :func:`get` understands."""
    return sorted(set(_PROVIDERS) | set(_FACTORIES))


def get(name: str, **kwargs: Any) -> Model:
    """Build a model from ``provider/model``, e.g. ``openai/gpt-4o`` or ``sim/opus-like``.

    Keyword arguments go to the backend (``base_url=``, ``api_key=``, ``headers=``,
    ``client=``). Keys default to the provider's usual environment variable. A keyword the
    backend does not take is a DesignError naming it and the valid ones.
    """
    provider, sep, model_name = name.partition("/")
    if not sep or not model_name:
        raise unknown_choice("model name format", name, ["provider/model"])
    factory = _FACTORIES.get(provider)
    if factory is None:
        target = _PROVIDERS.get(provider)
        if target is None:
            raise unknown_choice("provider", provider, providers())
        module_name, _, attr = target.partition(":")
        factory = getattr(importlib.import_module(module_name), attr)
    _check_options(provider, factory, kwargs)
    return factory(model_name, **kwargs)


def _check_options(provider: str, factory: ModelFactory, kwargs: Mapping[str, Any]) -> None:
    """Keywords ``factory`` does not take (``base_ur=``) are a DesignError, not a TypeError.

    The first parameter is the model name. A class whose ``__init__`` passes ``**options`` on
    to its base takes the keywords named along its MRO (a subclass adds its own, the base has
    the shared ones); a factory whose ``**kwargs`` go nowhere known checks its own.
    """
    valid: list[str] = []
    targets = [
        c.__dict__["__init__"] for c in getattr(factory, "__mro__", ()) if "__init__" in c.__dict__
    ] or [factory]
    for target in targets:
        try:
            params = list(inspect.signature(target).parameters.values())[1:]
        except (TypeError, ValueError):  # no signature to read: let the factory decide
            return
        if target is not factory and params and params[0].name == "model":
            params = params[1:]  # a method: self was first, then the model name
        valid += [
            p.name
            for p in params
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in valid
        ]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    else:
        return  # every signature along the way takes **kwargs: nothing to check against
    for key in kwargs:
        if key not in valid:
            raise unknown_choice(f"{provider} model option", key, valid, suggest=True)


__all__ = [
    "GenerationContext",
    "Model",
    "ModelFactory",
    "get",
    "is_retryable",
    "providers",
    "register",
]
