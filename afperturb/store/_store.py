"""The Store class: SQLite tables, the writer thread, reads."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import operator
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
from afperturb.store._keys import _text_sha, canonical_json
from afperturb.store._rows import (
    CachedCompletion,
    PendingCompletion,
    TrialRow,
    _Batch,
    _label_row,
    _params_row,
    _trial_row,
)

SCHEMA_VERSION = 1
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
    trial TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS trials_model ON trials (model);
CREATE TABLE IF NOT EXISTS labels (
    trial_key TEXT NOT NULL, classifier TEXT NOT NULL, config_hash TEXT NOT NULL,
    value TEXT NOT NULL, complied INTEGER, af_reasoning INTEGER, label TEXT NOT NULL,
    PRIMARY KEY (trial_key, classifier, config_hash));
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, model TEXT NOT NULL, created TEXT NOT NULL, manifest TEXT NOT NULL);
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

    def __init__(self, path: Path, *, batch_size: int = 512, busy_timeout_ms: int = 30_000):
        self.path = path
        self.batch_size = batch_size
        self._busy_timeout_ms = busy_timeout_ms
        self._read = self._connect()
        self._init_schema()
        self._queue: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._writer_error: BaseException | None = None
        self._lock = threading.Lock()
        self._known_texts: set[str] = set()

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, **kwargs: Any) -> Store:
        """Open (creating if needed) the store at ``path``; refuse an unknown schema version."""
        return cls(Path(path), **kwargs)

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
    ) -> Iterator[Trial]:
        """Stored trials, optionally only one model's, one run's or one status's."""
        where, args = _where(model=model, run_id=run, status=status)
        rows = self._query(f"SELECT turns, trial FROM trials{where} ORDER BY key", args)
        for turns, text in rows:
            trial = Trial.model_validate_json(text)
            keys = json.loads(turns)
            if keys:
                trial = trial.model_copy(update={"completions": self._completions(keys)})
            yield trial

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
        for (text,) in self._query(f"SELECT label FROM labels{where} ORDER BY rowid", args):
            yield Label.model_validate_json(text)

    def manifests(self, model: str | None = None) -> list[dict[str, Any]]:
        """Every run manifest (oldest first), each with its ``run_id``."""
        where, args = _where(model=model)
        rows = self._query(f"SELECT run_id, manifest FROM runs{where} ORDER BY created", args)
        return [{"run_id": run_id, **json.loads(m)} for run_id, m in rows]

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

    def trial_table(self, model: str | None = None, run: str | None = None) -> list[Any]:
        """Flat trial rows for the results table (no JSON parsing)."""
        return [row for chunk in self.trial_table_chunks(model, run) for row in chunk]

    def trial_table_chunks(
        self, model: str | None = None, run: str | None = None, size: int = 50_000
    ) -> Iterator[list[Any]]:
        """:meth:`trial_table` in chunks of ``size`` rows, read from one snapshot.

        The results table of a million trials is built chunk by chunk from this, so the rows
        never sit in memory all at once as Python tuples (about 0.6 GiB at a million).
        """
        where, args = _where(model=model, run_id=run)
        return self._chunks(
            "SELECT model, condition_id, request_id, sample, status, error, input_tokens, "
            f"output_tokens, latency_s, cost_usd, cached, key FROM trials{where}",
            args,
            size,
        )

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

    def frame_trial_chunks(
        self, model: str, run: str | None = None, size: int = 50_000
    ) -> Iterator[list[Any]]:
        """One model's rows of :meth:`trial_table` without the model column, in chunks.

        Each row: condition id, request id, sample, status, error, input tokens, output
        tokens, latency, cost, cached, key. One snapshot, as :meth:`trial_table_chunks`; the
        results table reads this (a column fewer per row is ~8 % of the read).
        """
        where, args = _where(model=model, run_id=run)
        return self._chunks(
            "SELECT condition_id, request_id, sample, status, error, input_tokens, "
            f"output_tokens, latency_s, cost_usd, cached, key FROM trials{where}",
            args,
            size,
        )

    def frame_label_codes(
        self, model: str, size: int = 50_000
    ) -> Iterator[tuple[list[tuple[str, str, str]], list[tuple[Any, ...]]]]:
        """The labels that may label ``model``'s trials, coded, in chunks of one snapshot.

        Yields ``(kinds, rows)``: ``kinds`` the distinct (classifier, config hash, value) met
        so far (a list that only grows: a kind keeps its number); each row is (trial key,
        code, the label's JSON if its value is ``error`` else None), in the order the labels
        were written, ``code = 9 * kind + 3 * c + a`` with ``c`` / ``a`` 0 for a NULL
        ``complied`` / ``af_reasoning``, 1 for 0 and 2 for any other value.

        Which labels: those whose trial key starts with the model and ``|`` (every label of
        its trials, :func:`~afperturb.records.trial_key`), read without the join with the
        trials (about four times as costly at 10⁶ trials); labels of trials that do not
        exist are included and left to the caller. The labels a sweep writes with each trial
        follow the trials' order.

        Why coded: SQLite computes the code (a CASE over the kinds known so far) without
        allocating anything, where five more columns cost a Python object each per label
        (at 2·10⁶ labels about a second of reading and hashing strings). The table is read
        in ranges of ``size`` rowids; a label of a kind not known yet is looked up by its
        rowid and the kind learnt for the next range; beyond :data:`_MAX_KINDS` kinds the
        rest is read as columns and coded here.
        """
        where, args = _model_prefix(model)
        conn = self._connect()
        try:
            conn.execute("BEGIN")  # one snapshot (WAL) for every statement below
            top = conn.execute("SELECT max(rowid) FROM labels").fetchone()[0] or 0
            kinds: list[tuple[str, str, str]] = []
            known: dict[tuple[str, str, str], int] = {}

            def learn(rows: Iterable[Sequence[Any]]) -> None:
                for kind in rows:
                    key = (str(kind[0]), str(kind[1]), str(kind[2]))
                    if key not in known:
                        known[key] = len(kinds)
                        kinds.append(key)

            for order in ("", " DESC"):  # the first and last labels: the usual kinds
                learn(
                    conn.execute(
                        "SELECT DISTINCT classifier, config_hash, value FROM (SELECT "
                        f"classifier, config_hash, value FROM labels ORDER BY rowid{order} "
                        "LIMIT ?)",
                        (_KIND_SAMPLE,),
                    )
                )
            start = 0
            while start < top:
                end = start + size
                scope = (" AND " if where else " WHERE ") + "rowid > ? AND rowid <= ?"
                if len(kinds) <= _MAX_KINDS:
                    sql, params = _label_code_query(kinds, where + scope)
                    rows = conn.execute(sql, [*params, *args, start, end]).fetchall()
                    rows = _code_unknown(conn, rows, learn, known)
                else:
                    sql = _LABEL_COLUMNS_QUERY + where + scope + " ORDER BY rowid"
                    found = conn.execute(sql, [*args, start, end]).fetchall()
                    learn(r[1:4] for r in found)
                    rows = [
                        (r[0], 9 * known[(str(r[1]), str(r[2]), str(r[3]))] + r[4], r[5])
                        for r in found
                    ]
                if rows:
                    yield kinds, rows
                start = end
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
                for table in ("texts", "completions", "runs", "conditions", "requests"):
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
        if table not in {
            "completions",
            "trials",
            "labels",
            "runs",
            "conditions",
            "requests",
            "batches",
            "batch_items",
        }:
            raise StoreError(f"unknown table {table!r}")
        return int(self._query(f"SELECT COUNT(*) FROM {table}")[0][0])


