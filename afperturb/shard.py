"""Splitting a sweep across processes and machines: plan, shard, merge.

A sweep's work is the deterministic list of (model, condition, request, sample) items.
:func:`plan` writes it out (one :class:`WorkItem` per trial, JSONL via :func:`write_plan`), each
with a **stable hash** of its trial key; ``sweep(..., shard=(i, k))`` runs only the items whose
hash % k == i, so k processes with the same arguments and different ``i`` split the work with no
coordination and no overlap. Each process writes its own store (or they share one: SQLite WAL);
:func:`merge` combines the stores, deduplicating completions by cache key and trials by trial
key, after checking that their run manifests agree on everything that changes results
(a :class:`~afperturb.errors.StoreError` names the first field that differs).

Example:
    >>> shard_of("sim/opus-like|c1|r001|0", 4)
    1
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from afperturb.errors import DesignError, StoreError
from afperturb.models.base import Model
from afperturb.records import Record, Request, SamplingParams, trial_key
from afperturb.store import Store, cache_key, model_hash

if TYPE_CHECKING:
    from afperturb.results import SweepResult

#: Manifest fields that may differ between the parts of one study (when and how it ran).
IGNORED_FIELDS = frozenset({"run_id", "created", "afperturb_version", "mode", "shard"})


def shard_of(key: str, k: int) -> int:
    """The shard (0 … k-1) of a trial key: the first 8 bytes of its sha256, modulo k.

    A stored trial's key ends in its configuration's variant (``…|sample|v<hash>``); the
    shard is that of the key without it, so a trial keeps its shard across seeds and params.
    """
    if key.count("|") >= 4:
        key = key.rsplit("|", 1)[0]
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % k


class WorkItem(Record):
    """One trial of a sweep: who, which condition, request and sample, and where it belongs."""

    model: str
    condition_id: str
    request_id: str
    sample: int
    seed: int
    #: The trial's grid key (``model|condition|request|sample``); the store's key adds the
    #: sweep configuration's variant (``afperturb.store.run_variant``).
    key: str
    #: 64-bit stable hash of ``key``; the item belongs to shard ``hash % k``.
    hash: int
    #: Cache key of the first turn (what the store's completion cache holds for it).
    cache_key: str

    def shard(self, k: int) -> int:
        """This item's shard among ``k``."""
        return self.hash % k


def plan(
    perturbation: Any,
    model: Model | str,
    requests: Iterable[Request],
    samples: int = 1,
    seed: int = 0,
    params: SamplingParams | None = None,
) -> list[WorkItem]:
    """The deterministic work list of ``sweep(perturbation, model, requests, samples, seed)``.

    Same arguments, same list, in the order the sweep runs it, on any machine. Rendering every
    prompt costs about as much as the sweep's own rendering (no request is sent).
    """
    if samples < 1:
        raise DesignError(f"samples must be >= 1; got {samples}")
    backend = _model(model)
    mh = model_hash(backend.config())
    sampling = params if params is not None else SamplingParams()
    reqs = list(requests)
    out: list[WorkItem] = []
    for condition in perturbation.conditions():
        for request in reqs:
            messages = perturbation.render(condition, request)
            for sample in range(samples):
                key = trial_key(backend.name, condition.id, request.id, sample)
                digest = hashlib.sha256(key.encode("utf-8")).digest()
                out.append(
                    WorkItem(
                        model=backend.name,
                        condition_id=condition.id,
                        request_id=request.id,
                        sample=sample,
                        seed=seed,
                        key=key,
                        hash=int.from_bytes(digest[:8], "big"),
                        cache_key=cache_key(mh, messages, sampling, sample, seed),
                    )
                )
    return out


def _model(model: Model | str) -> Model:
    if isinstance(model, str):
        from afperturb.models.base import get

        return get(model)
    return model


def write_plan(items: Iterable[WorkItem], path: str | Path) -> Path:
    """Write a work list as JSONL (one item per line); returns the path."""
    target = Path(path)
    with target.open("w", encoding="utf-8") as fh:
        for item in items:
            fh.write(item.model_dump_json() + "\n")
    return target


def read_plan(path: str | Path) -> list[WorkItem]:
    """Read a work list written by :func:`write_plan`."""
    with Path(path).open(encoding="utf-8") as fh:
        return [WorkItem.model_validate_json(line) for line in fh if line.strip()]


def split(items: Sequence[WorkItem], k: int) -> list[list[WorkItem]]:
    """The ``k`` shards of a work list (what ``sweep(..., shard=(i, k))`` runs for each i)."""
    if k < 1:
        raise DesignError(f"k must be >= 1; got {k}")
    parts: list[list[WorkItem]] = [[] for _ in range(k)]
    for item in items:
        parts[item.shard(k)].append(item)
    return parts


# -- merging -------------------------------------------------------------------------------------


def _latest_by_model(store: Store) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for m in store.manifests():  # oldest first: the last one per model wins
        latest[str(m.get("model"))] = m
    return latest


def check_manifests(stores: Sequence[Store]) -> None:
    """Raise a StoreError naming the first manifest field on which two stores disagree.

    For each model, every store's latest run manifest of that model is compared with the first
    store's, ignoring :data:`IGNORED_FIELDS` (timestamps, run ids, mode, shard).
    """
    reference: dict[str, tuple[Store, dict[str, Any]]] = {}
    for store in stores:
        for model, manifest in _latest_by_model(store).items():
            if model not in reference:
                reference[model] = (store, manifest)
                continue
            first, ref = reference[model]
            for name in sorted((set(ref) | set(manifest)) - IGNORED_FIELDS):
                if ref.get(name) != manifest.get(name):
                    raise StoreError(
                        f"cannot merge: manifests of model {model!r} disagree on {name!r}: "
                        f"{_short(ref.get(name))} in {str(first.path)!r} vs "
                        f"{_short(manifest.get(name))} in {str(store.path)!r}"
                    )


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def merge(stores: Iterable[Store | str | Path], out: str | Path) -> SweepResult:
    """Combine stores from several processes or machines into ``out``; returns its result.

    Manifests must agree (:func:`check_manifests`); completions are deduplicated by cache key,
    trials by trial key (a completed trial wins over a failed one), labels by (trial,
    classifier, config hash). ``out`` may already exist (merging into it is idempotent) but
    must not be one of the inputs.
    """
    from afperturb.results import SweepResult

    target = Path(out)
    sources: list[Store] = []
    opened: list[Store] = []
    try:
        for s in stores:
            if isinstance(s, Store):
                s.flush()
                sources.append(s)
            else:
                if not Path(s).exists():
                    raise StoreError(f"cannot merge: no store at {str(s)!r}")
                db = Store.open(s, create=False)
                opened.append(db)
                sources.append(db)
        if not sources:
            raise StoreError("cannot merge: no stores given")
        for src in sources:
            if src.path.resolve() == target.resolve():
                raise StoreError(f"cannot merge {str(target)!r} into itself; choose another out")
        merged = Store.open(target)
        check_manifests([*sources, merged] if merged.count("runs") else sources)
        for src in sources:
            merged.absorb(src.path)
    finally:
        for db in opened:
            db.close()
    return SweepResult.load(merged)


__all__ = [
    "IGNORED_FIELDS",
    "WorkItem",
    "check_manifests",
    "merge",
    "plan",
    "read_plan",
    "shard_of",
    "split",
    "write_plan",
]
