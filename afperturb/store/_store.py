"""The Store class: SQLite tables, the writer thread, reads."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import queue
import socket
import sqlite3
import threading
import time
import urllib.parse
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from afperturb.errors import StoreError
from afperturb.records import (
    Completion,
    Condition,
    Label,
    Message,
    Request,
    SamplingParams,
    Trial,
    trial_key,
)
from afperturb.store._batches import BatchBookkeeping
from afperturb.store._keys import _text_sha, canonical_json, manifest_variant
from afperturb.store._rows import (
    CachedCompletion,
    PendingCompletion,
    TrialRow,
    _Batch,
    _label_row,
    _params_row,
    _trial_row,
)

SCHEMA_VERSION = 2
#: Seconds a sweep's lease lasts without renewal (the engine renews every third of it).
LEASE_TTL_S = 60.0
#: ``meta`` key prefix of each classifier's latest labelling run (no schema change: old stores
#: simply have none, and an older afperturb ignores the rows).
_LABEL_RUN = "label_run:"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS texts (hash TEXT PRIMARY KEY, text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS completions (
    cache_key TEXT PRIMARY KEY, model_hash TEXT NOT NULL, messages TEXT NOT NULL,
    params TEXT NOT NULL, sample INTEGER NOT NULL, completion TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS completions_model ON completions (model_hash);
CREATE TABLE IF NOT EXISTS trials (
    key TEXT PRIMARY KEY, run_id TEXT NOT NULL, model TEXT NOT NULL,
    condition_id TEXT NOT NULL, request_id TEXT NOT NULL, sample INTEGER NOT NULL,
    status TEXT NOT NULL, error TEXT, input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL, latency_s REAL NOT NULL, cost_usd REAL NOT NULL,
    cached INTEGER NOT NULL, cache_key TEXT NOT NULL, turns TEXT NOT NULL,
    trial TEXT NOT NULL, variant TEXT NOT NULL DEFAULT '', transcript TEXT NOT NULL DEFAULT '',
    cache_read_tokens INTEGER NOT NULL DEFAULT 0, cache_write_tokens INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS trials_model ON trials (model);
CREATE TABLE IF NOT EXISTS labels (
    trial_key TEXT NOT NULL, classifier TEXT NOT NULL, config_hash TEXT NOT NULL,
    value TEXT NOT NULL, complied INTEGER, af_reasoning INTEGER, label TEXT NOT NULL,
    transcript TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (trial_key, classifier, config_hash));
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, model TEXT NOT NULL, created TEXT NOT NULL, manifest TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS run_requests (
    run_id TEXT NOT NULL, request_id TEXT NOT NULL, PRIMARY KEY (run_id, request_id));
CREATE TABLE IF NOT EXISTS leases (
    model TEXT NOT NULL, variant TEXT NOT NULL, shard TEXT NOT NULL, run_id TEXT NOT NULL,
    pid INTEGER NOT NULL, host TEXT NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (model, variant, shard));
CREATE TABLE IF NOT EXISTS conditions (id TEXT PRIMARY KEY, condition TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS requests (id TEXT PRIMARY KEY, request TEXT NOT NULL);
"""

# --- batch bookkeeping (issue 8, H8) -------------------------------------------------------
#: Version of the additive batch tables, kept in ``meta`` as ``batch_schema_version``: they are
#: created on open (IF NOT EXISTS) so older stores gain them without a core schema change.
BATCH_SCHEMA_VERSION = 1
_BATCH_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY, provider TEXT NOT NULL, model_hash TEXT NOT NULL,
    state TEXT NOT NULL, created TEXT NOT NULL, n_items INTEGER NOT NULL, info TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS batches_model ON batches (model_hash, state);
CREATE TABLE IF NOT EXISTS batch_items (
    batch_id TEXT NOT NULL, custom_id TEXT NOT NULL, cache_key TEXT NOT NULL,
    status TEXT NOT NULL, error TEXT, retryable INTEGER,
    PRIMARY KEY (batch_id, custom_id));