#: Each table's insert: conflict rule and column count. Order matters only for readability.
_INSERTS: dict[str, tuple[str, int]] = {
    "texts": ("IGNORE", 2),
    "completions": ("IGNORE", 6),
    "trials": ("REPLACE", 16),
    "labels": ("REPLACE", 7),
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


#: Kinds of labels (classifier, config, value) coded in SQL at most (the CASE grows with them).
_MAX_KINDS = 256
#: Labels read at each end of the table for the kinds to code from the start.
_KIND_SAMPLE = 2000
_SECOND = operator.itemgetter(1)
#: ``complied`` and ``af_reasoning`` as 3 * c + a (0: NULL, 1: 0, 2: anything else).
_LABEL_FLAGS = "3 * (ifnull(complied <> 0, -1) + 1) + (ifnull(af_reasoning <> 0, -1) + 1)"
_LABEL_FAILURE = "CASE WHEN value = 'error' THEN label END"
_LABEL_COLUMNS_QUERY = (
    f"SELECT trial_key, classifier, config_hash, value, {_LABEL_FLAGS}, {_LABEL_FAILURE} "
    "FROM labels"
)


def _label_code_query(kinds: Sequence[tuple[str, str, str]], where: str) -> tuple[str, list[Any]]:
    """The query of :meth:`Store.frame_label_codes` over ``kinds``.

    The code is ``9 * kind + flags``, or ``-(9 * rowid + flags) - 1`` for a label of another
    kind (:func:`_code_unknown` looks those up).
    """
    tree: dict[str, dict[str, list[tuple[str, int]]]] = {}
    for i, (classifier, config_hash, value) in enumerate(kinds):
        tree.setdefault(classifier, {}).setdefault(config_hash, []).append((value, i))
    parts, params = ["CASE classifier"], []
    for classifier, configs in tree.items():
        parts.append("WHEN ? THEN CASE config_hash")
        params.append(classifier)
        for config_hash, values in configs.items():
            parts.append("WHEN ? THEN CASE value")
            params.append(config_hash)
            for value, i in values:
                parts.append(f"WHEN ? THEN {9 * i}")
                params.append(value)
            parts.append("END")
        parts.append("END")
    parts.append("END")
    kind = " ".join(parts) if kinds else "NULL"
    sql = (
        f"SELECT trial_key, ifnull(({kind}) + {_LABEL_FLAGS}, -(9 * rowid + {_LABEL_FLAGS}) - 1), "
        f"{_LABEL_FAILURE} FROM labels{where} ORDER BY rowid"
    )
    return sql, params


def _code_unknown(
    conn: sqlite3.Connection,
    rows: list[Any],
    learn: Callable[[Iterable[Sequence[Any]]], None],
    known: Mapping[tuple[str, str, str], int],
) -> list[Any]:
    """``rows`` with the labels of kinds not in the query (negative codes) coded."""
    if not rows or min(rows, key=_SECOND)[1] >= 0:  # min() with itemgetter: C speed
        return rows
    unknown = [i for i, row in enumerate(rows) if row[1] < 0]
    decoded = {}
    for i in unknown:
        rowid, flags = divmod(-rows[i][1] - 1, 9)
        decoded[rowid] = (i, flags)
    ids = list(decoded)
    found: dict[int, tuple[Any, ...]] = {}
    for at in range(0, len(ids), 500):
        batch = ids[at : at + 500]
        marks = ",".join("?" * len(batch))
        sql = f"SELECT rowid, classifier, config_hash, value FROM labels WHERE rowid IN ({marks})"
        for rowid, *kind in conn.execute(sql, batch):
            found[rowid] = tuple(kind)
    learn(found.values())
    rows = list(rows)
    for rowid, (i, flags) in decoded.items():
        c, h, v = found[rowid]
        rows[i] = (rows[i][0], 9 * known[(str(c), str(h), str(v))] + flags, rows[i][2])
    return rows


def _where(**filters: Any) -> tuple[str, list[Any]]:
    parts = [(f"{k}=?", v) for k, v in filters.items() if v is not None]
    if not parts:
        return "", []
    return " WHERE " + " AND ".join(p for p, _ in parts), [v for _, v in parts]
