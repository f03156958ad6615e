"""Label provenance: which classifier and config each label cell comes from, and which wins.

The rules are in ``afperturb/classify/_provenance.py`` and ``docs/classifiers.md``: judges,
then the tags, then heuristics for ``complied``; the AF judge, then the heuristic for
``af_reasoning``; a failed judge is never replaced by a heuristic; several configs of one
classifier are ordered by ``prefer``, then the latest labelling run, then coverage and hash.
"""

from __future__ import annotations

import itertools
import json
import random
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from _judge_fakes import FakeJudgeModel

import afperturb as af
from afperturb.classify import _provenance
from afperturb.classify.judges import load_judge
from afperturb.errors import BackendResponseError, ClassifierError
from afperturb.records import Completion, Condition, Facts, Label, Trial
from afperturb.results import SweepResult
from afperturb.store import Store, TrialRow

COND = Condition(id="c", scenario="s", levels={"tier": "free"}, facts=Facts(trained=True))


def _trial(request_id: str) -> Trial:
    return Trial(
        model="m",
        condition_id="c",
        request_id=request_id,
        status="completed",
        completions=(Completion(text="<OUTPUT>x</OUTPUT>"),),
    )


def _label(trial: Trial, classifier: str, config: str, value: str, **kw: Any) -> Label:
    return Label(trial_key=trial.key, classifier=classifier, config_hash=config, value=value, **kw)


def _failure(trial: Trial, classifier: str, config: str, sets: str | None) -> Label:
    details: dict[str, Any] = {"error": "BackendResponseError: 400 refused"}
    if sets is not None:
        details["sets"] = sets
    return _label(trial, classifier, config, "error", details=details)


def _frame(rows: list[TrialRow], **kw: Any) -> pd.DataFrame:
    frame = SweepResult.from_rows(rows, [COND], model="m").to_frame(**kw)
    return frame.set_index("request_id")


# --- failures ---------------------------------------------------------------------------------


class _FailsOn(FakeJudgeModel):
    """A judge model that answers like FakeJudgeModel except on prompts holding ``marker``."""

    def __init__(self, marker: str) -> None:
        super().__init__(p_af=1.0, p_not=0.0)
        self.marker = marker

    async def generate(self, messages: Any, params: Any, context: Any = None) -> Completion:
        if self.marker in messages[-1].content:
            raise BackendResponseError("content filter: 400", status_code=400)
        return await super().generate(messages, params, context)


