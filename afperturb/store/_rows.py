"""Row types the store reads and writes, and their flat SQL tuples."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from afperturb.records import (
    Completion,
    Label,
    Message,
    SamplingParams,
    Trial,
)


class CachedCompletion(NamedTuple):
    """One stored generation: what was asked, and the answer (for the replay backend)."""

    messages: tuple[Message, ...]
    params: SamplingParams
    sample: int
    completion: Completion


class PendingCompletion(NamedTuple):
    """A generation to cache: its key, model config hash, prompt, params, sample, answer."""

    key: str
    model_hash: str
    messages: Sequence[Message]
    params: SamplingParams
    sample: int
    completion: Completion


@dataclass
class TrialRow:
    """A trial with the bookkeeping the store keeps beside it."""

    trial: Trial
    run_id: str = ""
    cached: bool = False
    labels: tuple[Label, ...] = ()
    #: Cache key of each completion, in order: the trial row then refers to the cached
    #: completions instead of repeating their text (about half the file).
    turn_keys: tuple[str, ...] = ()


@dataclass
class _Batch:
    """One writer submission; ``done`` resolves once its rows are committed."""

    texts: list[tuple[str, str]] = field(default_factory=list)
    completions: list[tuple[Any, ...]] = field(default_factory=list)
    trials: list[tuple[Any, ...]] = field(default_factory=list)
    labels: list[tuple[Any, ...]] = field(default_factory=list)
    other: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    #: Set by :meth:`Store._submit` for callers that wait from a thread (None: fire and forget).
    done: Future[None] | None = None
    #: An asyncio future to settle on its own loop (one wake-up per commit for all of them).
    waiter: asyncio.Future[None] | None = None


def _label_row(label: Label) -> tuple[Any, ...]:
    def tri(v: bool | None) -> int | None:
        return None if v is None else int(v)

    return (
        label.trial_key,
        label.classifier,
        label.config_hash,
        label.value,
        tri(label.complied),
        tri(label.af_reasoning),
        label.model_dump_json(),
        label.transcript,
    )


@functools.lru_cache(maxsize=256)
def _params_row(params: SamplingParams) -> str:
    """The params column (a sweep uses one or two params objects: encode each once)."""
    return params.model_dump_json()


_NO_COMPLETIONS = {"completions"}


def _key_list(keys: Sequence[str]) -> str:
    """Compact JSON of ``keys``; cache keys are hex digests, which need no escaping."""
    if all(k.isalnum() and k.isascii() for k in keys):
        return '["' + '","'.join(keys) + '"]'
    return json.dumps(list(keys), separators=(",", ":"))


def _trial_row(row: TrialRow) -> tuple[Any, ...]:
    t = row.trial
    latency = sum(c.latency_s for c in t.completions)
    by_ref = bool(row.turn_keys) and len(row.turn_keys) == len(t.completions)
    turns = _key_list(row.turn_keys) if by_ref else "[]"
    return (
        t.key,
        row.run_id,
        t.model,
        t.condition_id,
        t.request_id,
        t.sample,
        t.status,
        t.error,
        t.input_tokens,
        t.output_tokens,
        latency,
        t.cost_usd,
        int(row.cached),
        t.cache_key,
        turns,
        # By reference, the completions live in their own rows (the reader puts them back).
        t.model_dump_json(exclude=_NO_COMPLETIONS) if by_ref else t.model_dump_json(),
        t.variant,
        t.transcript,
        t.cache_read_tokens,
        t.cache_write_tokens,
    )
