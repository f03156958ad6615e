"""SweepResult: the tidy table, label precedence, filter, combine, load, display."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from _sweepkit import FakePerturbation, ScriptedModel, requests

from afperturb.errors import DesignError
from afperturb.records import Condition, Facts, Label
from afperturb.results import COLUMNS, SweepResult
from afperturb.store import Store, TrialRow
from afperturb.sweep import sweep

EXPECTED = [
    "model",
    "condition_id",
    "scenario",
    "tier",
    "trained",
    "rated",
    "rater",
    "deployment_harm",
    "conflict",
    "paraphrase",
    "request_id",
    "sample",
    "status",
    "error",
    "label",
    "label_source",
    "complied",
    "complied_source",
    "complied_error",
    "af_reasoning",
    "af_reasoning_source",
    "af_reasoning_error",
    "partial",
    "partial_source",
    "partial_error",
    "outcome",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "latency_s",
    "cost_usd",
    "cached",
]


def _run(db: Path | None, name: str = "fake/a", n: int = 4) -> SweepResult:
    return sweep(
        FakePerturbation(),
        ScriptedModel(name=name),
        requests(n),
        store=db,
        progress=False,
        samples=2,
    )


@pytest.mark.parametrize("stored", [False, True])
def test_to_frame_has_exactly_the_documented_columns(tmp_path: Path, stored: bool) -> None:
    res = _run(tmp_path / "s.sqlite" if stored else None)
    df = res.to_frame()
    assert list(df.columns) == EXPECTED
    assert set(COLUMNS) | {"tier"} == set(df.columns)
    assert len(df) == 2 * 4 * 2
    assert str(df["complied"].dtype) == "boolean" and str(df["af_reasoning"].dtype) == "boolean"
    assert df["sample"].dtype == "int64" and df["trained"].dtype == bool
    free = df[df["tier"] == "free"]
    assert free["trained"].all() and free["complied"].all() and (free["label"] == "accepted").all()
    assert not df[df["tier"] == "paid"]["complied"].any()
    assert df["rater"].isna().all() and df["error"].isna().all()
    assert (df["input_tokens"] == 10).all() and (df["output_tokens"] == 5).all()
    assert df.iloc[0][["condition_id", "request_id", "sample"]].tolist() == ["c-free", "r000", 0]


def test_judge_label_wins_for_complied(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    res = _run(db)
    trial = next(t for t in res.trials() if t.condition_id == "c-free")
    with Store.open(db) as store:
        store.put_labels(
            [
                Label(
                    trial_key=trial.key,
                    classifier="strongreject",
                    config_hash="h",
                    value="refused",
                    complied=False,
                    af_reasoning=True,
                ),
            ]
        )
    df = SweepResult.load(db).to_frame()
    row = df[
        (df["condition_id"] == "c-free")
        & (df["request_id"] == trial.request_id)
        & (df["sample"] == trial.sample)
    ].iloc[0]
    assert row["label"] == "accepted"  # the tag label stays the tag label
    assert bool(row["complied"]) is False and bool(row["af_reasoning"]) is True
    assert df["complied"].sum() == 2 * 4 - 1


def test_filter_by_level_and_model(tmp_path: Path) -> None:
    res = _run(None)
    assert set(res.filter(tier="free").to_frame()["tier"]) == {"free"}
    assert len(res.filter(tier=["free", "paid"]).to_frame()) == 16
    assert len(res.filter(model="fake/other").to_frame()) == 0
    assert {t.condition_id for t in res.filter(tier="paid").trials()} == {"c-paid"}
    with pytest.raises(DesignError, match=r"unknown axis 'tierr'.*'tier'"):
        res.filter(tierr="free")


def test_combine_and_load_several_models(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    a, b = _run(db, "fake/a"), _run(db, "fake/b", n=3)
    both = SweepResult.combine([a, b])
    assert both.models == ["fake/a", "fake/b"]
    assert both.to_frame().groupby("model").size().to_dict() == {"fake/a": 16, "fake/b": 12}
    loaded = SweepResult.load(str(db))
    assert loaded.to_frame().equals(both.to_frame())
    only_b = SweepResult.load(db, model="fake/b")
    assert len(only_b.to_frame()) == 12 and only_b.manifest["model"] == "fake/b"
    run = b.run_info["run_id"]
    assert len(SweepResult.load(db, run=run).to_frame()) == 12
    with pytest.raises(DesignError, match="unknown model 'fake/c'"):
        SweepResult.load(db, model="fake/c")
    memory = SweepResult.combine([_run(None, "fake/a"), _run(None, "fake/b", n=3)])
    cols = [c for c in EXPECTED if c not in ("latency_s", "cached")]
    assert memory.to_frame()[cols].equals(both.to_frame()[cols])


def test_result_scoped_to_its_design(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    _run(db, n=6)
    small = _run(db, n=2)
    assert len(small.to_frame()) == 2 * 2 * 2
    assert len(list(small.trials())) == 8


def test_display_repr_markdown_html() -> None:
    res = _run(None)
    assert repr(res) == "<SweepResult fake/a: 16 trials, 0 failed>"
    assert len(res) == 16
    md = res.to_markdown()
    assert md.splitlines()[0].startswith("| model | trials | completed | failed | complied_rate")
    assert "| fake/a | 16 | 16 | 0 | 0.5 |" in md
    html = res._repr_html_()
    assert html.startswith("<table>") and "<td>fake/a</td>" in html
    summary = res.summary()
    assert summary.loc[0, "complied_rate"] == 0.5


def test_axis_colliding_with_a_column_is_refused() -> None:
    cond = Condition(id="c", scenario="s", levels={"status": "x"}, facts=Facts())
    res = SweepResult.from_rows([], [cond], model="m")
    with pytest.raises(DesignError, match="collide"):
        res.to_frame()


def test_empty_result_has_the_columns() -> None:
    cond = Condition(id="c", scenario="s", levels={"tier": "free"}, facts=Facts())
    df = SweepResult.from_rows(list[TrialRow](), [cond], model="m").to_frame()
    assert list(df.columns) == EXPECTED and df.empty
    assert isinstance(df, pd.DataFrame)


def test_repr_and_len_do_not_build_the_table() -> None:
    # A repr is printed where nobody asked for a table (asyncio.run on 3.11 prints the task).
    from afperturb.datasets import synthetic
    from afperturb.design import Perturbation

    res = Perturbation.preset("rater_sycophancy").sweep("sim/no-gap", synthetic(5), progress=False)
    assert len(res) == 15 and "15 trials, 0 failed" in repr(res)
    assert "frame" not in res._cache
    assert len(res.to_frame()) == 15 and "frame" in res._cache


def test_store_tables_read_in_chunks_give_the_same_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's tables are read chunk by chunk (equal strings shared, a million rows never
    held as tuples at once); a chunk size of 3 rows must give the frame of one big chunk,
    failed trials (errors) and two models included."""
    from afperturb.errors import BackendResponseError
    from afperturb.store import _store

    db = tmp_path / "s.sqlite"
    _run(db, "fake/a", n=5)
    failing = ScriptedModel(
        name="fake/b", script=lambda messages, ctx: BackendResponseError("no", status_code=400)
    )
    sweep(FakePerturbation(), failing, requests(2), store=db, progress=False)
    whole = SweepResult.load(db).to_frame()
    with Store.open(db) as store:
        assert store.models() == ["fake/a", "fake/b"]
        chunks = list(store.trial_table_chunks(size=3))
        assert [len(c) for c in chunks[:-1]] == [3] * (len(chunks) - 1)
        assert [r for c in chunks for r in c] == store.trial_table()
    monkeypatch.setattr(_store.Store, "trial_table_chunks", _small(_store.Store.trial_table_chunks))
    monkeypatch.setattr(_store.Store, "label_table_chunks", _small(_store.Store.label_table_chunks))
    for name in ("frame_trial_columns", "frame_label_codes"):  # what to_frame() reads
        monkeypatch.setattr(_store.Store, name, _small(getattr(_store.Store, name)))
    pieces = SweepResult.load(db).to_frame()
    pd.testing.assert_frame_equal(pieces, whole)
    assert (whole["status"] == "failed").sum() == 4 and whole["error"].notna().sum() == 4
    assert len(whole) == 2 * 5 * 2 + 2 * 2


