"""Batch bookkeeping (issue 8): which provider batches are open, and what each holds.

Kept beside the store's core tables (additive, versioned as ``batch_schema_version`` in
``meta``) so a new process resumes polling a submitted batch instead of resubmitting it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from afperturb.store._keys import canonical_json
from afperturb.store._rows import _Batch


class BatchBookkeeping:
    """The batch-table methods of :class:`~afperturb.store.Store`."""

    def _submit(self, batch: _Batch, wait: bool = True) -> Future[None]:
        raise NotImplementedError

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    def put_batch(
        self,
        batch_id: str,
        provider: str,
        model_config_hash: str,
        created: str,
        info: Mapping[str, Any],
        items: Sequence[tuple[str, str]],
    ) -> None:
        """Record a submitted batch and its ``(custom_id, cache_key)`` items; wait until durable.

        Written right after the provider accepts the batch, so a new process polls it instead
        of submitting the same requests again.
        """
        batch = _Batch()
        batch.other.append(
            (
                "INSERT OR REPLACE INTO batches VALUES (?, ?, ?, 'submitted', ?, ?, ?)",
                (batch_id, provider, model_config_hash, created, len(items), canonical_json(info)),
            )
        )
        sql = "INSERT OR REPLACE INTO batch_items VALUES (?, ?, ?, 'pending', NULL, NULL)"
        batch.other.extend((sql, (batch_id, cid, key)) for cid, key in items)
        self._submit(batch).result()

    def finish_batch(
        self, batch_id: str, state: str, failures: Iterable[tuple[str, str, bool]] = ()
    ) -> None:
        """Mark a batch collected (``state``) with its failed ``(custom_id, error, retryable)``.

        Items not named as failures are marked ``ok``. Call only once the batch's successful
        completions are durable in the cache, so a crash in between re-collects, never loses.
        """
        batch = _Batch()
        batch.other.append(
            (
                "UPDATE batch_items SET status='ok' WHERE batch_id=? AND status='pending'",
                (batch_id,),
            )
        )
        for cid, error, retryable in failures:
            batch.other.append(
                (
                    "UPDATE batch_items SET status='failed', error=?, retryable=? "
                    "WHERE batch_id=? AND custom_id=?",
                    (error, int(retryable), batch_id, cid),
                )
            )
        batch.other.append(("UPDATE batches SET state=? WHERE batch_id=?", (state, batch_id)))
        self._submit(batch).result()

    def open_batches(self, model_config_hash: str) -> list[tuple[str, str, dict[str, Any]]]:
        """Submitted, not yet collected batches of one model config: (id, provider, info)."""
        rows = self._query(
            "SELECT batch_id, provider, info FROM batches WHERE model_hash=? AND "
            "state='submitted' ORDER BY created, rowid",
            (model_config_hash,),
        )
        return [(bid, prov, json.loads(info)) for bid, prov, info in rows]

    def batch_items(self, batch_id: str) -> list[tuple[str, str]]:
        """``(custom_id, cache_key)`` of every item of one batch."""
        rows = self._query(
            "SELECT custom_id, cache_key FROM batch_items WHERE batch_id=?", (batch_id,)
        )
        return [(cid, key) for cid, key in rows]

    def batch_failures(self, model_config_hash: str) -> dict[str, tuple[int, str, bool]]:
        """Per cache key of one model config: (failed attempts, last error, last retryable)."""
        rows = self._query(
            "SELECT i.cache_key, i.error, i.retryable FROM batch_items i JOIN batches b "
            "ON b.batch_id = i.batch_id WHERE b.model_hash=? AND i.status='failed' "
            "ORDER BY b.created, b.rowid",
            (model_config_hash,),
        )
        out: dict[str, tuple[int, str, bool]] = {}
        for key, error, retryable in rows:
            count = out[key][0] if key in out else 0
            out[key] = (count + 1, str(error), bool(retryable))
        return out