CREATE INDEX IF NOT EXISTS batch_items_key ON batch_items (cache_key);
"""
# --- end batch bookkeeping ------------------------------------------------------------------


class Store(BatchBookkeeping):
    """A sweep store in one SQLite file (WAL); see the module docstring for the tables.

    Open with :meth:`open`. Reads happen on the calling thread through a read connection;
    writes go through a background writer thread started on first use. Use as a context
    manager, or call :meth:`close` to flush and stop the writer.
    """

    def __init__(
        self,
        path: Path,
        *,
        batch_size: int = 512,
        busy_timeout_ms: int = 30_000,
        create: bool = True,
        readonly: bool | None = None,
    ):
        self.path = path
        self.batch_size = batch_size
        self._busy_timeout_ms = busy_timeout_ms
        self._lock = threading.Lock()
        if not create:
            _check_existing(path)
        self.readonly = bool(readonly) if readonly is not None else not create and _read_only(path)
        if self.readonly:
            self._read = _connect_read_only(path, busy_timeout_ms)
            self._check_version()
        else:
            self._read = self._connect()
            self._init_schema()
        #: Whether the trials table has the prompt-cache columns (a store written before them,
        #: opened read-only, has not; its trials read as 0 there).
        have = {r[1] for r in self._read.execute("PRAGMA table_info(trials)")}
        self._cache_columns = all(c in have for c in _CACHE_COLUMNS)
        self._queue: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._writer_error: BaseException | None = None
        self._known_texts: set[str] = set()

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, **kwargs: Any) -> Store:
        """Open (creating if needed) the store at ``path``; refuse an unknown schema version.

        ``create=False`` opens only an existing afperturb store: a missing file, a file that
        is not an afperturb store or a store missing one of its tables is a
        :class:`StoreError`, and nothing is created or altered in it (what commands that
        read a store use). ``readonly`` (default: for ``create=False``, when the file or its
        folder cannot be written) opens it read-only; writing to it is then an error.
        """
        return cls(Path(path), **kwargs)

    def _check_version(self) -> None:
        row = self._query("SELECT value FROM meta WHERE key='schema_version'")
        found = row[0][0] if row else None
        if found == "1":
            raise StoreError(
                f"store {str(self.path)!r} has schema_version '1' and is opened read-only; "
                "open it once where it can be written to migrate it (nothing is lost)"
            )
        if found != str(SCHEMA_VERSION):
            raise StoreError(
                f"store {str(self.path)!r} has schema_version {found!r}; this afperturb reads "
                f"schema_version {SCHEMA_VERSION!r} only (upgrade afperturb or use a new store)"
            )

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout_ms / 1000, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {str(self.path)!r}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
            _retry_locked(lambda: conn.execute("PRAGMA journal_mode=WAL"), self._busy_timeout_ms)
            # WAL + NORMAL survives a killed process (only an OS crash can lose the last commits).
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"{str(self.path)!r} is not an afperturb store: {exc}") from exc
        return conn

    def _init_schema(self) -> None:
        try:
            _retry_locked(self._create_tables, self._busy_timeout_ms)
            row = self._read.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is not None and row[0] == "1":
                _retry_locked(self._migrate_v1, self._busy_timeout_ms)
                row = (str(SCHEMA_VERSION),)
            self._read.execute(
                "CREATE INDEX IF NOT EXISTS trials_variant ON trials (model, variant)"
            )
            _retry_locked(self._add_columns, self._busy_timeout_ms)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{str(self.path)!r} is not an afperturb store: {exc}") from exc
        if row is None or row[0] != str(SCHEMA_VERSION):
            found = None if row is None else row[0]
            raise StoreError(
                f"store {str(self.path)!r} has schema_version {found!r}; this afperturb reads "
                f"schema_version {SCHEMA_VERSION!r} only (upgrade afperturb or use a new store)"
            )

    def _create_tables(self) -> None:
        """Create the tables in one write transaction.

        ``BEGIN IMMEDIATE`` takes the write lock up front (waiting on busy_timeout), so two
        processes opening a new store at once queue instead of one failing mid-script.
        """
        conn = self._read
        statements = [s for s in (_SCHEMA + _BATCH_SCHEMA).split(";") if s.strip()]
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements:
                conn.execute(statement)
            conn.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            conn.execute(
                "INSERT OR IGNORE INTO meta VALUES ('batch_schema_version', ?)",
                (str(BATCH_SCHEMA_VERSION),),
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _add_columns(self) -> None:
        """Add the columns newer than the store (additive, no version change).

        The prompt-cache token counts (issue 18) default to 0, which is what an older sweep
        saw: a store written before them keeps working, read-only too (:data:`_CACHE_COLUMNS`).
        """
        conn = self._read
        have = {r[1] for r in conn.execute("PRAGMA table_info(trials)")}
        missing = [c for c in _CACHE_COLUMNS if c not in have]
        if not missing:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            have = {r[1] for r in conn.execute("PRAGMA table_info(trials)")}
            for column in [c for c in _CACHE_COLUMNS if c not in have]:
                conn.execute(f"ALTER TABLE trials ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _migrate_v1(self) -> None:
        """Schema 1 → 2 in one transaction: trials gain their variant, labels their transcript.

        Schema 1 keyed a trial by (model, condition, request, sample) only, so a later sweep of
        another configuration replaced it, and the row's ``run_id`` is the run that wrote it
        last. Each trial therefore belongs to its run's configuration: its variant is computed
        from that run's manifest (:func:`manifest_variant`), appended to its key, and its
        labels' keys follow. Nothing is deleted; transcripts stay unknown ("") for old rows.
        """
        conn = self._read
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() != (
                "1",
            ):
                conn.execute("ROLLBACK")  # another process migrated it meanwhile
                return
            for table, column in (
                ("trials", "variant"),
                ("trials", "transcript"),
                ("labels", "transcript"),
            ):
                have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    conn.execute(
                        f"ALTER TABLE {table} ADD COLUMN {column} TEXT NOT NULL DEFAULT ''"
                    )
            runs = conn.execute("SELECT run_id, manifest FROM runs").fetchall()
            for run_id, manifest in runs:
                variant = manifest_variant(json.loads(manifest))
                conn.execute(
                    "UPDATE labels SET trial_key = trial_key || '|' || ? WHERE trial_key IN "
                    "(SELECT key FROM trials WHERE run_id = ? AND variant = '')",
                    (variant, run_id),
                )
                conn.execute(
                    "UPDATE trials SET variant = ?, key = key || '|' || ? "
                    "WHERE run_id = ? AND variant = ''",
                    (variant, variant, run_id),
                )
            conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Store {str(self.path)!r}>"

    def stop_writer(self) -> None:
        """Flush pending writes and stop the writer thread (reads keep working)."""
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            self._queue.put(None)
            writer.join()

    def close(self) -> None:
        """Flush pending writes, stop the writer thread and close connections."""
        self.stop_writer()
        self._read.close()

    # -- writing -------------------------------------------------------------------------------

    def _ensure_writer(self) -> None:
        if self.readonly:
            raise StoreError(f"store {str(self.path)!r} is open read-only")
        with self._lock:
            if self._writer_error is not None:
                raise StoreError(f"store writer failed: {self._writer_error}")
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_loop, name="afperturb-store-writer", daemon=True
                )
                self._writer.start()

    def _write_loop(self) -> None:
        conn = self._connect()
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batches = [first]
                rows = 0
                stop = False
                # Group commit: take everything queued meanwhile, up to batch_size rows.
                while rows < self.batch_size:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    batches.append(nxt)
                    rows += len(nxt.trials) + len(nxt.completions)
                self._commit(conn, batches)
                if stop:
                    return
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, batches: list[_Batch]) -> None:
        error: StoreError | None = None
        try:
            with conn:
                for table in _INSERTS:
                    rows = [row for b in batches for row in getattr(b, table)]
                    if rows and table == "trials":
                        _drop_stale_labels(conn, rows)
                    if rows:
                        _insert(conn, table, rows)
                for b in batches:
                    for sql, args in b.other:
                        conn.execute(sql, args)
        except BaseException as exc:  # every waiter must hear about it, whatever it was
            self._writer_error = exc
            error = StoreError(f"store write failed: {exc}")
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for b in batches:
            if b.done is None:
                pass
            elif error is None:
                b.done.set_result(None)
            else:
                b.done.set_exception(error)
            if b.waiter is not None:
                by_loop.setdefault(b.waiter.get_loop(), []).append(b.waiter)
        for loop, waiters in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(_settle, waiters, error)

    def _submit(self, batch: _Batch, wait: bool = True) -> Future[None]:
        self._ensure_writer()
        # A caller that does not wait gets a shared, resolved future (errors surface on the
        # next write); a fresh Future costs a lock and a condition variable per trial.
        done = _DONE
        if wait:
            done = batch.done = Future()
        self._queue.put(batch)
        return done

    def _message_refs(self, batch: _Batch, messages: Sequence[Message]) -> str:
        refs = []
        for m in messages:
            h = _text_sha(m.content)
            if h not in self._known_texts:
                batch.texts.append((h, m.content))
                if len(self._known_texts) < 200_000:
                    self._known_texts.add(h)
            refs.append(f'["{m.role}","{h}"]')
        # canonical_json of [[role, hash], ...]: roles and hex hashes need no escaping.
        return "[" + ",".join(refs) + "]"

    def _add_completion(self, batch: _Batch, pending: PendingCompletion) -> None:
        key, model_config_hash, messages, params, sample, completion = pending
        refs = self._message_refs(batch, messages)
        batch.completions.append(
            (
                key,
                model_config_hash,
                refs,
                _params_row(params),
                sample,
                completion.model_dump_json(),
            )
        )

    def put_completion(
        self,
        key: str,
        model_config_hash: str,
        messages: Sequence[Message],
        params: SamplingParams,
        sample: int,
        completion: Completion,
        *,
        wait: bool = True,
    ) -> Future[None]:
        """Queue one generation for the cache; the future resolves when it is durable.

        With ``wait=False`` the returned future is already resolved (cheaper): the sweep
        relies on the trial row written after it, which the single writer commits later.
        """
        batch = _Batch()
        pending = PendingCompletion(key, model_config_hash, messages, params, sample, completion)
        self._add_completion(batch, pending)
        return self._submit(batch, wait)

    def put_trial(self, row: TrialRow) -> Future[None]:
        """Queue a finished trial with its labels; the future resolves when durable."""
        batch = _Batch()
        batch.trials.append(_trial_row(row))
        batch.labels.extend(_label_row(lab) for lab in row.labels)
        return self._submit(batch)

    async def put_trial_async(
        self, row: TrialRow, completions: Sequence[PendingCompletion] = ()
    ) -> None:
        """Queue a finished trial with its labels and wait (on this loop) until durable.

        ``completions`` are generations to cache in the same commit (the sweep passes a
        trial's last turn here instead of a separate :meth:`put_completion`: one submission
        per trial).
        """
        batch = _Batch()
        for pending in completions:
            self._add_completion(batch, pending)
        batch.trials.append(_trial_row(row))
        batch.labels.extend([_label_row(lab) for lab in row.labels])
        batch.waiter = asyncio.get_running_loop().create_future()
        self._submit(batch, wait=False)
        await batch.waiter

    def put_labels(self, labels: Iterable[Label]) -> None:
        """Store labels (upserting by trial, classifier and config hash) and wait until durable.

        Each classifier's config among them is recorded as that classifier's latest labelling
        run (``meta`` key ``label_run:<classifier>``, see :meth:`label_runs`): the results
        table prefers it when two configs of one classifier labelled a trial.
        """
        batch = _Batch()
        latest: dict[str, str] = {}
        for lab in labels:
            batch.labels.append(_label_row(lab))
            latest[lab.classifier] = lab.config_hash
        created = datetime.now(UTC).isoformat()
        for classifier, config_hash in sorted(latest.items()):
            record = canonical_json({"config_hash": config_hash, "created": created})
            batch.other.append(
                ("INSERT OR REPLACE INTO meta VALUES (?, ?)", (_LABEL_RUN + classifier, record))
            )
        self._submit(batch).result()

    def put_run(
        self,
        run_id: str,
        model: str,
        created: str,
        manifest: Mapping[str, Any],
        conditions: Iterable[Condition],
        requests: Iterable[Request],
    ) -> None:
        """Record a run manifest with its conditions and requests, and wait until durable."""
        batch = _Batch()
        batch.other.append(
            (
                "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?)",
                (run_id, model, created, canonical_json(manifest)),
            )
        )
        for c in conditions:
            batch.other.append(
                ("INSERT OR REPLACE INTO conditions VALUES (?, ?)", (c.id, c.model_dump_json()))
            )
        for r in requests:
            batch.other.append(
                ("INSERT OR REPLACE INTO requests VALUES (?, ?)", (r.id, r.model_dump_json()))
            )
            batch.other.append(("INSERT OR IGNORE INTO run_requests VALUES (?, ?)", (run_id, r.id)))
        self._submit(batch).result()

    def flush(self) -> None:
        """Wait until everything queued so far is durable."""
        self._submit(_Batch()).result()

    # -- reading -------------------------------------------------------------------------------

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        try:
            with self._lock:
                return self._read.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read store {str(self.path)!r}: {exc}") from exc

    def has_model(self, model_config_hash: str) -> bool:
        """Whether any completion of this model config is cached (cheap: one index probe)."""
        rows = self._query(
            "SELECT 1 FROM completions WHERE model_hash=? LIMIT 1", (model_config_hash,)
        )
        return bool(rows)

    def get_completion(self, key: str) -> Completion | None:
        """The cached completion under ``key``, or None."""
        rows = self._query("SELECT completion FROM completions WHERE cache_key=?", (key,))
        return Completion.model_validate_json(rows[0][0]) if rows else None

    def completions_by_key(self) -> Iterator[tuple[str, Completion]]:
        """Every cached completion with its cache key."""
        for key, comp in self._query("SELECT cache_key, completion FROM completions"):
            yield key, Completion.model_validate_json(comp)

    def iter_completions(self) -> Iterator[CachedCompletion]:
        """Every cached generation with the messages, params and sample that produced it."""
        texts = dict(self._query("SELECT hash, text FROM texts"))
        for refs, params, sample, comp in self._query(
            "SELECT messages, params, sample, completion FROM completions ORDER BY rowid"
        ):
            messages = tuple(Message(role=role, content=texts[h]) for role, h in json.loads(refs))
            yield CachedCompletion(
                messages,
                SamplingParams.model_validate_json(params),
                int(sample),
                Completion.model_validate_json(comp),
            )

    def trials(
        self,
        model: str | None = None,
        run: str | None = None,
        status: str | None = None,
        variant: str | None = None,
    ) -> Iterator[Trial]:
        """Stored trials, optionally only one model's, status's or configuration's.

        ``run`` selects the trials a run wrote last (the ``run_id`` column); to load what a
        run *covers*, use ``SweepResult.load(store, run=...)``.
        """
        where, args = _where(model=model, run_id=run, status=status, variant=variant)
        rows = self._query(f"SELECT turns, trial, variant FROM trials{where} ORDER BY key", args)
        for turns, text, stored_variant in rows:
            trial = Trial.model_validate_json(text)
            update: dict[str, Any] = {}
            if trial.variant != stored_variant:  # written by schema 1, migrated since
                update["variant"] = stored_variant
            keys = json.loads(turns)
            if keys:
                update["completions"] = self._completions(keys)
            yield trial.model_copy(update=update) if update else trial

    def _completions(self, keys: list[str]) -> tuple[Completion, ...]:
        marks = ",".join("?" * len(keys))
        found = dict(
            self._query(
                f"SELECT cache_key, completion FROM completions WHERE cache_key IN ({marks})", keys
            )
        )
        try:
            return tuple(Completion.model_validate_json(found[k]) for k in keys)
        except KeyError as exc:
            raise StoreError(f"store {str(self.path)!r} lost completion {exc.args[0]!r}") from exc

    def labels(
        self, trial_key: str | None = None, classifier: str | None = None
    ) -> Iterator[Label]:
        """Stored labels, optionally for one trial or one classifier."""
        where, args = _where(trial_key=trial_key, classifier=classifier)
        rows = self._query(f"SELECT label, trial_key FROM labels{where} ORDER BY rowid", args)
        for text, key in rows:
            label = Label.model_validate_json(text)
            # A label written by schema 1 names its trial's old key (migrated since).
            yield label if label.trial_key == key else label.model_copy(update={"trial_key": key})

    def manifests(self, model: str | None = None) -> list[dict[str, Any]]:
        """Every run manifest (oldest first), each with its ``run_id``."""
        where, args = _where(model=model)
        rows = self._query(f"SELECT run_id, manifest FROM runs{where} ORDER BY created", args)
        return [{"run_id": run_id, **json.loads(m)} for run_id, m in rows]

    # -- leases: one writer per (model, configuration, shard) at a time ------------------------

    def acquire_lease(
        self,
        model: str,
        variant: str,
        run_id: str,
        shard: tuple[int, int] | None = None,
        ttl_s: float = LEASE_TTL_S,
    ) -> None:
        """Claim the right to generate ``model``'s trials of ``variant`` in this store.

        Two sweeps of one configuration into one store would both generate (and pay for)
        every trial neither has stored yet. The second is refused with a :class:`StoreError`
        naming the first, unless the two run disjoint shards of one split (``shard=(i, k)``
        with the same ``k``, as ``processes=N`` workers do). A lease lasts ``ttl_s`` unless
        renewed (:meth:`renew_lease`); one held by a process of this host that no longer
        exists is taken over at once, so a sweep resumed after ``kill -9`` is not refused.
        """
        mine = "" if shard is None else f"{shard[0]}/{shard[1]}"
        now = time.time()
        conn = self._read

        def claim() -> None:
            with self._lock:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for other, holder, pid, host, expires in conn.execute(
                        "SELECT shard, run_id, pid, host, expires FROM leases "
                        "WHERE model = ? AND variant = ?",
                        (model, variant),
                    ).fetchall():
                        if holder == run_id or expires < now or not _alive(pid, host):
                            continue
                        if _overlap(mine, other):
                            raise StoreError(
                                f"another sweep is writing {model!r} (configuration {variant}) "
                                f"into {str(self.path)!r}: run {holder}, pid {pid} on {host}"
                                f"{f', shard {other}' if other else ''}. Two sweeps of one "
                                "configuration would pay for the same trials twice: wait for "
                                "it, or split the work with shard=(i, k) / processes=N"
                            )
                    conn.execute(
                        "INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (model, variant, mine, run_id, os.getpid(), _HOST, now + ttl_s),
                    )
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")

        _retry_locked(claim, self._busy_timeout_ms)

    def renew_lease(self, run_id: str, ttl_s: float = LEASE_TTL_S) -> None:
        """Extend every lease of ``run_id`` by ``ttl_s`` from now."""
        self._locked_write(
            "UPDATE leases SET expires = ? WHERE run_id = ?", (time.time() + ttl_s, run_id)
        )

    def release_lease(self, run_id: str) -> None:
        """Drop every lease of ``run_id`` (its sweep has ended)."""
        self._locked_write("DELETE FROM leases WHERE run_id = ?", (run_id,))

    def _locked_write(self, sql: str, args: Sequence[Any]) -> None:
        def write() -> None:
            with self._lock, self._read:
                self._read.execute(sql, args)

        try:
            _retry_locked(write, self._busy_timeout_ms)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write store {str(self.path)!r}: {exc}") from exc

    def run_requests(self, run_id: str) -> list[str] | None:
        """The request ids a run covered (None for runs recorded before this table existed)."""
        rows = self._query("SELECT request_id FROM run_requests WHERE run_id=?", (run_id,))
        return [r[0] for r in rows] if rows else None

    def variants(self, model: str) -> list[str]:
        """The configurations (``Trial.variant``) of one model's stored trials."""
        rows = self._query("SELECT DISTINCT variant FROM trials WHERE model=?", (model,))
        return sorted(r[0] for r in rows)

    def conditions(self) -> dict[str, Condition]:
        """Every stored condition by id."""
        rows = self._query("SELECT condition FROM conditions")
        out = [Condition.model_validate_json(r[0]) for r in rows]
        return {c.id: c for c in out}

    def requests(self) -> dict[str, Request]:
        """Every stored request by id."""
        rows = self._query("SELECT request FROM requests")
        out = [Request.model_validate_json(r[0]) for r in rows]
        return {r.id: r for r in out}

    def trial_table(
        self, model: str | None = None, run: str | None = None, variant: str | None = None
    ) -> list[Any]:
        """Flat trial rows for the results table (no JSON parsing)."""
        chunks = self.trial_table_chunks(model, run, variant=variant)
        return [row for chunk in chunks for row in chunk]

    def trial_table_chunks(
        self,
        model: str | None = None,
        run: str | None = None,
        size: int = 50_000,
        *,
        variant: str | None = None,
    ) -> Iterator[list[Any]]:
        """:meth:`trial_table` in chunks of ``size`` rows, read from one snapshot.

        The results table of a million trials is built chunk by chunk from this, so the rows
        never sit in memory all at once as Python tuples (about 0.6 GiB at a million).
        """
        where, args = _where(model=model, run_id=run, variant=variant)
        sql = (
            "SELECT model, condition_id, request_id, sample, status, error, input_tokens, "
            "output_tokens, latency_s, cost_usd, cached, key, cache_read_tokens, "
            f"cache_write_tokens FROM trials{where}"
        )
        return self._chunks(sql if self._cache_columns else _without_cache_columns(sql), args, size)

    def label_table(self, model: str | None = None) -> list[Any]:
        """Flat label rows, oldest first.

        Each row: trial key, classifier, value, complied, af_reasoning, config hash, and the
        label's JSON when its value is ``error`` (else None).
        """
        return [row for chunk in self.label_table_chunks(model) for row in chunk]

    def label_table_chunks(
        self, model: str | None = None, size: int = 50_000
    ) -> Iterator[list[Any]]:
        """:meth:`label_table` in chunks of ``size`` rows, read from one snapshot.

        Only failed labels carry their JSON (the error and the column the judge sets): the
        results table reads no label JSON otherwise.
        """
        join = " JOIN trials t ON t.key = l.trial_key WHERE t.model=?" if model else ""
        return self._chunks(
            "SELECT l.trial_key, l.classifier, l.value, l.complied, l.af_reasoning, "
            "l.config_hash, CASE WHEN l.value = 'error' THEN l.label END "
            f"FROM labels l{join} ORDER BY l.rowid",
            (model,) if model else (),
            size,
        )

    # -- the results table's reads (columns) -----------------------------------------------------

    def frame_trial_columns(
        self,
        model: str,
        run: str | None = None,
        size: int = 50_000,
        *,
        variant: str | None = None,
    ) -> Iterator[dict[str, npt.NDArray[Any]]]:
        """One model's trials (one run's, if given) as columns, in ranges of ``size`` rowids.

        Each chunk maps ``condition``, ``request``, ``status``, ``key`` (object arrays of
        str), ``error`` (object: str or None), ``sample``, ``input_tokens``, ``output_tokens``,
        ``cache_read_tokens``, ``cache_write_tokens``
        (int64), ``latency_s``, ``cost_usd`` (float64) and ``cached`` (bool) to arrays in
        rowid order; every chunk comes from one snapshot. What ``trial_table`` holds, without
        a Python tuple and object per cell: SQLite concatenates a range's strings and
        integers (``group_concat``), Python splits them; a float column is read cell by
        cell unless the whole range is 0 (a text form of a REAL is not exact). A range whose
        values hold the separator, or that does not come in rowid order, is read row by row.
        """
        where, args = _where(model=model, run_id=run, variant=variant)
        with self._snapshot() as conn:
            top = conn.execute("SELECT max(rowid) FROM trials").fetchone()[0] or 0
            for start in range(0, top, size):
                scope = (" AND " if where else " WHERE ") + "rowid > ? AND rowid <= ?"
                bounds = [*args, start, start + size]
                chunk = _trial_range(conn, where + scope, bounds, self._cache_columns)
                if chunk is not None and len(chunk["key"]):
                    yield chunk

    def frame_label_codes(
        self, model: str, size: int = 50_000
    ) -> Iterator[tuple[list[tuple[str, str, str]], dict[str, npt.NDArray[Any]]]]:
        """The labels that may label ``model``'s trials, coded, in ranges of ``size`` rowids.

        Yields ``(kinds, columns)``: ``kinds`` the distinct (classifier, config hash, value)
        met so far (a list that only grows: a kind keeps its number); ``columns`` maps
        ``trial_key`` (object array), ``code`` (int64) and ``failure`` (object: the label's
        JSON where its value is ``error``, else None) to arrays in rowid order, with
        ``code = 9 * kind + 3 * c + a``, ``c`` / ``a`` 0 for a NULL ``complied`` /
        ``af_reasoning``, 1 for 0 and 2 for any other value. One snapshot.

        Which labels: those whose trial key starts with the model and ``|`` (every label of
        its trials, :func:`~afperturb.records.trial_key`), without the join with the trials
        (about four times as costly at 10⁶ trials); labels of trials that do not exist are
        included and left to the caller. The labels a sweep writes with each trial follow
        the trials' order.

        How: SQLite computes the code (a CASE over the kinds known so far: those at the
        table's ends first) and concatenates a range's keys and codes, so no Python tuple or
        object is made per cell; a label of a kind not known yet is looked up by its rowid
        and its kind learnt for the next range; beyond :data:`_MAX_KINDS` kinds, or where a
        key holds the separator, a range is read row by row.
        """
        where, args = _model_prefix(model)
        with self._snapshot() as conn:
            top = conn.execute("SELECT max(rowid) FROM labels").fetchone()[0] or 0
            kinds = _Kinds()
            for order in ("", " DESC"):  # the first and last labels: the usual kinds
                kinds.learn(
                    conn.execute(
                        "SELECT DISTINCT classifier, config_hash, value FROM (SELECT "
                        f"classifier, config_hash, value FROM labels ORDER BY rowid{order} "
                        "LIMIT ?)",
                        (_KIND_SAMPLE,),
                    )
                )
            for start in range(0, top, size):
                scope = (" AND " if where else " WHERE ") + "rowid > ? AND rowid <= ?"
                chunk = _label_range(conn, kinds, where + scope, [*args, start, start + size])
                if len(chunk["code"]):
                    yield kinds.kinds, chunk

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A connection of its own holding one read transaction (WAL: one snapshot)."""
        conn = self._connect()
        try:
            conn.execute("BEGIN")
            yield conn
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read store {str(self.path)!r}: {exc}") from exc
        finally:
            conn.close()

    def label_runs(self) -> dict[str, dict[str, str]]:
        """Per classifier, its latest labelling run through :meth:`put_labels`.

        ``{classifier: {"config_hash": ..., "created": ISO time}}``; stores written before
        this record existed have none (sweeps' inline classifiers are in the run manifests).
        """
        rows = self._query(
            "SELECT key, value FROM meta WHERE key LIKE ? ESCAPE '!'",
            (_LABEL_RUN.replace("_", "!_") + "%",),
        )
        return {key[len(_LABEL_RUN) :]: json.loads(value) for key, value in rows}

    def models(self) -> list[str]:
        """The models with trials in the store (an index scan; no rows are read)."""
        return [row[0] for row in self._query("SELECT DISTINCT model FROM trials ORDER BY model")]

    def _chunks(self, sql: str, args: Sequence[Any], size: int) -> Iterator[list[Any]]:
        """Rows of one SELECT in chunks, on a connection of its own.

        One statement reads one snapshot (WAL), so the chunks are consistent even while a
        sweep writes; the shared read connection and its lock are not held meanwhile.
        """
        conn = self._connect()
        try:
            cursor = conn.execute(sql, args)
            while rows := cursor.fetchmany(size):
                yield rows
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read store {str(self.path)!r}: {exc}") from exc
        finally:
            conn.close()

    # -- merging (issue 8, H8) ------------------------------------------------------------------

    def absorb(self, other: str | Path) -> None:
        """Copy another store's rows into this one, deduplicating by content and trial key.

        Completions and texts are content-addressed (first copy wins; equal keys mean equal
        generations). A trial already here stays unless it failed and ``other`` completed it.
        Batch bookkeeping is process-local and not copied. The caller checks manifests.
        """
        self.flush()
        conn = self._connect()
        try:
            conn.execute("ATTACH DATABASE ? AS src", (str(other),))
            with conn:
                for table in (
                    "texts",
                    "completions",
                    "runs",
                    "run_requests",
                    "conditions",
                    "requests",
                ):
                    conn.execute(f"INSERT OR IGNORE INTO main.{table} SELECT * FROM src.{table}")
                conn.execute(
                    "INSERT OR REPLACE INTO main.trials SELECT s.* FROM src.trials s WHERE NOT "
                    "EXISTS (SELECT 1 FROM main.trials t WHERE t.key = s.key AND "
                    "(t.status = 'completed' OR s.status = 'failed'))"
                )
                conn.execute("INSERT OR IGNORE INTO main.labels SELECT * FROM src.labels")
            conn.execute("DETACH DATABASE src")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot merge {str(other)!r} into {str(self.path)!r}: {exc}") from exc
        finally:
            conn.close()

    def count(self, table: str) -> int:
        """Rows in one of the store's tables."""
        if table not in _TABLES:
            raise StoreError(f"unknown table {table!r}")
        return int(self._query(f"SELECT COUNT(*) FROM {table}")[0][0])


#: Each table's insert: conflict rule and column count. Order matters only for readability.
_INSERTS: dict[str, tuple[str, int]] = {
    "texts": ("IGNORE", 2),
    "completions": ("IGNORE", 6),
    "trials": ("REPLACE", 20),
    "labels": ("REPLACE", 8),
}

#: Rows per multi-row INSERT at most. Why not ``executemany``: the sqlite3 module releases the
#: GIL around every ``sqlite3_step``, once per row, and the writer thread then has to win the
#: GIL back from the event loop's thread each time; one statement per chunk of rows needs a
#: handful of hand-offs per commit instead of one per row. Measured effect, A/B over three
#: runs each of ``benchmarks/trial_phases.py``: commit wall time 10.9 → 9.4 ms and the durable
#: wait 29 → 26 ms on average, within the run-to-run spread; no CPU cost.
_MAX_CHUNK = 64


def _insert(conn: sqlite3.Connection, table: str, rows: list[tuple[Any, ...]]) -> None:
    """Insert ``rows`` into ``table`` with a few multi-row statements (see ``_MAX_CHUNK``)."""
    _, columns = _INSERTS[table]
    limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    cap = max(1, min(_MAX_CHUNK, limit // columns))
    start = 0
    for size in _chunk_sizes(len(rows), cap):
        chunk = rows[start : start + size]
        conn.execute(_insert_sql(table, size), [v for row in chunk for v in row])
        start += size


def _drop_stale_labels(conn: sqlite3.Connection, trial_rows: list[tuple[Any, ...]]) -> None:
    """Delete the labels of trials about to be rewritten with another transcript.

    A label describes the reply it read (``Label.transcript``). When a trial is rewritten
    with a different reply (a retried failure, a re-run after ``cache prune`` on an API that
    does not repeat itself), its stored labels describe a transcript that no longer exists:
    they go in the same transaction, so no reader sees them beside the new reply and a judge
    run labels the trial again. The batch's own labels (of the new reply) are inserted after.
    Rows of schema-1 stores have no recorded transcript and are left alone.
    """
    for start in range(0, len(trial_rows), 400):
        chunk = trial_rows[start : start + 400]
        values = ", ".join(["(?, ?)"] * len(chunk))
        conn.execute(
            f"WITH new(key, transcript) AS (VALUES {values}) "
            "DELETE FROM labels WHERE trial_key IN (SELECT t.key FROM trials t JOIN new n "
            "ON t.key = n.key WHERE t.transcript != '' AND t.transcript != n.transcript)",
            [v for row in chunk for v in (row[0], row[-1])],
        )


def _chunk_sizes(n: int, cap: int) -> list[int]:
    """Split ``n`` rows into chunks of ``cap``, then powers of two: few distinct statements."""
    sizes = []
    while n:
        size = cap if n >= cap else 1 << (n.bit_length() - 1)
        sizes.append(size)
        n -= size
    return sizes


@functools.cache
def _insert_sql(table: str, rows: int) -> str:
    """``INSERT OR <rule> INTO table VALUES (?, ...), ...`` for ``rows`` rows."""
    rule, columns = _INSERTS[table]
    one = "(" + ", ".join("?" * columns) + ")"
    return f"INSERT OR {rule} INTO {table} VALUES " + ", ".join([one] * rows)


_DONE: Future[None] = Future()
_DONE.set_result(None)


def _settle(waiters: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for w in waiters:
        if w.done():
            continue
        if error is None:
            w.set_result(None)
        else:
            w.set_exception(error)


def _retry_locked(action: Callable[[], object], timeout_ms: int) -> None:
    """Run ``action``, retrying while SQLite says the database is locked.

    Switching a new file to WAL, or a write that finds the WAL changed under its read
    snapshot, can fail with "database is locked" at once, without waiting on busy_timeout;
    two processes opening one new store hit this. Retries for up to ``timeout_ms``.
    """
    deadline = time.monotonic() + timeout_ms / 1000
    delay = 0.005
    while True:
        try:
            action()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def _model_prefix(model: str) -> tuple[str, list[Any]]:
    """WHERE clause selecting the labels whose trial key starts with ``model`` and ``|``."""
    prefix = model + "|"
    if not trial_key(model, "c", "r", 0).startswith(prefix):  # pragma: no cover
        return "", []  # a key format without the prefix: read them all
    return " WHERE substr(trial_key, 1, ?) = ?", [len(prefix), prefix]


#: Separator of the strings SQLite concatenates (a range holding it is read row by row).
_SEP = "\x1f"
#: The trial columns in ``trial_table`` order, with their dtypes.
_TRIAL_FIELDS: tuple[tuple[str, Any], ...] = (
    ("condition", object),
    ("request", object),
    ("sample", np.int64),
    ("status", object),
    ("error", object),
    ("input_tokens", np.int64),
    ("output_tokens", np.int64),
    ("latency_s", np.float64),
    ("cost_usd", np.float64),
    ("cached", bool),
    ("key", object),
    ("cache_read_tokens", np.int64),
    ("cache_write_tokens", np.int64),
)
#: The trial columns added after schema 2 (:meth:`Store._add_columns`), 0 where absent.
_CACHE_COLUMNS = ("cache_read_tokens", "cache_write_tokens")
_TRIAL_ROWS = (
    "SELECT condition_id, request_id, sample, status, error, input_tokens, output_tokens, "
    "latency_s, cost_usd, cached, key, cache_read_tokens, cache_write_tokens FROM trials"
)
#: Where the grouped query puts each integer and string column.
_TRIAL_INTEGERS = (
    ("sample", 4),
    ("status", 5),  # 0 completed, 1 failed (another status: NULL, so the range goes row by row)
    ("input_tokens", 7),
    ("output_tokens", 8),
    ("cached", 11),
)
_TRIAL_STRINGS = (("condition", 2), ("request", 3), ("key", 12))
_STATUSES = np.array(["completed", "failed"], dtype=object)
_TRIAL_GROUPED = (
    "SELECT count(*), group_concat(rowid), group_concat(condition_id, char(31)), "
    "group_concat(request_id, char(31)), group_concat(sample), "
    "group_concat(CASE status WHEN 'completed' THEN 0 WHEN 'failed' THEN 1 END), "
    "group_concat(CASE WHEN error IS NOT NULL THEN rowid END), group_concat(input_tokens), "
    "group_concat(output_tokens), sum(latency_s <> 0), sum(cost_usd <> 0), "
    "group_concat(cached), group_concat(key, char(31)), sum(cache_read_tokens <> 0), "
    "sum(cache_write_tokens <> 0) FROM trials"
)


def _columns(rows: Sequence[Sequence[Any]], fields: Sequence[tuple[str, Any]]) -> Any:
    table = np.fromiter(rows, dtype=np.dtype(list(fields)), count=len(rows))
    return {name: np.ascontiguousarray(table[name]) for name, _ in fields}


def _strings(text: str | None, n: int) -> npt.NDArray[np.object_] | None:
    """The ``n`` strings SQLite joined with :data:`_SEP` (None: not ``n`` of them)."""
    if text is None:
        return None
    parts = text.split(_SEP)
    return np.fromiter(parts, dtype=object, count=n) if len(parts) == n else None


def _integers(text: str | None, n: int) -> npt.NDArray[np.int64] | None:
    """The ``n`` integers SQLite joined with commas (None: not ``n`` integers)."""
    if text is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a REAL among them: "could not be read to its end"
        values = np.fromstring(text, dtype=np.int64, sep=",")
    return values if len(values) == n else None


def _without_cache_columns(sql: str) -> str:
    """``sql`` for a trials table without the prompt-cache columns: they read as 0."""
    for column in _CACHE_COLUMNS:
        sql = sql.replace(column, "0")
    return sql


def _trial_range(
    conn: sqlite3.Connection, where: str, args: Sequence[Any], cache_columns: bool = True
) -> dict[str, npt.NDArray[Any]] | None:
    """One range of rowids of :meth:`Store.frame_trial_columns`."""
    grouped = _TRIAL_GROUPED if cache_columns else _without_cache_columns(_TRIAL_GROUPED)
    row = conn.execute(grouped + where, args).fetchone()
    n = int(row[0])
    if n == 0:
        return None
    rowids = _integers(row[1], n)
    ints = {name: _integers(row[i], n) for name, i in _TRIAL_INTEGERS}
    strings = {name: _strings(row[i], n) for name, i in _TRIAL_STRINGS}
    ordered = rowids is not None and bool((np.diff(rowids) > 0).all())
    if rowids is None or not ordered or any(v is None for v in (*ints.values(), *strings.values())):
        plain = _TRIAL_ROWS if cache_columns else _without_cache_columns(_TRIAL_ROWS)
        rows = conn.execute(plain + where + " ORDER BY rowid", args).fetchall()
        return _columns(rows, _TRIAL_FIELDS) if rows else None
    out: dict[str, npt.NDArray[Any]] = {k: v for k, v in strings.items() if v is not None}
    out.update({k: v for k, v in ints.items() if v is not None})
    out["cached"] = out["cached"] != 0
    out["status"] = _STATUSES[out["status"]]  # two shared string objects
    for name, nonzero in (("latency_s", row[9]), ("cost_usd", row[10])):
        if nonzero:
            sql = f"SELECT {name} FROM trials{where} ORDER BY rowid"
            out[name] = np.array([v for (v,) in conn.execute(sql, args)], dtype=np.float64)
        else:
            out[name] = np.zeros(n, dtype=np.float64)
    for name, nonzero in zip(_CACHE_COLUMNS, (row[13], row[14]), strict=True):
        if nonzero:  # only sweeps with prompt caching have any
            sql = f"SELECT {name} FROM trials{where} ORDER BY rowid"
            out[name] = np.fromiter((v for (v,) in conn.execute(sql, args)), np.int64, n)
        else:
            out[name] = np.zeros(n, dtype=np.int64)
    error = np.full(n, None, dtype=object)
    if row[6] is not None:  # the rowids of the trials with an error
        ids = [int(x) for x in str(row[6]).split(",")]
        found = _by_rowid(conn, "trials", "error", ids)
        error[np.searchsorted(rowids, ids)] = [found[i] for i in ids]
    out["error"] = error
    return out


def _by_rowid(
    conn: sqlite3.Connection, table: str, column: str, rowids: Sequence[int]
) -> dict[int, Any]:
    """``column`` of ``table``'s rows ``rowids``, by rowid."""
    found: dict[int, Any] = {}
    for at in range(0, len(rowids), 500):
        batch = list(rowids[at : at + 500])
        marks = ",".join("?" * len(batch))
        sql = f"SELECT rowid, {column} FROM {table} WHERE rowid IN ({marks})"
        found.update(conn.execute(sql, batch).fetchall())
    return found


#: Kinds of labels (classifier, config, value) coded in SQL at most (the CASE grows with them).
_MAX_KINDS = 256
#: Labels read at each end of the table for the kinds to code from the start.
_KIND_SAMPLE = 2000
#: ``complied`` and ``af_reasoning`` as 3 * c + a (0: NULL, 1: 0, 2: anything else).
_LABEL_FLAGS = "3 * (ifnull(complied <> 0, -1) + 1) + (ifnull(af_reasoning <> 0, -1) + 1)"
_LABEL_FIELDS: tuple[tuple[str, Any], ...] = (
    ("trial_key", object),
    ("code", np.int64),
    ("failure", object),
)
_LABEL_COLUMNS_QUERY = (
    f"SELECT trial_key, classifier, config_hash, value, {_LABEL_FLAGS}, "
    "CASE WHEN value = 'error' THEN label END FROM labels"
)


class _Kinds:
    """The (classifier, config hash, value) kinds of labels met so far, numbered."""

    def __init__(self) -> None:
        self.kinds: list[tuple[str, str, str]] = []
        self.number: dict[tuple[str, str, str], int] = {}

    def learn(self, rows: Iterable[Sequence[Any]]) -> None:
        for row in rows:
            kind = (str(row[0]), str(row[1]), str(row[2]))
            if kind not in self.number:
                self.number[kind] = len(self.kinds)
                self.kinds.append(kind)

    def failed(self) -> npt.NDArray[np.int64]:
        """The numbers of the kinds whose value is ``error``."""
        return np.array([i for i, k in enumerate(self.kinds) if k[2] == "error"], np.int64)

    def code(self) -> str:
        """SQL for ``9 * kind + flags``, or ``-(9 * rowid + flags) - 1`` for a new kind."""
        tree: dict[str, dict[str, list[tuple[str, int]]]] = {}
        for i, (classifier, config_hash, value) in enumerate(self.kinds):
            tree.setdefault(classifier, {}).setdefault(config_hash, []).append((value, i))
        parts = ["CASE classifier"]
        for classifier, configs in tree.items():
            parts.append(f"WHEN {_quote(classifier)} THEN CASE config_hash")
            for config_hash, values in configs.items():
                parts.append(f"WHEN {_quote(config_hash)} THEN CASE value")
                parts.extend(f"WHEN {_quote(value)} THEN {9 * i}" for value, i in values)
                parts.append("END")
            parts.append("END")
        parts.append("END")
        kind = " ".join(parts) if self.kinds else "NULL"
        return f"ifnull(({kind}) + {_LABEL_FLAGS}, -(9 * rowid + {_LABEL_FLAGS}) - 1)"


def _quote(text: str) -> str:
    """A SQL string literal (the CASE's values; no statement parameters: one string)."""
    return "'" + text.replace("'", "''") + "'"


def _label_range(
    conn: sqlite3.Connection, kinds: _Kinds, where: str, args: Sequence[Any]
) -> dict[str, npt.NDArray[Any]]:
    """One range of rowids of :meth:`Store.frame_label_codes`."""
    if len(kinds.kinds) > _MAX_KINDS:
        found = conn.execute(_LABEL_COLUMNS_QUERY + where + " ORDER BY rowid", args).fetchall()
        kinds.learn(r[1:4] for r in found)
        number = kinds.number
        rows = [(r[0], 9 * number[(str(r[1]), str(r[2]), str(r[3]))] + r[4], r[5]) for r in found]
        return _columns(rows, _LABEL_FIELDS)  # type: ignore[no-any-return]
    code = kinds.code()
    grouped = (
        f"SELECT count(*), group_concat(trial_key, char(31)), group_concat({code}), "
        f"group_concat(CASE WHEN value = 'error' THEN rowid END) FROM labels{where}"
    )
    n, keys_text, codes_text, failed_text = conn.execute(grouped, args).fetchone()
    if n == 0:
        return _columns([], _LABEL_FIELDS)  # type: ignore[no-any-return]
    keys, codes = _strings(keys_text, n), _integers(codes_text, n)
    if keys is None or codes is None:
        sql = (
            f"SELECT trial_key, {code}, CASE WHEN value = 'error' THEN label END "
            f"FROM labels{where} ORDER BY rowid"
        )
        columns: dict[str, npt.NDArray[Any]] = _columns(
            conn.execute(sql, args).fetchall(), _LABEL_FIELDS
        )
        codes = columns["code"]
        _code_new_kinds(conn, kinds, codes)
        return columns
    _code_new_kinds(conn, kinds, codes)
    failure = np.full(n, None, dtype=object)
    if failed_text is not None:
        ids = [int(x) for x in str(failed_text).split(",")]
        at = np.flatnonzero(np.isin(codes // 9, kinds.failed()))  # the same labels, in order
        if len(at) != len(ids):  # pragma: no cover - one scan gives both
            raise StoreError("labels changed while read")
        texts = _by_rowid(conn, "labels", "label", ids)
        failure[at] = [texts[i] for i in ids]
    return {"trial_key": keys, "code": codes, "failure": failure}


def _code_new_kinds(conn: sqlite3.Connection, kinds: _Kinds, codes: npt.NDArray[np.int64]) -> None:
    """Code, in place, the labels of kinds the query did not know (negative codes)."""
    new = np.flatnonzero(codes < 0)
    if not len(new):
        return
    rowid, flags = np.divmod(-codes[new] - 1, 9)
    ids = [int(r) for r in rowid]
    found: dict[int, tuple[Any, ...]] = {}
    for at in range(0, len(ids), 500):
        batch = ids[at : at + 500]
        marks = ",".join("?" * len(batch))
        sql = f"SELECT rowid, classifier, config_hash, value FROM labels WHERE rowid IN ({marks})"
        for r, *kind in conn.execute(sql, batch):
            found[r] = tuple(kind)
    kinds.learn(found[i] for i in ids)
    number = kinds.number
    kind = [number[(str(c), str(h), str(v))] for c, h, v in (found[i] for i in ids)]
    codes[new] = 9 * np.array(kind, dtype=np.int64) + flags


_HOST = socket.gethostname()


def _alive(pid: int, host: str) -> bool:
    """Whether a lease holder may still run (a process of another host: assume it does)."""
    if host != _HOST:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _overlap(mine: str, other: str) -> bool:
    """Whether two leases' shards ("" = everything, "i/k") can hold the same trial."""
    if not mine or not other:
        return True
    (i, k), (j, m) = mine.split("/"), other.split("/")
    return k != m or i == j


#: The tables every afperturb store has (batch tables are added on open; not required).
_REQUIRED_TABLES = (
    "meta",
    "texts",
    "completions",
    "trials",
    "labels",
    "runs",
    "conditions",
    "requests",
)


#: Every table :meth:`Store.count` can count.
_TABLES = frozenset({*_REQUIRED_TABLES, "run_requests", "leases", "batches", "batch_items"})


def _check_existing(path: Path) -> None:
    """Refuse, without writing a byte, a path that is not an existing afperturb store."""
    if not path.is_file():
        raise StoreError(f"no store at {str(path)!r}")
    try:
        conn = _connect_read_only(path, 5_000)
        try:
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            version = (
                conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if "meta" in tables
                else None
            )
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreError(f"{str(path)!r} is not an afperturb store: {exc}") from exc
    if version is None:
        raise StoreError(
            f"{str(path)!r} is not an afperturb store (it has no afperturb meta table"
            f"{'; tables: ' + ', '.join(sorted(tables)) if tables else ', it is empty'})"
        )
    missing = [t for t in _REQUIRED_TABLES if t not in tables]
    if missing:
        raise StoreError(
            f"store {str(path)!r} is missing table(s) {', '.join(missing)}: it is damaged "
            "(restore it from a copy; afperturb does not re-create them empty)"
        )


def _read_only(path: Path) -> bool:
    """Whether the store file or its folder (WAL and shm files live there) cannot be written."""
    return not (os.access(path, os.W_OK) and os.access(path.parent or Path("."), os.W_OK))


def _connect_read_only(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    """A read-only connection; ``immutable`` where the folder cannot hold WAL/shm files."""
    uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
    if not os.access(path.parent or Path("."), os.W_OK):
        # SQLite cannot open the WAL index here; "immutable" reads the main file alone, which
        # is the whole store only when the WAL holds nothing (a checkpointed, closed store).
        wal = Path(f"{path}-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise StoreError(
                f"store {str(path)!r} has writes still in {wal.name} and its folder cannot be "
                "written, so they cannot be read: copy the store with its -wal file to a "
                "writable folder, or open it once where its folder is writable"
            )
        uri += "&immutable=1"
    try:
        conn = sqlite3.connect(
            uri, uri=True, timeout=busy_timeout_ms / 1000, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open store {str(path)!r}: {exc}") from exc
    return conn


def _where(**filters: Any) -> tuple[str, list[Any]]:
    parts = [(f"{k}=?", v) for k, v in filters.items() if v is not None]
    if not parts:
        return "", []
    return " WHERE " + " AND ".join(p for p, _ in parts), [v for _, v in parts]
