"""Splitting sweeps (issue 8): plan, shard, merge; four processes equal one unsharded run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _sweepkit import FakePerturbation, ScriptedModel, requests

import afperturb as af
from afperturb.errors import BackendResponseError, DesignError, StoreError
from afperturb.results import SweepResult
from afperturb.shard import merge, read_plan, shard_of, split, write_plan
from afperturb.store import Store
from afperturb.sweep import sweep

ROOT = Path(__file__).resolve().parent.parent
OUTCOME = [
    "model",
    "condition_id",
    "request_id",
    "sample",
    "status",
    "error",
    "label",
    "complied",
    "af_reasoning",
    "input_tokens",
    "output_tokens",
]
N_REQUESTS = 150  # x 3 conditions x 2 samples = 900 trials

WORKER = """
import sys
import afperturb as af
from afperturb.sweep import sweep
i, k, store, n = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
p = af.Perturbation.preset("rater_sycophancy")
sweep(p, "sim/opus-like", af.datasets.synthetic(n), samples=2, seed=3, store=store,
      shard=(i, k), progress=False)
"""


def _frame(res: SweepResult) -> object:
    df = res.to_frame()[OUTCOME]
    return df.sort_values(["condition_id", "request_id", "sample"]).reset_index(drop=True)


def _sweep(
    store: Store | Path | None, shard: tuple[int, int] | None = None, n: int = 40
) -> SweepResult:
    p = af.Perturbation.preset("rater_sycophancy")
    return sweep(
        p,
        "sim/opus-like",
        af.datasets.synthetic(n),
        samples=2,
        seed=3,
        store=store,
        shard=shard,
        progress=False,
    )


def test_plan_is_deterministic_and_exports_jsonl(tmp_path: Path) -> None:
    p = af.Perturbation.preset("rater_sycophancy")
    reqs = af.datasets.synthetic(20)
    items = p.plan("sim/opus-like", reqs, samples=2, seed=3)
    assert items == p.plan("sim/opus-like", reqs, samples=2, seed=3)
    assert len(items) == 3 * 20 * 2 == len({i.key for i in items})
    assert items[0].key == f"sim/opus-like|{p.conditions()[0].id}|{reqs[0].id}|0"
    assert all(i.shard(7) == shard_of(i.key, 7) for i in items)
    assert len({i.cache_key for i in items}) == 120  # each item's first turn is its own
    path = write_plan(items, tmp_path / "plan.jsonl")
    assert len(path.read_text().splitlines()) == 120 and read_plan(path) == items
    other = p.plan("sim/opus-like", reqs, samples=2, seed=4)
    assert [i.key for i in other] == [i.key for i in items]  # same trials...
    assert other[0].cache_key != items[0].cache_key  # ...but another seed's generations


def test_split_partitions_evenly() -> None:
    p = af.Perturbation.preset("rater_sycophancy")
    items = p.plan("sim/opus-like", af.datasets.synthetic(400))
    parts = split(items, 4)
    assert sorted(i.key for part in parts for i in part) == sorted(i.key for i in items)
    sizes = [len(part) for part in parts]
    assert sum(sizes) == 1200 and all(270 <= s <= 330 for s in sizes), sizes
    with pytest.raises(DesignError, match="k must be >= 1"):
        split(items, 0)


def test_sweep_shard_runs_exactly_its_part_of_the_plan(tmp_path: Path) -> None:
    p = af.Perturbation.preset("rater_sycophancy")
    items = p.plan("sim/opus-like", af.datasets.synthetic(40), samples=2, seed=3)
    for i, part in enumerate(split(items, 3)):
        res = _sweep(None, shard=(i, 3))
        keys = sorted(
            f"{r.model}|{r.condition_id}|{r.request_id}|{r.sample}"
            for r in res.to_frame().itertuples()
        )
        assert keys == sorted(item.key for item in part)
    with Store.open(tmp_path / "s.sqlite") as db:  # the plan's cache keys are the store's
        _sweep(db, n=40)
        # Stored keys add the configuration's variant to the plan's grid key.
        stored = {t.key.removesuffix(f"|{t.variant}"): t.cache_key for t in db.trials()}
    assert stored == {item.key: item.cache_key for item in items}
    with pytest.raises(DesignError, match=r"0 <= i < k; got \(3, 3\)"):
        _sweep(None, shard=(3, 3))


def test_four_processes_merged_equal_one_unsharded_run(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    stores = [tmp_path / f"shard{i}.sqlite" for i in range(4)]
    whole = tmp_path / "whole.sqlite"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(i), "4", str(path), str(N_REQUESTS)],
            env=env,
            stderr=subprocess.PIPE,
        )
        for i, path in enumerate(stores)
    ]
    unsharded = _sweep(whole, n=N_REQUESTS)  # meanwhile, the same sweep whole, in this process
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    counts = []
    for path in stores:
        with Store.open(path) as db:
            counts.append(db.count("trials"))
    assert sum(counts) == 900 and min(counts) > 150, counts
    merged = merge(stores, tmp_path / "merged.sqlite")
    assert len(merged) == 900
    assert _frame(merged).equals(_frame(unsharded))  # type: ignore[attr-defined]
    # merging again (and a shard twice) adds nothing: dedup by cache key and trial key
    again = merge([*stores, stores[0]], tmp_path / "merged.sqlite")
    with Store.open(whole) as db:
        generations = db.count("completions")  # continuation turns make it more than 900
    with Store.open(tmp_path / "merged.sqlite") as db:
        assert db.count("trials") == 900 and db.count("completions") == generations > 900
        assert db.count("runs") == 4
    assert _frame(again).equals(_frame(unsharded))  # type: ignore[attr-defined]


def test_merge_refuses_disagreeing_manifests(tmp_path: Path) -> None:
    a, b = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    _sweep(a, shard=(0, 2), n=5)
    sweep(
        af.Perturbation.preset("rater_sycophancy"),
        "sim/opus-like",
        af.datasets.synthetic(5),
        samples=2,
        seed=4,
        store=b,
        shard=(1, 2),
        progress=False,
    )
    with pytest.raises(StoreError, match=r"disagree on 'seed': 3 in .*a\.sqlite.* vs 4 in"):
        merge([a, b], tmp_path / "out.sqlite")
    with pytest.raises(StoreError, match="into itself"):
        merge([a], a)
    with pytest.raises(StoreError, match="no store at"):
        merge([tmp_path / "missing.sqlite"], tmp_path / "out2.sqlite")


def test_merge_prefers_completed_over_failed(tmp_path: Path) -> None:
    def broken(messages: object, ctx: object) -> BackendResponseError:
        return BackendResponseError("bad request", status_code=400, retryable=False)

    failed, done = tmp_path / "failed.sqlite", tmp_path / "done.sqlite"
    reqs = requests(3)
    sweep(FakePerturbation(), ScriptedModel(broken), reqs, store=failed, progress=False)
    sweep(FakePerturbation(), ScriptedModel(), reqs, store=done, progress=False)
    for order in ([failed, done], [done, failed]):
        out = tmp_path / f"m{len(list(tmp_path.iterdir()))}.sqlite"
        res = merge(order, out)
        assert set(res.to_frame()["status"]) == {"completed"}
        assert len(res) == 6
