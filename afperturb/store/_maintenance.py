"""Cache maintenance on a store file: sizes per table, and pruning unreferenced completions.

Used by ``afperturb cache size|prune``; the SQL lives here, beside the schema it reads.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from afperturb.errors import StoreError

__all__ = ["cache_size", "prune_cache"]


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise StoreError(f"no store at {str(path)!r}")
    return path


def _connect(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(_existing(path), timeout=30)
        conn.execute("SELECT 1 FROM completions LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        raise StoreError(f"{str(path)!r} is not an afperturb store: {exc}") from exc
    return conn


def _file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def cache_size(path: Path) -> dict[str, int]:
    """Bytes on disk and rows / payload bytes per table of a store."""
    conn = _connect(path)
    try:
        q = conn.execute
        out = {"file_bytes": _file_bytes(path)}
        for table in ("completions", "texts", "trials", "labels"):
            out[f"{table}"] = int(q(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
        payload = "SELECT COALESCE(SUM(LENGTH(completion) + LENGTH(messages)), 0) FROM completions"
        out["completion_bytes"] = int(q(payload).fetchone()[0])
        out["text_bytes"] = int(q("SELECT COALESCE(SUM(LENGTH(text)), 0) FROM texts").fetchone()[0])
    finally:
        conn.close()
    return out


def _orphans(conn: sqlite3.Connection) -> tuple[list[str], set[str]]:
    """Completion keys no trial references (judge completions kept while judge labels exist)."""
    from afperturb.store import model_hash

    referenced: set[str] = set()
    for key, turns in conn.execute("SELECT cache_key, turns FROM trials"):
        referenced.add(key)
        referenced.update(json.loads(turns) if turns else [])
    sweep_models = {
        model_hash(json.loads(m).get("model_config", {}))
        for (m,) in conn.execute("SELECT manifest FROM runs")
    }
    judged = conn.execute(
        "SELECT 1 FROM labels WHERE classifier != 'tags' AND classifier NOT LIKE 'heuristic%' "
        "LIMIT 1"
    ).fetchone()
    orphans = []
    for key, mh in conn.execute("SELECT cache_key, model_hash FROM completions"):
        if key in referenced:
            continue
        if judged and mh not in sweep_models:
            continue  # a judge's completion: its labels may still need it
        orphans.append(key)
    return orphans, referenced


def prune_cache(path: Path, *, dry_run: bool = False) -> dict[str, int]:
    """Delete unreferenced completions and texts; returns counts and bytes before/after."""
    before = _file_bytes(path)
    conn = _connect(path)
    try:
        orphans, _ = _orphans(conn)
        used: set[str] = set()
        doomed = set(orphans)
        for key, refs in conn.execute("SELECT cache_key, messages FROM completions"):
            if key not in doomed:
                used.update(h for _role, h in json.loads(refs))
        texts = [h for (h,) in conn.execute("SELECT hash FROM texts") if h not in used]
        if not dry_run and (orphans or texts):
            with conn:
                conn.executemany(
                    "DELETE FROM completions WHERE cache_key=?", [(k,) for k in orphans]
                )
                conn.executemany("DELETE FROM texts WHERE hash=?", [(h,) for h in texts])
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("VACUUM")
            # In WAL mode VACUUM writes the rebuilt file into the WAL: fold it back so the
            # bytes reported (and left on disk) are the pruned size.
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return {
        "completions": len(orphans),
        "texts": len(texts),
        "bytes_before": before,
        "bytes_after": _file_bytes(path),
    }
