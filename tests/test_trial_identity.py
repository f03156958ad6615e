"""Issue 14: a second sweep never replaces the first; labels follow the transcript they read.

A trial's key is (model, condition, request, sample, variant), the variant naming the
configuration (model config, seed, sampling params, turns, templates). Before, the key left the
variant out and trials were written with INSERT OR REPLACE: seed 1 into the store of seed 0
left 60 trials of 120 and ``load(run=<seed 0>)`` returned nothing.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest

import afperturb as af
from afperturb.cli._analyse import prune_cache
from afperturb.datasets import synthetic
from afperturb.design import Perturbation
from afperturb.errors import AfperturbWarning, StoreError
from afperturb.models.simulated import Simulated
from afperturb.records import Completion, Label, SamplingParams
from afperturb.results import SweepResult
from afperturb.store import Store, TrialRow, manifest_variant, run_variant
from afperturb.sweep import sweep

DESIGN = Perturbation.preset("rater_sycophancy")  # 3 conditions
REQUESTS = synthetic(20, seed=0)  # x 20 requests = 60 trials a sweep


def _sweep(store: Path, **options: object) -> SweepResult:
    return sweep(DESIGN, af.models.get("sim/opus-like"), REQUESTS, store=store, **options)  # type: ignore[arg-type]


def _runs(store: Path) -> list[str]:
    with Store.open(store) as db:
        return [m["run_id"] for m in db.manifests()]


def _frame(result: SweepResult) -> pd.DataFrame:
    return result.to_frame().drop(columns=["cached"]).reset_index(drop=True)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"seed": 0}, {"seed": 1}),
        ({"params": SamplingParams(temperature=1.0)}, {"params": SamplingParams(temperature=0.0)}),
    ],
    ids=["seed", "temperature"],
)
def test_a_second_configuration_adds_trials_beside_the_first(
    tmp_path: Path, first: dict[str, object], second: dict[str, object]
) -> None:
    store = tmp_path / "runs.sqlite"
    a = _frame(_sweep(store, **first))
    b = _frame(_sweep(store, **second))
    assert len(a) == len(b) == 60
    with Store.open(store) as db:
        assert db.count("trials") == 120  # was 60: the second sweep replaced the first
    run_a, run_b = _runs(store)
    loaded_a = _frame(SweepResult.load(store, run=run_a))
    loaded_b = _frame(SweepResult.load(store, run=run_b))
    pd.testing.assert_frame_equal(loaded_a, a)  # was 0 rows
    pd.testing.assert_frame_equal(loaded_b, b)
    with pytest.warns(AfperturbWarning, match=r"2 configurations of 'sim/opus-like'.*latest"):
        latest = SweepResult.load(store)
    pd.testing.assert_frame_equal(_frame(latest), b)


def test_a_resumed_sweep_of_the_same_configuration_finds_its_trials(tmp_path: Path) -> None:
    store = tmp_path / "runs.sqlite"
    _sweep(store, seed=3)
    again = _sweep(store, seed=3)
    assert again.run_info["cached"] == 60 and again.run_info["sent"] == 0
    with Store.open(store) as db:
        assert db.count("trials") == 60
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one configuration: no warning
        assert len(SweepResult.load(store)) == 60
    first, _ = _runs(store)
    assert len(SweepResult.load(store, run=first)) == 60  # covers its grid, whoever wrote last


def test_two_servers_under_one_model_name_are_two_configurations() -> None:
    params = SamplingParams()
    a = run_variant({"base_url": "http://a/v1", "model": "m"}, seed=0, params=params, max_turns=4)
    b = run_variant({"base_url": "http://b/v1", "model": "m"}, seed=0, params=params, max_turns=4)
    same = run_variant(
        {"base_url": "http://a/v1", "model": "m", "api_key": "sk-secret"},
        seed=0,
        params=params,
        max_turns=4,
    )
    assert a != b and a == same  # the key is scrubbed before hashing


def test_a_changed_transcript_invalidates_its_labels(tmp_path: Path) -> None:
    store = tmp_path / "runs.sqlite"
    result = _sweep(store)
    trial = next(t for t in result.trials() if t.status == "completed")
    judge = Label(trial_key=trial.key, classifier="af_reasoning", value="af", af_reasoning=True)
    with Store.open(store) as db:
        db.put_labels([judge.model_copy(update={"transcript": trial.transcript})])
    frame = SweepResult.load(store).to_frame().set_index(["condition_id", "request_id"])
    at = (trial.condition_id, trial.request_id)
    assert frame.loc[at, "af_reasoning_source"].startswith("af_reasoning")
    # The trial is regenerated with another reply (e.g. after `cache prune` on a real API).
    changed = trial.model_copy(update={"completions": (Completion(text="<OUTPUT>new</OUTPUT>"),)})
    with Store.open(store) as db:
        db.put_trial(TrialRow(changed, "r2")).result()
    frame = SweepResult.load(store).to_frame().set_index(["condition_id", "request_id"])
    assert not str(frame.loc[at, "af_reasoning_source"]).startswith("af_reasoning")
    stale = [lab for lab in SweepResult.load(store).labels() if lab.classifier == "af_reasoning"]
    assert stale == []  # the label of the old transcript is not this trial's any more


def test_a_judge_run_rejudges_exactly_the_changed_transcripts(tmp_path: Path) -> None:
    from _judge_fakes import FakeJudgeModel

    from afperturb.classify.judges import load_judge, run

    store = tmp_path / "runs.sqlite"
    _sweep(store)
    judge = load_judge("af_reasoning", votes=1).using(FakeJudgeModel(p_af=1.0))
    first = run(SweepResult.load(store), judge)[0]
    assert (first.labelled, first.skipped) == (60, 0)
    trial = next(SweepResult.load(store).trials())
    changed = trial.model_copy(
        update={
            "completions": (Completion(text="<SCRATCHPAD_REASONING>new</SCRATCHPAD_REASONING>"),)
        }
    )
    with Store.open(store) as db:
        db.put_trial(TrialRow(changed, "r2")).result()
    again = run(SweepResult.load(store), judge)[0]
    assert (again.labelled, again.skipped) == (1, 59)  # was (0, 60): the stale label counted


def test_prune_after_both_runs_deletes_nothing_either_references(tmp_path: Path) -> None:
    store = tmp_path / "runs.sqlite"
    _sweep(store, seed=0)
    _sweep(store, seed=1)
    assert prune_cache(store)["completions"] == 0
    for run in _runs(store):
        assert len(list(SweepResult.load(store, run=run).trials())) == 60  # every reply readable


def _downgrade_to_schema_1(path: Path) -> None:
    """What an afperturb before variants wrote: keys without variant, no new columns."""
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "UPDATE labels SET trial_key = substr(trial_key, 1, instr(trial_key, '|v') - 1)"
        )
        conn.execute("UPDATE trials SET key = substr(key, 1, length(key) - length(variant) - 1)")
        conn.execute("DROP INDEX trials_variant")
        for table, column in (
            ("trials", "variant"),
            ("trials", "transcript"),
            ("labels", "transcript"),
        ):
            conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        conn.execute("DROP TABLE run_requests")
        for run_id, manifest in conn.execute("SELECT run_id, manifest FROM runs").fetchall():
            m = json.loads(manifest)
            m.pop("variant")
            conn.execute("UPDATE runs SET manifest = ? WHERE run_id = ?", (json.dumps(m), run_id))
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.close()


def test_a_schema_1_store_is_migrated_without_loss(tmp_path: Path) -> None:
    store = tmp_path / "old.sqlite"
    before = _frame(_sweep(store, seed=0))
    with Store.open(store) as db:
        variant = db.manifests()[0]["variant"]
        n_labels = db.count("labels")
    _downgrade_to_schema_1(store)
    with Store.open(store) as db:  # migrates
        assert db.variants("sim/opus-like") == [variant]
        assert manifest_variant(db.manifests()[0]) == variant  # recomputed from the manifest
        assert db.count("labels") == n_labels
        assert all(lab.trial_key.endswith(variant) for lab in db.labels())
    pd.testing.assert_frame_equal(_frame(SweepResult.load(store)), before)
    again = _sweep(store, seed=0)  # the same configuration finds the migrated trials
    assert again.run_info["sent"] == 0
    with Store.open(store) as db:
        assert db.count("trials") == 60


# --- two sweeps of one configuration into one store at once ----------------------------------


class _Slow(Simulated):
    """A simulated model that takes a while per reply, as a real API does."""

    async def generate(self, messages, params, context=None):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.05)
        return await super().generate(messages, params, context)


def test_a_second_sweep_of_the_same_configuration_is_refused_while_the_first_runs(
    tmp_path: Path,
) -> None:
    store = tmp_path / "runs.sqlite"
    design = Perturbation.preset("rater_sycophancy")
    slow = _Slow(name="sim/slow")
    first = threading.Thread(
        target=sweep,
        args=(design, slow, synthetic(40, seed=0)),
        kwargs={"store": store, "concurrency": 2, "progress": False},
    )
    first.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # until the first sweep holds its lease
        if store.exists() and _leases(store):
            break
        time.sleep(0.02)
    with pytest.raises(StoreError, match=r"another sweep is writing 'sim/slow'.*pay for"):
        sweep(design, _Slow(name="sim/slow"), synthetic(40, seed=0), store=store, progress=False)
    other_seed = sweep(design, _Slow(name="sim/slow"), synthetic(4, seed=0), store=store, seed=9)
    assert len(other_seed) == 12  # another configuration: different trials, allowed
    first.join(60)
    assert not first.is_alive() and _leases(store) == []  # released at the end
    again = sweep(design, slow, synthetic(40, seed=0), store=store, progress=False)
    assert again.run_info["sent"] == 0  # now it may run: everything is stored


def test_a_lease_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    store = tmp_path / "runs.sqlite"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    with Store.open(store) as db:
        variant = _sweep(tmp_path / "probe.sqlite").manifest["variant"]
        db._read.execute(
            "INSERT INTO leases VALUES ('sim/opus-like', ?, '', 'r-killed', ?, ?, ?)",
            (variant, int(dead.stdout), socket.gethostname(), time.time() + 3600),
        )
        db._read.commit()
    assert len(_sweep(store)) == 60  # a sweep killed with -9 leaves its lease behind


def test_disjoint_shards_of_one_split_may_run_together(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.sqlite") as db:
        db.acquire_lease("m", "v1", "run-a", (0, 2))
        db.acquire_lease("m", "v1", "run-b", (1, 2))  # the other half: allowed
        for shard in ((0, 2), None, (0, 3)):
            with pytest.raises(StoreError, match="another sweep"):
                db.acquire_lease("m", "v1", "run-c", shard)
        db.release_lease("run-a")
        db.acquire_lease("m", "v1", "run-c", (0, 2))


def _leases(store: Path) -> list[tuple[str, ...]]:
    with sqlite3.connect(store) as conn:
        try:
            return conn.execute("SELECT model, run_id FROM leases").fetchall()
        except sqlite3.OperationalError:
            return []
