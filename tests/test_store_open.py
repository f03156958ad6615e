"""Issue 14: commands that read a store never create or alter tables in what they open.

Before, `attribute`, `report` or `classify` on a foreign SQLite file or an empty file added
ten afperturb tables to it (`classify` exited 0), a store missing its `trials` table got it
re-created empty, and a valid store in a read-only folder was "not an afperturb store".
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

import afperturb as af
from afperturb import cli
from afperturb.datasets import synthetic
from afperturb.errors import StoreError
from afperturb.results import SweepResult
from afperturb.store import Store


@pytest.fixture(autouse=True)
def _raise_from_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AFPERTURB_DEBUG", "1")  # the CLI re-raises: the test sees the error


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _foreign(tmp_path: Path) -> Path:
    path = tmp_path / "notes.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (t TEXT)")
        conn.execute("INSERT INTO notes VALUES ('mine')")
    return path


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


READERS = {
    "load": lambda p: SweepResult.load(p),
    "open": lambda p: Store.open(p, create=False),
    "attribute": lambda p: cli.main(["attribute", str(p)]),
    "report": lambda p: cli.main(["report", str(p), "--out", str(p.parent / "rep")]),
    "classify": lambda p: cli.main(["classify", str(p), "--judge", "tags"]),
}


@pytest.mark.parametrize("reader", list(READERS))
def test_a_foreign_or_empty_file_is_refused_and_left_as_it_was(tmp_path: Path, reader: str) -> None:
    foreign = _foreign(tmp_path)
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    for path, words in ((foreign, "tables: notes"), (empty, "it is empty")):
        before = _digest(path)
        with pytest.raises(StoreError, match=f"not an afperturb store.*{words}"):
            READERS[reader](path)
        assert _digest(path) == before  # was: ten afperturb tables added
    assert _tables(foreign) == {"notes"}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "runs.sqlite"
    af.Perturbation.preset("null_control").sweep(
        "sim/opus-like", synthetic(6), store=str(path), progress=False
    )
    return path


def test_a_store_missing_a_table_is_an_error_not_recreated(store: Path) -> None:
    with sqlite3.connect(store) as conn:
        conn.execute("DROP TABLE trials")
    for reader in ("load", "attribute", "classify"):
        with pytest.raises(StoreError, match=r"missing table.*trials"):
            READERS[reader](store)
    assert "trials" not in _tables(store)  # was: re-created empty


def test_a_read_only_store_opens_read_only_and_is_not_touched(store: Path) -> None:
    frame = SweepResult.load(store).to_frame()
    with sqlite3.connect(store) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = {p.name: _digest(p) for p in store.parent.iterdir() if p.is_file()}
    db = Store.open(store, create=False, readonly=True)
    try:
        pd.testing.assert_frame_equal(SweepResult.load(db).to_frame(), frame)
        with pytest.raises(StoreError, match="read-only"):
            db.put_labels([])
    finally:
        db.close()
    after = {p.name: _digest(p) for p in store.parent.iterdir() if p.is_file()}
    assert after == before


def test_a_folder_that_cannot_be_written_opens_the_store_read_only(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests run as root here, where chmod does not stop writes: the check is what is tested.
    import afperturb.store._store as impl

    real = impl.os.access
    monkeypatch.setattr(
        impl.os, "access", lambda p, mode: False if mode == impl.os.W_OK else real(p, mode)
    )
    writer = sqlite3.connect(store)  # held open: its write stays in the WAL
    writer.execute("INSERT INTO meta VALUES ('probe', 'x')")
    writer.commit()
    with pytest.raises(StoreError, match=r"writes still in runs\.sqlite-wal"):
        Store.open(store, create=False)  # never a silently shorter store
    writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    writer.close()
    db = Store.open(store, create=False)
    try:
        assert db.readonly and len(SweepResult.load(db)) == 12  # was "not an afperturb store"
    finally:
        db.close()
