"""Issue 14: the workers of a ``processes=2`` sweep never outlive it.

Each test starts a real two-process sweep in a subprocess (its own session, so no signal meant
for it reaches pytest) against a simulated model that sleeps per generation, waits until both
workers have started and some trials are committed, then ends or interrupts the parent and
polls (bounded) until every worker pid is gone. The store must then open, pass SQLite's
integrity check and still hold every trial committed before the signal, all of them whole.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from afperturb.store import Store

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="forked workers need POSIX")

#: The budget of the issue: every worker gone this many seconds after the parent's end.
EXIT_BUDGET_S = 5.0

_SCRIPT = """
import asyncio, os, sys
from pathlib import Path

from afperturb.datasets import synthetic
from afperturb.design import Perturbation
from afperturb.models.simulated import Simulated
from afperturb.sweep import sweep

PIDS = Path(sys.argv[2])


class Slow(Simulated):
    async def generate(self, messages, params, context=None):
        (PIDS / str(os.getpid())).touch()  # which processes generate: the workers
        await asyncio.sleep(0.2)
        return await super().generate(messages, params, context)


sweep(Perturbation.preset("rater_sycophancy"), Slow(name="sim/slow"), synthetic(100, seed=3),
      store=sys.argv[1], processes=2, concurrency=4, progress=False)
"""


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie has exited: nobody may reap orphans here)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return sys.platform != "linux"  # no procfs (macOS): os.kill is the answer
    return state not in ("Z", "X")


def _committed(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM trials").fetchone()[0])
    except sqlite3.Error:  # not created yet
        return 0


class Sweep:
    """A running two-process sweep in a subprocess, and the pids of its workers."""

    def __init__(self, tmp_path: Path):
        self.db = tmp_path / "s.sqlite"
        self.pids_dir = tmp_path / "pids"
        self.pids_dir.mkdir()
        script = tmp_path / "run.py"
        script.write_text(_SCRIPT, encoding="utf-8")
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": root}
        self.stderr = tmp_path / "stderr.txt"
        with self.stderr.open("wb") as err:  # a file: a pipe would wait for the workers too
            self.parent = subprocess.Popen(
                [sys.executable, str(script), str(self.db), str(self.pids_dir)],
                env=env,
                start_new_session=True,
                stderr=err,
            )

    def workers(self) -> list[int]:
        return sorted(int(p.name) for p in self.pids_dir.iterdir())

    def wait_until_running(self, trials: int = 6, timeout: float = 60.0) -> int:
        """Block until both workers generate and ``trials`` are committed; the count."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.parent.poll() is None, self.stderr.read_text()
            done = _committed(self.db)
            if len(self.workers()) == 2 and done >= trials:
                return done
            time.sleep(0.05)
        raise AssertionError(f"the sweep did not start within {timeout} s")

    def seconds_until_workers_gone(self, pids: list[int], start: float) -> float:
        """Poll until no worker runs; the seconds since ``start``, or fail after the budget."""
        while time.monotonic() - start < EXIT_BUDGET_S:
            if not any(_alive(pid) for pid in pids):
                return time.monotonic() - start
            time.sleep(0.02)
        left = [pid for pid in pids if _alive(pid)]
        raise AssertionError(f"workers {left} still running {EXIT_BUDGET_S} s after the parent")

    def cleanup(self) -> None:
        for pid in [*self.workers(), self.parent.pid]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.parent.wait(10)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Sweep]:
    run = Sweep(tmp_path)
    try:
        yield run
    finally:
        run.cleanup()


def _check_store(db: Path, before: int) -> int:
    """The store opens, is intact and holds at least the trials committed before; the count."""
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with Store.open(db) as store:
        trials = list(store.trials(model="sim/slow"))
        assert len(trials) >= before
        assert all(t.status == "completed" and t.completions for t in trials)
        assert store.count("trials") == len(trials)
    return len(trials)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "SIGTERM"])
def test_workers_end_with_their_parent(running: Sweep, sig: signal.Signals) -> None:
    before = running.wait_until_running()
    pids = running.workers()
    start = time.monotonic()
    os.kill(running.parent.pid, sig)
    assert running.parent.wait(EXIT_BUDGET_S) == -sig
    took = running.seconds_until_workers_gone(pids, start)
    after = _check_store(running.db, before)
    print(f"{sig.name}: workers gone {took:.2f} s after the signal; {before} -> {after} trials")


def test_interrupted_parent_stops_its_workers_and_exits(running: Sweep) -> None:
    """SIGINT to the parent alone (Ctrl-C in a shell reaches the workers too; they ignore it)."""
    before = running.wait_until_running()
    pids = running.workers()
    start = time.monotonic()
    os.kill(running.parent.pid, signal.SIGINT)
    took = running.seconds_until_workers_gone(pids, start)
    assert took < 2.5  # stopped, not killed (the parent kills what is left after 4 s)
    code = running.parent.wait(EXIT_BUDGET_S)
    assert code != 0 and "KeyboardInterrupt" in running.stderr.read_text()
    after = _check_store(running.db, before)
    print(
        f"SIGINT: workers gone {took:.2f} s, parent {time.monotonic() - start:.2f} s; "
        f"{before} -> {after} trials"
    )


def test_ctrl_c_to_the_process_group_stops_everything(running: Sweep) -> None:
    """What a terminal's Ctrl-C does: SIGINT to the parent and its workers at once."""
    before = running.wait_until_running()
    pids = running.workers()
    start = time.monotonic()
    os.killpg(running.parent.pid, signal.SIGINT)
    running.seconds_until_workers_gone(pids, start)
    assert running.parent.wait(EXIT_BUDGET_S) != 0
    _check_store(running.db, before)
