"""Replay: serve completions from a stored run, for re-analysis and for tests.

A replayed model answers a prompt only if exactly that prompt was answered before: the match is
on (messages, sampling params, sample index), hashed by :func:`replay_key`. Continuation turns
match too, because their messages carry the earlier turns. A prompt that was never stored raises
a non-retryable :class:`~afperturb.errors.BackendResponseError` (sending it again cannot help).

Sources:

* a mapping ``replay_key(...) → Completion``;
* an iterable of ``(messages, params, sample, Completion)`` tuples, or of objects with those
  attributes (``.messages``, ``.params``, ``.sample``, ``.completion``);
* a path to a store, read lazily on first use through
  ``afperturb.store.Store.open(path).iter_completions()``, which must yield either of the above.

``model=`` keeps only completions whose ``Completion.model`` matches, for stores that hold
several models. When one prompt was stored several times, the first answer wins, unless the
items carry a ``seed`` attribute: then the answer stored under ``GenerationContext.seed`` wins.

Example:
    >>> import asyncio
    >>> from afperturb.records import Completion, Message, SamplingParams
    >>> msgs, params = [Message(role="user", content="hi")], SamplingParams()
    >>> r = Replay([(msgs, params, 0, Completion(text="hello"))])
    >>> asyncio.run(r.generate(msgs, params)).text
    'hello'
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from afperturb.errors import BackendResponseError
from afperturb.models.base import GenerationContext
from afperturb.records import Completion, Message, SamplingParams

ReplayItem = tuple[Sequence[Message], SamplingParams, int, Completion]


def replay_key(messages: Sequence[Message], params: SamplingParams, sample: int) -> str:
    """The sha256 of the canonical JSON of (messages, params, sample)."""
    payload = {
        "messages": [[m.role, m.content] for m in messages],
        "params": params.model_dump(mode="json"),
        "sample": sample,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _store_items(path: str) -> list[Any]:
    """The one place that knows the store's API (kept small so it is easy to change)."""
    from afperturb.store import Store

    store: Any = Store.open(path, create=False)
    try:
        return list(store.iter_completions())
    finally:
        store.close()


def _unpack(item: Any) -> ReplayItem:
    if isinstance(item, tuple) and len(item) == 4:
        messages, params, sample, completion = item
    else:
        try:
            messages, params, sample, completion = (
                item.messages,
                item.params,
                item.sample,
                item.completion,
            )
        except AttributeError as exc:
            raise TypeError(
                "replay items must be (messages, params, sample, Completion) tuples or objects "
                f"with those attributes; got {type(item).__name__}"
            ) from exc
    return list(messages), params, int(sample), completion


class Replay:
    """A model that answers from stored completions; see the module docstring."""

    def __init__(
        self,
        source: Mapping[str, Completion] | Iterable[Any] | str | os.PathLike[str],
        *,
        model: str | None = None,
        name: str | None = None,
    ) -> None:
        self._path: str | None = None
        self._table: dict[str, Completion] | None = None
        self._source: Any = source
        if isinstance(source, str | os.PathLike):
            self._path = os.fspath(source)
        self._model = model
        self.name = name if name is not None else f"replay/{self._path or 'memory'}"

    def __repr__(self) -> str:
        size = "unloaded" if self._table is None else f"{len(self._table)} completions"
        return f"<Replay {self.name} ({size})>"

    def __len__(self) -> int:
        return len(self._load())

    def config(self) -> dict[str, Any]:
        """Provider, source and model filter."""
        return {"provider": "replay", "source": self._path or "memory", "model": self._model}

    async def aclose(self) -> None:
        """Nothing to release."""

    def _load(self) -> dict[str, Completion]:
        if self._table is None:
            self._table = self._build()
            self._source = None
        return self._table

    def _build(self) -> dict[str, Completion]:
        source = self._source
        if isinstance(source, Mapping):
            items = dict(source)
            if self._model is not None:
                items = {k: c for k, c in items.items() if c.model == self._model}
            return items
        raw: Iterable[Any] = _store_items(self._path) if self._path is not None else source
        table: dict[str, Completion] = {}
        for item in raw:
            messages, params, sample, completion = _unpack(item)
            if self._model is not None and completion.model != self._model:
                continue
            key = replay_key(messages, params, sample)
            table.setdefault(key, completion)
            seed = getattr(item, "seed", None)
            if seed is not None:
                # Stores that record the sweep seed let runs at several seeds replay apart.
                table.setdefault(f"{key}:{seed}", completion)
        return table

    async def generate(
        self,
        messages: Sequence[Message],
        params: SamplingParams,
        context: GenerationContext | None = None,
    ) -> Completion:
        """The stored completion for exactly this prompt, or a non-retryable error."""
        sample = context.sample if context is not None else 0
        key = replay_key(messages, params, sample)
        table = self._load()
        found = table.get(f"{key}:{context.seed}") if context is not None else None
        if found is None:
            found = table.get(key)
        if found is None:
            cond = context.condition.id if context and context.condition else None
            req = context.request.id if context and context.request else None
            raise BackendResponseError(
                f"{self.name}: no stored completion for this prompt (key {key[:12]}, "
                f"sample {sample}, condition {cond}, request {req}); replay only serves "
                "prompts that were generated before",
                condition_id=cond,
                request_id=req,
                retryable=False,
            )
        return found


def from_name(model_name: str, *, model: str | None = None, name: str | None = None) -> Replay:
    """Registry factory: ``replay/<path-to-store.sqlite>`` (``model``, ``name`` as in Replay)."""
    return Replay(model_name, model=model, name=name)


__all__ = ["Replay", "ReplayItem", "from_name", "replay_key"]
