"""The SQLite store: content-addressed completion cache, trials, labels and run manifests.

One file holds everything needed to re-analyse a sweep offline, without the templates:

- ``completions``: cache key → :class:`~afperturb.records.Completion`. The key is the sha256 of
  the canonical JSON of what changes the output (model config, messages, sampling params,
  sample index, sweep seed), never timeouts, concurrency or keys. Prompt texts are stored once
  each in ``texts`` (content-addressed), so a system prompt shared by 400 requests costs one row.
- ``trials``: trial key → :class:`~afperturb.records.Trial` plus the flat columns the results
  table reads (status, error, tokens, cost, latency, cached, the run that wrote it last, its
  ``variant`` and ``transcript`` hash). The key is (model, condition, request, sample,
  variant): the variant (:func:`run_variant`) names the configuration (model config, seed,
  sampling params, turns, templates), so sweeps of different configurations never replace
  each other's trials.
- ``labels``: (trial key, classifier, config hash) → :class:`~afperturb.records.Label`, with
  the hash of the transcript it read (a label of an older transcript is stale).
- ``runs``: one manifest per sweep call, ``run_requests`` the requests each run covered;
  ``conditions`` and ``requests``: the design and data.
- Schema 1 stores (before variants) are migrated on open: each trial gets its last run's
  variant.

Writes go through one writer thread that commits in groups (everything queued since the last
commit, up to ``batch_size`` rows), so the event loop never blocks on disk and a busy sweep
commits hundreds of trials per transaction. Each submission returns a future that resolves
once its rows are durable: the sweep keeps a trial's concurrency slot until then, so ``kill -9``
loses at most the in-flight trials. WAL mode, ``busy_timeout`` and ``INSERT OR IGNORE`` /
upserts let two processes share a store.
"""

from afperturb.store._batches import BatchBookkeeping
from afperturb.store._keys import (
    cache_key,
    canonical_json,
    manifest_variant,
    model_hash,
    run_variant,
    scrub,
)
from afperturb.store._rows import CachedCompletion, PendingCompletion, TrialRow
from afperturb.store._store import BATCH_SCHEMA_VERSION, SCHEMA_VERSION, Store

__all__ = [
    "BATCH_SCHEMA_VERSION",
    "SCHEMA_VERSION",
    "BatchBookkeeping",
    "CachedCompletion",
    "PendingCompletion",
    "Store",
    "TrialRow",
    "cache_key",
    "canonical_json",
    "manifest_variant",
    "model_hash",
    "run_variant",
    "scrub",
]