def _small(method: Any) -> Any:
    def chunked(self: Store, *args: Any, **kwargs: Any) -> Any:
        return method(self, *args, **{**kwargs, "size": 3})

    return chunked


def test_partial_and_outcome_columns_come_from_the_partial_judge(tmp_path: Path) -> None:
    """Issue 15: the paper's six outcome categories are a column of the table."""
    import afperturb as af
    from afperturb.classify.outcomes import CATEGORIES
    from afperturb.records import Label
    from afperturb.store import Store

    path = tmp_path / "runs.sqlite"
    af.Perturbation.preset("null_control").sweep(
        "sim/opus-like", af.datasets.synthetic(20), store=str(path), progress=False
    )
    res = SweepResult.load(path)
    frame = res.to_frame()
    assert frame["partial"].isna().all() and frame["partial_source"].isna().all()
    assert set(frame["outcome"].dropna()) <= set(CATEGORIES)
    assert frame["outcome"].notna().all()  # tags and heuristic AF decide every trial here
    complied = frame[frame["complied"] == True]  # noqa: E712
    key = {t.request_id + t.condition_id: t.key for t in res.trials()}
    k = [key[r + c] for r, c in zip(complied["request_id"], complied["condition_id"], strict=True)]
    judge = "partial_compliance"
    with Store.open(path) as db:
        db.put_labels(
            [
                Label(trial_key=k[0], classifier=judge, config_hash="old", value="not_partial"),
                Label(trial_key=k[0], classifier=judge, config_hash="new", value="partial"),
                Label(trial_key=k[1], classifier=judge, config_hash="new", value="not_partial"),
                Label(
                    trial_key=k[2],
                    classifier=judge,
                    config_hash="new",
                    value="error",
                    details={"error": "no parseable vote"},
                ),
            ]
        )
    frame = SweepResult.load(path).to_frame()
    by_key = dict(
        zip(
            [key[r + c] for r, c in zip(frame["request_id"], frame["condition_id"], strict=True)],
            frame.index,
            strict=True,
        )
    )
    one, two, three = (frame.loc[by_key[x]] for x in k[:3])
    assert one["partial"] == True and one["partial_source"] == "partial_compliance:new"  # noqa: E712
    assert one["outcome"] in ("partial", "partial_af")
    assert two["partial"] == False and two["outcome"] in ("complied", "complied_af")  # noqa: E712
    assert pd.isna(three["partial"]) and "no parseable vote" in three["partial_error"]
    assert pd.isna(three["outcome"])  # a compliance whose partial judge failed: no category
    preferred = SweepResult.load(path).prefer({judge: "old"}).to_frame()
    assert preferred.loc[by_key[k[0]], "partial"] == False  # noqa: E712
