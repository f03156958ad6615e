"""The SQLite store: cache keys, round trips, schema versions, sharing, secrets."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from _sweepkit import FakePerturbation, ScriptedModel, requests

from afperturb.errors import StoreError
from afperturb.records import Completion, Label, Message, SamplingParams, Trial, Usage
from afperturb.store import SCHEMA_VERSION, Store, TrialRow, cache_key, model_hash, scrub
from afperturb.sweep import sweep

MSGS = [Message(role="system", content="sys"), Message(role="user", content="hi")]


def test_cache_key_depends_only_on_what_changes_output() -> None:
    cfg = {"provider": "openai", "model": "gpt-4o", "base_url": "u"}
    base = cache_key(cfg, MSGS, SamplingParams(), 0)
    assert base == cache_key(dict(reversed(list(cfg.items()))), MSGS, SamplingParams(), 0)
    assert base == cache_key(model_hash(cfg), MSGS, SamplingParams(), 0)
    # Secrets are scrubbed before hashing: a rotated key still hits the cache.
    assert base == cache_key({**cfg, "api_key": "sk-1"}, MSGS, SamplingParams(), 0)
    others = {
        cache_key({**cfg, "model": "gpt-4.1"}, MSGS, SamplingParams(), 0),
        cache_key(cfg, [*MSGS, Message(role="assistant", content="x")], SamplingParams(), 0),
        cache_key(cfg, MSGS, SamplingParams(temperature=0.0), 0),
        cache_key(cfg, MSGS, SamplingParams(), 1),
        cache_key(cfg, MSGS, SamplingParams(), 0, seed=1),
    }
    assert base not in others and len(others) == 5


async def test_trial_with_pending_completion_round_trips_and_columns_are_canonical(
    tmp_path: Path,
) -> None:
    from afperturb.store import PendingCompletion, canonical_json
    from afperturb.store._keys import _text_sha

    comps = (Completion(text="part one"), Completion(text="and two </OUTPUT>"))
    msgs = [*MSGS, Message(role="assistant", content="part one")]
    keys = (cache_key("mh", MSGS, SamplingParams(), 0), cache_key("mh", msgs, SamplingParams(), 0))
    trial = Trial(
        model="m",
        condition_id="c",
        request_id="r",
        status="completed",
        completions=comps,
        cache_key=keys[0],
    )
    with Store.open(tmp_path / "s.sqlite") as store:
        store.put_completion(keys[0], "mh", MSGS, SamplingParams(), 0, comps[0], wait=False)
        last = PendingCompletion(keys[1], "mh", msgs, SamplingParams(), 0, comps[1])
        await store.put_trial_async(TrialRow(trial, turn_keys=keys), [last])
        assert list(store.trials()) == [trial]
        assert store.get_completion(keys[1]) == comps[1]
        rows = store._query("SELECT messages, params FROM completions ORDER BY rowid")
        turns = store._query("SELECT turns FROM trials")[0][0]
    expected = canonical_json([[m.role, _text_sha(m.content)] for m in msgs])
    assert rows[1] == (expected, SamplingParams().model_dump_json())
    assert json.loads(turns) == list(keys)


def test_scrub_drops_secret_keys_recursively() -> None:
    cfg = {"model": "m", "api_key": "s", "nested": {"Authorization": "b", "keep": 1}}
    assert scrub(cfg) == {"model": "m", "nested": {"keep": 1}}


def test_round_trip_completions_trials_labels(tmp_path: Path) -> None:
    comp = Completion(text="answer", usage=Usage(input_tokens=3, output_tokens=4), model="m")
    with Store.open(tmp_path / "s.sqlite") as store:
        key = cache_key({"m": 1}, MSGS, SamplingParams(), 2)
        store.put_completion(key, "mh", MSGS, SamplingParams(), 2, comp).result()
        trial = Trial(
            model="m",
            condition_id="c",
            request_id="r",
            status="completed",
            completions=(comp,),
            cache_key=key,
        )
        label = Label(trial_key=trial.key, classifier="tags", value="accepted", complied=True)
        store.put_trial(TrialRow(trial, run_id="run1", labels=(label,))).result()
        assert store.get_completion(key) == comp
        assert store.get_completion("nope") is None
        assert store.has_model("mh") and not store.has_model("other")
        assert list(store.trials()) == [trial]
        assert list(store.trials(run="run1", status="completed")) == [trial]
        assert list(store.trials(status="failed")) == []
        assert list(store.labels(classifier="tags")) == [label]
        relabel = label.model_copy(update={"value": "rejected", "complied": False})
        store.put_labels([relabel])
        assert list(store.labels()) == [relabel]  # upsert by (trial, classifier, config hash)
        (item,) = store.iter_completions()
        assert item.messages == tuple(MSGS) and item.sample == 2 and item.completion == comp
        messages, params, sample, completion = item  # the replay backend unpacks 4-tuples
        assert (messages, params, sample, completion) == (tuple(MSGS), SamplingParams(), 2, comp)


def test_texts_are_stored_once(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.sqlite") as store:
        for i in range(20):
            msgs = [MSGS[0], Message(role="user", content=f"q{i}")]
            store.put_completion(f"k{i}", "mh", msgs, SamplingParams(), 0, Completion(text="a"))
        store.flush()
        texts = store._query("SELECT COUNT(*) FROM texts")[0][0]
    assert texts == 21  # one shared system prompt + 20 user turns


def test_group_commit_of_many_rows_keeps_every_row_and_the_last_upsert(tmp_path: Path) -> None:
    """One commit of 203 trials (several multi-row statements, chunks of 64 and powers of two)
    and repeated keys inside it: every row lands, a replaced trial or label keeps the last."""
    from afperturb.store import _store

    assert _store._chunk_sizes(203, 64) == [64, 64, 64, 8, 2, 1]
    assert _store._chunk_sizes(0, 64) == []
    with Store.open(tmp_path / "s.sqlite") as store:
        batch = _store._Batch()
        for i in range(203):
            trial = Trial(model="m", condition_id="c", request_id=f"r{i}", status="completed")
            label = Label(trial_key=trial.key, classifier="tags", value="accepted", complied=True)
            batch.trials.append(_store._trial_row(TrialRow(trial, run_id="a")))
            batch.labels.append(_store._label_row(label))
        last = Trial(model="m", condition_id="c", request_id="r0", status="failed", error="x")
        relabel = Label(trial_key=last.key, classifier="tags", value="rejected", complied=False)
        batch.trials.append(_store._trial_row(TrialRow(last, run_id="b")))
        batch.labels.append(_store._label_row(relabel))
        store._submit(batch).result()
        assert store.count("trials") == 203 and store.count("labels") == 203
        assert list(store.trials(status="failed")) == [last]
        assert list(store.labels(trial_key=last.key)) == [relabel]


def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    Store.open(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(StoreError, match=rf"schema_version '99'.*{SCHEMA_VERSION}"):
        Store.open(db)


def test_not_a_store_is_a_store_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not an afperturb store"):
        Store.open(bad)


def test_two_writers_share_a_store(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    errors: list[BaseException] = []

    def run(offset: int) -> None:
        try:
            sweep(
                FakePerturbation(),
                ScriptedModel(name=f"fake/m{offset}"),
                requests(40),
                store=db,
                progress=False,
                concurrency=4,
            )
        except BaseException as exc:  # collected, asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    with Store.open(db) as store:
        assert store.count("trials") == 2 * 80
        assert len(store.manifests()) == 2
        assert {m["model"] for m in store.manifests()} == {"fake/m0", "fake/m1"}


def test_sentinel_key_in_config_never_reaches_the_file(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    secret = "sk-SENTINEL-0123456789"
    res = sweep(
        FakePerturbation(), ScriptedModel(secret=secret), requests(5), store=db, progress=False
    )
    assert "api_key" not in res.manifest["model_config"]
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert secret.encode() not in data
    assert b"fake/scripted" in data  # the check reads the real bytes


def test_manifest_records_the_run(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    res = sweep(
        FakePerturbation(),
        ScriptedModel(),
        requests(3),
        store=db,
        progress=False,
        samples=2,
        seed=7,
    )
    m = res.manifest
    assert m["run_id"] == res.run_info["run_id"]
    assert m["scenario"] == "fake" and m["template_hashes"] == {"system.j2": "abc"}
    assert m["seed"] == 7 and m["samples"] == 2 and m["n_requests"] == 3
    assert m["condition_ids"] == ["c-free", "c-paid"] and len(m["dataset_hash"]) == 64
    assert set(m["classifiers"]) == {"tags", "heuristic_af"}
    with Store.open(db) as store:
        assert set(store.conditions()) == {"c-free", "c-paid"}
        assert set(store.requests()) == {"r000", "r001", "r002"}


def test_trials_refer_to_cached_completions_and_read_back_whole(tmp_path: Path) -> None:
    def script(messages: object, ctx: object) -> str:
        turn = getattr(ctx, "turn", 0)
        return "<OUTPUT><rejected/>" if turn == 0 else "</OUTPUT> the-end-marker"

    db = tmp_path / "s.sqlite"
    memory = sweep(FakePerturbation(), ScriptedModel(script), requests(3), progress=False)
    stored = sweep(FakePerturbation(), ScriptedModel(script), requests(3), store=db, progress=False)
    assert sorted(memory.trials(), key=lambda t: t.key) == list(stored.trials())
    assert all(len(t.completions) == 2 for t in stored.trials())
    with Store.open(db) as store:
        rows = store._query("SELECT turns, trial FROM trials")
        assert all(len(json.loads(turns)) == 2 for turns, _ in rows)
        assert not any("the-end-marker" in trial for _, trial in rows)  # text stored once


_WRITER = """
import sys
sys.path.insert(0, {tests!r})
from _sweepkit import FakePerturbation, ScriptedModel, requests
from afperturb.errors import StoreError
from afperturb.sweep import sweep
try:
    res = sweep(FakePerturbation(), ScriptedModel(name={name!r}), requests(150), store={db!r},
                progress=False, concurrency=8)
except StoreError as exc:
    print("refused:", exc)
else:
    print("sent:", res.run_info["sent"])
"""


def test_two_processes_share_a_store(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    tests = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": str(Path(tests).parent)}
    # Both sweep the same configuration at once. Either the second starts while the first
    # runs and is refused (issue 14: both would pay for every trial), or after it and finds
    # everything stored: each trial is paid for once, nothing duplicated, nothing lost.
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER.format(tests=tests, name="fake/shared", db=str(db))],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    sent = [int(o.split("sent:")[1]) for o in outs if "sent:" in o]
    refused = [o for o in outs if "refused:" in o]
    assert sum(sent) == 300 and len(sent) + len(refused) == 2, outs
    assert all("another sweep is writing 'fake/shared'" in o for o in refused)
    with Store.open(db) as store:
        assert store.count("trials") == 300
        assert len(store.manifests()) == len(sent)
        assert all(t.status == "completed" for t in store.trials())