def test_a_failed_af_judge_leaves_no_verdict_and_says_why(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    requests = af.datasets.synthetic(6)
    design = af.Perturbation.preset("rater_sycophancy")
    res = design.sweep("sim/opus-like", requests, store=db, progress=False)
    marker = requests[0].text[:40]  # the simulator quotes the request in its scratchpad
    judge = load_judge("af_reasoning", votes=3).using(_FailsOn(marker))
    (run,) = res.classify(judge)
    assert run.errors == 3  # request 0 in each of the three tiers
    frame = SweepResult.load(db).to_frame()
    failed = frame[frame["request_id"] == requests[0].id]
    ok = frame[frame["request_id"] != requests[0].id]
    assert failed["af_reasoning"].isna().all()
    assert failed["af_reasoning_source"].str.startswith("af_reasoning:").all()
    assert failed["af_reasoning_error"].str.contains("failed: BackendResponseError").all()
    # The heuristic did label those trials: its verdict is there and must not be shown.
    heuristic = {lab.trial_key for lab in Store.open(db).labels(classifier="heuristic_af")}
    assert {t.key for t in res.trials() if t.request_id == requests[0].id} <= heuristic
    assert ok["af_reasoning"].notna().all() and ok["af_reasoning_error"].isna().all()
    assert ok["af_reasoning_source"].str.startswith("af_reasoning:").all()
    with Store.open(db) as store:
        errors = [lab for lab in store.labels(classifier="af_reasoning") if lab.value == "error"]
    assert {lab.details["sets"] for lab in errors} == {"af_reasoning"}


def test_tags_may_stand_for_a_failed_compliance_judge_heuristics_never() -> None:
    a, b, c, d = (_trial(f"r{i}") for i in range(4))
    sr, hc = "strongreject", "heuristic_compliance"
    rows = [
        # The judge failed; the model's own accept tag stands, the failure is named.
        TrialRow(a, labels=(_label(a, "tags", "t1", "accepted", complied=True),
                            _failure(a, sr, "s1", "complied"))),
        # The judge failed and the tags give no verdict: the heuristic may not fill in.
        TrialRow(b, labels=(_label(b, "tags", "t1", "no_tag"),
                            _label(b, hc, "h1", "complied", complied=True),
                            _failure(b, sr, "s1", "complied"))),
        # No judge ran: the heuristic reads the untagged output.
        TrialRow(c, labels=(_label(c, "tags", "t1", "no_tag"),
                            _label(c, hc, "h1", "complied", complied=True))),
        TrialRow(d),
    ]  # fmt: skip
    f = _frame(rows)
    assert f.loc["r0", ["complied", "complied_source"]].tolist() == [True, "tags:t1"]
    assert (
        f.loc["r0", "complied_error"] == "strongreject:s1 failed: BackendResponseError: 400 refused"
    )
    assert pd.isna(f.loc["r1", "complied"]) and f.loc["r1", "complied_source"] == "strongreject:s1"
    assert f.loc["r1", "complied_error"].startswith("strongreject:s1 failed")
    assert f.loc["r2", ["complied", "complied_source"]].tolist() == [
        True,
        "heuristic_compliance:h1",
    ]
    assert f.loc["r2", "complied_error"] is None
    assert f.loc["r3", ["complied_source", "label_source", "af_reasoning_source"]].isna().all()
    assert f.loc["r2", ["label", "label_source"]].tolist() == ["no_tag", "tags:t1"]


def test_a_judge_verdict_beats_the_tags_and_a_heuristic() -> None:
    a = _trial("r0")
    labels = (
        _label(a, "heuristic_af", "h1", "af", af_reasoning=True),
        _label(a, "tags", "t1", "accepted", complied=True),
        _label(a, "af_reasoning", "j1", "not_af", af_reasoning=False),
        _label(a, "strongreject", "s1", "not_compliant", complied=False),
    )
    f = _frame([TrialRow(a, labels=labels)])
    assert f.loc["r0", ["complied", "complied_source"]].tolist() == [False, "strongreject:s1"]
    assert f.loc["r0", ["af_reasoning", "af_reasoning_source"]].tolist() == [
        False,
        "af_reasoning:j1",
    ]


def test_an_old_failure_without_its_column_takes_the_column_of_its_judge() -> None:
    # Labels written before failures named their column: another config of the same judge
    # shows which column it sets.
    a, b = _trial("r0"), _trial("r1")
    rows = [
        TrialRow(a, labels=(_label(a, "heuristic_af", "h1", "af", af_reasoning=True),
                            _failure(a, "af_reasoning", "new", None))),
        TrialRow(b, labels=(_label(b, "af_reasoning", "old", "af", af_reasoning=True),)),
    ]  # fmt: skip
    f = _frame(rows, prefer={"af_reasoning": "new"})
    assert pd.isna(f.loc["r0", "af_reasoning"])
    assert f.loc["r0", "af_reasoning_source"] == "af_reasoning:new"


# --- several configs of one classifier ---------------------------------------------------------


def _two_configs(order: list[int]) -> list[TrialRow]:
    rows = []
    for i in range(3):
        t = _trial(f"r{i}")
        options = [
            _label(t, "heuristic_af", "aaaa1111", "af", af_reasoning=True),
            _label(t, "heuristic_af", "bbbb2222", "not_af", af_reasoning=False),
            _label(t, "tags", "t1", "accepted", complied=True),
        ]
        rows.append(TrialRow(t, labels=tuple(options[k] for k in order)))
    return rows


def test_the_winner_does_not_depend_on_row_order() -> None:
    frames = [_frame(_two_configs(list(p))) for p in itertools.permutations(range(3))]
    for other in frames[1:]:
        pd.testing.assert_frame_equal(frames[0], other)
    # Equal coverage, no run record: the smaller hash, for every trial alike.
    assert set(frames[0]["af_reasoning_source"]) == {"heuristic_af:aaaa1111"}
    # Mixed orders within one result: still one config throughout ("never the newest row").
    rows = _two_configs([0, 1, 2])[:2] + _two_configs([1, 0, 2])[2:]
    assert set(_frame(rows)["af_reasoning_source"]) == {"heuristic_af:aaaa1111"}


def test_prefer_picks_a_config_and_names_the_choices() -> None:
    rows = _two_configs([0, 1, 2])
    f = _frame(rows, prefer={"heuristic_af": "bbbb"})
    assert set(f["af_reasoning_source"]) == {"heuristic_af:bbbb2222"}
    assert not f["af_reasoning"].any()
    res = SweepResult.from_rows(rows, [COND], model="m")
    assert (
        res.prefer({"heuristic_af": "bbbb"})
        .to_frame()
        .equals(res.to_frame(prefer={"heuristic_af": "bbbb"}))
    )
    with pytest.raises(ClassifierError, match=r"'heuristic_af'.*aaaa1111, bbbb2222"):
        res.to_frame(prefer={"heuristic_af": "cccc"})
    with pytest.raises(ClassifierError, match=r"labelled by: heuristic_af, tags"):
        res.to_frame(prefer={"strongreject": "aaaa"})
    both = SweepResult.combine([res.prefer({"heuristic_af": "bbbb"}), res.filter(tier="free")])
    assert set(both.to_frame()["af_reasoning_source"]) == {"heuristic_af:bbbb2222"}
    assert res.prefer({"heuristic_af": "bbbb"}).filter(tier="free").preferred == both.preferred
    table = res.prefer({"heuristic_af": "bbbb"}).label_configs()
    assert table[["source", "kind", "labels", "sets", "rank"]].values.tolist() == [
        ["heuristic_af:bbbb2222", "heuristic", 3, "af_reasoning", 0],
        ["heuristic_af:aaaa1111", "heuristic", 3, "af_reasoning", 1],
        ["tags:t1", "tags", 3, "label,complied", 0],
    ]


def test_the_latest_labelling_run_wins_in_a_store(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    res = af.Perturbation.preset("rater_sycophancy").sweep(
        "sim/opus-like", af.datasets.synthetic(4), store=db, progress=False
    )
    inline = res.manifest["classifiers"]["heuristic_af"]
    before = SweepResult.load(db).to_frame()
    assert set(before["af_reasoning_source"]) == {f"heuristic_af:{inline[:8]}"}
    flipped = [
        lab.model_copy(update={"config_hash": "f" * 16, "af_reasoning": not lab.af_reasoning})
        for lab in Store.open(db).labels(classifier="heuristic_af")
        if lab.af_reasoning is not None
    ]
    with Store.open(db) as store:
        assert set(store.label_runs()) == set()  # the sweep's labels are in its manifest
        store.put_labels(flipped)
        assert store.label_runs()["heuristic_af"]["config_hash"] == "f" * 16
    after = SweepResult.load(db).to_frame()
    assert set(after["af_reasoning_source"]) == {"heuristic_af:ffffffff"}
    assert (after["af_reasoning"] == ~before["af_reasoning"]).all()
    again = SweepResult.load(db).to_frame(prefer={"heuristic_af": inline})
    pd.testing.assert_frame_equal(again, before)
    # A later sweep of the same trials names the inline config again: it is the latest run.
    af.Perturbation.preset("rater_sycophancy").sweep(
        "sim/opus-like", af.datasets.synthetic(4), store=db, progress=False
    )
    latest = SweepResult.load(db).to_frame()
    assert set(latest["af_reasoning_source"]) == {f"heuristic_af:{inline[:8]}"}


def test_a_store_without_run_records_still_opens_and_resolves(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    res = af.Perturbation.preset("rater_sycophancy").sweep(
        "sim/no-gap", af.datasets.synthetic(3), store=db, progress=False
    )
    keys = [t.key for t in res.trials()]
    with Store.open(db) as store:
        store.put_labels([Label(trial_key=keys[0], classifier="af_reasoning", config_hash="j",
                                value="error", details={"error": "timeout"})])  # fmt: skip
    conn = sqlite3.connect(db)  # as an older afperturb wrote it: no label-run records
    conn.execute("DELETE FROM meta WHERE key LIKE 'label_run:%'")
    conn.commit()
    conn.close()
    frame = SweepResult.load(db).to_frame()
    assert len(frame) == 9 and frame["af_reasoning_error"].notna().sum() == 1
    # A built-in judge's failure written without its column: the judge's declaration says it.
    key = keys[0].split("|")
    row = frame[(frame["condition_id"] == key[1]) & (frame["request_id"] == key[2])].iloc[0]
    assert pd.isna(row["af_reasoning"]) and row["af_reasoning_source"] == "af_reasoning:j"
    assert row["af_reasoning_error"] == "af_reasoning:j failed: timeout"


def test_the_builtin_judges_columns_agree_with_their_declarations() -> None:
    for name, column in _provenance.BUILTIN_SETS.items():
        assert load_judge(name).sets == column


def test_heuristic_verdicts_are_marked_in_the_frame() -> None:
    res = af.Perturbation.preset("rater_sycophancy").sweep(
        "sim/opus-like", af.datasets.synthetic(4), progress=False
    )
    frame = res.to_frame()
    assert frame["af_reasoning_source"].str.startswith("heuristic_af:").all()
    assert frame["complied_source"].str.startswith("tags:").all()
    assert frame["label_source"].equals(frame["complied_source"])


# --- the resolver on its own ------------------------------------------------------------------


def test_resolve_matches_a_row_by_row_reference() -> None:
    """Random label tables against a plain-Python walk of the documented order."""
    rng = random.Random(3)
    seen = dict.fromkeys(
        ["verdict", "no verdict", "failed", "stood after a failure", "heuristic kept out"], 0
    )
    names = ["tags", "heuristic_af", "heuristic_compliance", "strongreject", "af_reasoning"]
    for _ in range(40):
        rows = []
        keys = [f"k{i}" for i in range(8)]
        for key in keys:
            for name in rng.sample(names, rng.randint(0, 5)):
                for config in rng.sample(["a1", "b2"], rng.randint(1, 2)):
                    value = rng.choice(
                        ["v", "v", "none"] if name == "tags" else ["v", "error", "none"]
                    )
                    flag = rng.choice([True, False]) if value == "v" else None
                    sets = (
                        "complied"
                        if name in ("strongreject", "tags", "heuristic_compliance")
                        else "af_reasoning"
                    )
                    failure = (
                        json.dumps({"details": {"error": "e", "sets": sets}})
                        if value == "error"
                        else None
                    )
                    complied = flag if sets == "complied" else None
                    af_flag = flag if sets == "af_reasoning" else None
                    rows.append((key, name, value, complied, af_flag, config, failure))
        rng.shuffle(rows)
        labels = pd.DataFrame(rows, columns=list(_provenance.INPUT_COLUMNS))
        index = pd.Index(keys)
        got = _provenance.resolve(labels, index)
        for i, key in enumerate(keys):
            for column in ("complied", "af_reasoning"):
                *want, blocked = _reference(labels, key, column)
                value = got[column][i]
                assert [None if pd.isna(value) else bool(value), got[f"{column}_source"][i],
                        got[f"{column}_error"][i]] == want, (key, column)  # fmt: skip
                seen[("stood after a failure" if want[0] is not None else "failed") if want[2]
                     else "verdict" if want[0] is not None else "no verdict"] += 1  # fmt: skip
                seen["heuristic kept out"] += blocked
    assert min(seen.values()) >= 10, seen


def _reference(labels: pd.DataFrame, key: str, column: str) -> tuple[Any, Any, Any, bool]:
    tiers = _provenance.TIERS[column]
    mine = labels[labels["trial_key"] == key]
    setters = labels[labels[column].notna() | labels["failure"].fillna("").str.contains(column)]
    pairs = sorted(
        {(n, h) for n, h in zip(setters["classifier"], setters["config_hash"], strict=True)}
    )
    coverage = labels.groupby(["classifier", "config_hash"]).size()
    ranked = sorted(
        (p for p in pairs if _provenance.kind(p[0]) in tiers),
        key=lambda p: (tiers[_provenance.kind(p[0])], p[0], -coverage[p], p[1]),
    )
    failed = seen = None
    blocked = False
    for name, h in ranked:
        rows = mine[(mine["classifier"] == name) & (mine["config_hash"] == h)]
        if rows.empty:
            continue
        seen = seen or f"{name}:{h}"
        row = rows.iloc[0]
        error = f"{failed} failed: e" if failed else None
        if pd.notna(row[column]):
            if not (failed and _provenance.kind(name) == "heuristic"):
                return bool(row[column]), f"{name}:{h}", error, blocked
            blocked = True
        if row["value"] == "error" and failed is None:
            failed = f"{name}:{h}"
    return None, failed or seen, (f"{failed} failed: e" if failed else None), blocked
