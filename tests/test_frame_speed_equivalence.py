"""The columnar results table (``SweepResult.to_frame``) equals the table of the code before it.

``to_frame()`` reads the store's rows into columns, codes the repeated strings once, matches
labels to trials without a join and sorts by codes (10⁶ trials: ~30 s -> a few seconds). This
file keeps the code it replaced (``afperturb/results.py`` and the DataFrame ``resolve`` of
``afperturb/classify/_provenance.py`` at commit bba0c37, trimmed to what the table needs) and
asserts that both give equal frames and ``label_configs()``, on a store with several models,
failed trials, labels from tags, heuristics and judges with several configs, judge failures
(with and without the column they set), labels of trials that do not exist, scoped results,
``prefer``, combinations with repeated trials, in-memory results and small read chunks.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from _sweepkit import ACCEPT, FakePerturbation, ScriptedModel, requests

import afperturb as af
from afperturb.classify import _provenance
from afperturb.classify._provenance import (
    FAILED,
    LABEL_COLUMNS,
    TIERS,
    _config_ranks,
    _empty_column,
    _flags,
    _mark_failed_sets,
    kind,
    source,
)
from afperturb.errors import BackendResponseError
from afperturb.records import Label
from afperturb.results import HEAD_COLUMNS, TAIL_COLUMNS, SweepResult, _condition_frame, _Part
from afperturb.store import Store, TrialRow
from afperturb.sweep import sweep

# --- the code before (bba0c37) ------------------------------------------------------------

_TRIAL_COLUMNS = [
    "model",
    "condition_id",
    "request_id",
    "sample",
    "status",
    "error",
    "input_tokens",
    "output_tokens",
    "latency_s",
    "cost_usd",
    "cached",
    "key",
    "cache_read_tokens",
    "cache_write_tokens",
]
_CACHE = ("cache_read_tokens", "cache_write_tokens")
_LABEL_COLUMNS = list(_provenance.INPUT_COLUMNS)
_SHARED_TRIAL_COLUMNS = ("model", "condition_id", "request_id", "status", "error")
_SHARED_LABEL_COLUMNS = ("trial_key", "classifier", "value", "config_hash")


def _frame_from_chunks(
    chunks: Iterable[list[Any]], columns: list[str], shared: Sequence[str]
) -> pd.DataFrame:
    frames = []
    dtypes: dict[str, Any] = {}
    for rows in chunks:
        part = pd.DataFrame.from_records(rows, columns=columns)
        for column in shared:
            dtypes.setdefault(column, part[column].dtype)
            part[column] = part[column].astype("category")
        frames.append(part)
    if not frames:
        return pd.DataFrame.from_records([], columns=columns)
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    for column in shared:
        df[column] = df[column].astype(dtypes[column])
    return df


def old_trial_frame(p: _Part) -> pd.DataFrame:
    if p.store is not None:
        # A run-scoped part reads its configuration's trials (issue 14: not the run_id column).
        chunks = p.store.trial_table_chunks(model=p.model, variant=p.variant)
        df = _frame_from_chunks(chunks, _TRIAL_COLUMNS, _SHARED_TRIAL_COLUMNS)
    else:
        data = [
            (
                t.model,
                t.condition_id,
                t.request_id,
                t.sample,
                t.status,
                t.error,
                t.input_tokens,
                t.output_tokens,
                sum(c.latency_s for c in t.completions),
                t.cost_usd,
                r.cached,
                t.key,
                t.cache_read_tokens,
                t.cache_write_tokens,
            )
            for r in p.rows
            for t in (r.trial,)
        ]
        df = pd.DataFrame.from_records(data, columns=_TRIAL_COLUMNS)
    mask = df["condition_id"].isin(p._keep_conditions())
    if p.request_ids is not None:
        mask &= df["request_id"].isin(p.request_ids)
    if p.samples is not None:
        mask &= df["sample"] < p.samples
    return df.loc[mask]


def old_label_frame(p: _Part) -> pd.DataFrame:
    if p.store is not None:
        chunks = p.store.label_table_chunks(model=p.model)
        return _frame_from_chunks(chunks, _LABEL_COLUMNS, _SHARED_LABEL_COLUMNS)
    data = [
        (
            lab.trial_key,
            lab.classifier,
            lab.value,
            lab.complied,
            lab.af_reasoning,
            lab.config_hash,
            lab.model_dump_json() if lab.value == FAILED else None,
        )
        for r in p.rows
        for lab in r.labels
    ]
    return pd.DataFrame.from_records(data, columns=_LABEL_COLUMNS)


def old_typed(df: pd.DataFrame, axes: Sequence[str]) -> pd.DataFrame:
    df["sample"] = df["sample"].astype("int64")
    for column in ("input_tokens", "output_tokens", "paraphrase", *_CACHE):
        df[column] = df[column].astype("int64")
    for column in ("latency_s", "cost_usd", "deployment_harm"):
        df[column] = df[column].astype("float64")
    for column in ("trained", "rated", "conflict", "cached"):
        df[column] = df[column].astype(bool)
    for column in ("complied", "af_reasoning"):
        df[column] = df[column].astype("boolean")
    df["rater"] = df["rater"].astype(object).where(df["rater"].notna(), None)
    for column in ("label", *(c for cs in _provenance.COMPANIONS.values() for c in cs)):
        df[column] = df[column].astype(object).where(df[column].notna(), None)
    df["error"] = df["error"].astype(object).where(df["error"].notna(), None)
    for axis in axes:
        df[axis] = df[axis].astype(str)
    return df


def _old_label_table(res: SweepResult) -> pd.DataFrame:
    labels = [old_label_frame(p) for p in res.parts]
    if not labels:
        return pd.DataFrame.from_records([], columns=_LABEL_COLUMNS)
    return pd.concat(labels, ignore_index=True)


def old_frame(res: SweepResult) -> pd.DataFrame:
    """``SweepResult._build_frame`` of bba0c37."""
    trials = [old_trial_frame(p) for p in res.parts]
    df = (
        pd.concat(trials, ignore_index=True)
        if trials
        else pd.DataFrame.from_records([], columns=_TRIAL_COLUMNS)
    )
    keys = pd.Index(df["key"].unique())
    resolved = old_resolve(_old_label_table(res), keys, res._latest(), dict(res.preferred))
    if len(keys) == len(df):
        at = keys.get_indexer(df["key"])
        in_order = bool((at == np.arange(len(df))).all())
    else:
        at, in_order = keys.get_indexer(df["key"]), False
    for column, values in resolved.items():
        df[column] = values if in_order else values[at]
    cond_frame, axes = _condition_frame(res.conditions)
    df = df.merge(cond_frame, on="condition_id", how="left")
    df = df.sort_values(["model", "condition_id", "request_id", "sample"], kind="stable")
    # The columns derived after the label columns (issue 15: partial, outcome) came later;
    # tests/test_results.py checks them.
    df = df[[*HEAD_COLUMNS, *axes, *(c for c in TAIL_COLUMNS if c not in _LATER)]]
    df = df.reset_index(drop=True)
    return old_typed(df, axes)


def old_label_configs(res: SweepResult) -> pd.DataFrame:
    labels = _old_label_table(res)
    trials = [old_trial_frame(p)["key"] for p in res.parts]
    keys = pd.Index(pd.concat(trials, ignore_index=True).unique() if trials else [])
    labels = labels[labels["trial_key"].isin(keys)]
    return old_configs(labels, res._latest(), dict(res.preferred))


@dataclass(frozen=True)
class _OldPairs:
    codes: npt.NDArray[np.intp]
    names: list[str]
    hashes: list[str]
    rows: npt.NDArray[np.int64]
    starts: npt.NDArray[np.int64]
    coverage: npt.NDArray[np.int64]
    sets: dict[str, npt.NDArray[np.bool_]]

    def order(self, column: str, ranks: Mapping[int, int]) -> list[int]:
        tiers = TIERS[column]
        found = [
            p
            for p in range(len(self.names))
            if kind(self.names[p]) in tiers and self.sets[column][p]
        ]
        return sorted(found, key=lambda p: (tiers[kind(self.names[p])], self.names[p], ranks[p]))

    def members(self, pair: int) -> npt.NDArray[np.int64]:
        return self.rows[self.starts[pair] : self.starts[pair + 1]]


def _old_pairs(labels: pd.DataFrame, verdicts: Mapping[str, npt.NDArray[np.bool_]]) -> _OldPairs:
    clf_codes, clf_names = pd.factorize(labels["classifier"], sort=True)
    hashes = labels["config_hash"].fillna("").astype(str)
    cfg_codes, cfg_names = pd.factorize(hashes, sort=True)
    combined = clf_codes.astype(np.int64) * max(1, len(cfg_names)) + cfg_codes
    codes, uniques = pd.factorize(combined, sort=True)
    n_pairs = len(uniques)
    clf_list, cfg_list = [str(x) for x in clf_names], [str(x) for x in cfg_names]
    names = [clf_list[int(u) // max(1, len(cfg_list))] for u in uniques]
    pair_hashes = [cfg_list[int(u) % max(1, len(cfg_list))] for u in uniques]
    rows = np.argsort(codes, kind="stable").astype(np.int64)
    coverage = np.bincount(codes, minlength=n_pairs).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(coverage)]).astype(np.int64)
    sets = {
        column: np.bincount(codes, weights=verdicts[column], minlength=n_pairs) > 0
        for column in LABEL_COLUMNS
    }
    return _OldPairs(codes, names, pair_hashes, rows, starts, coverage, sets)


def _old_failures(
    labels: pd.DataFrame, failed: npt.NDArray[np.bool_]
) -> dict[int, tuple[str, str]]:
    out: dict[int, tuple[str, str]] = {}
    raw = labels["failure"].to_numpy(dtype=object)
    for i in np.flatnonzero(failed):
        details: Mapping[str, Any] = {}
        try:
            parsed = json.loads(raw[i]) if isinstance(raw[i], str) else {}
            details = parsed.get("details") or {}
        except (ValueError, AttributeError):
            details = {}
        error = str(details.get("error") or "no reason recorded")
        out[int(i)] = (error, str(details.get("sets") or ""))
    return out


def old_resolve(
    labels: pd.DataFrame,
    keys: pd.Index,
    latest: Mapping[str, str] | None = None,
    prefer: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    n = len(keys)
    pos_all = keys.get_indexer(pd.Index(labels["trial_key"]))
    if (pos_all < 0).any():
        labels = labels[pos_all >= 0]
        pos_all = pos_all[pos_all >= 0]
    labels = labels.reset_index(drop=True)
    pos = pos_all.astype(np.int64)
    failed = (labels["value"] == FAILED).to_numpy(dtype=bool)
    flags = {c: _flags(labels[c]) for c in ("complied", "af_reasoning")}
    verdicts = {
        "label": np.ones(len(labels), dtype=bool),
        "complied": flags["complied"] >= 0,
        "af_reasoning": flags["af_reasoning"] >= 0,
    }
    out: dict[str, Any] = {}
    if labels.empty:
        for column in LABEL_COLUMNS:
            out.update(_empty_column(column, n))
        return out
    pairs = _old_pairs(labels, verdicts)
    failures = _old_failures(labels, failed)
    _mark_failed_sets(pairs, failures)  # type: ignore[arg-type]
    ranks = _config_ranks(pairs, latest or {}, prefer or {})  # type: ignore[arg-type]
    named = [source(name, h) for name, h in zip(pairs.names, pairs.hashes, strict=True)]
    sources = np.array([*named, None], dtype=object)
    values = labels["value"].to_numpy(dtype=object)
    for column in LABEL_COLUMNS:
        win = np.full(n, -1, dtype=np.int64)
        win_pair = np.full(n, -1, dtype=np.int64)
        fail_row = np.full(n, -1, dtype=np.int64)
        fail_pair = np.full(n, -1, dtype=np.int64)
        seen_pair = np.full(n, -1, dtype=np.int64)
        verdict = verdicts[column]
        for p in pairs.order(column, ranks):
            rows = pairs.members(p)
            t = pos[rows]
            open_ = win[t] < 0
            fresh = open_ & (seen_pair[t] < 0)
            seen_pair[t[fresh]] = p
            ok = open_ & verdict[rows]
            if kind(pairs.names[p]) == "heuristic":
                ok &= fail_row[t] < 0
            win[t[ok]] = rows[ok]
            win_pair[t[ok]] = p
            bad = open_ & failed[rows] & (fail_row[t] < 0)
            fail_row[t[bad]] = rows[bad]
            fail_pair[t[bad]] = p
        shown = np.where(win_pair >= 0, win_pair, np.where(fail_pair >= 0, fail_pair, seen_pair))
        out[f"{column}_source"] = sources[shown]
        if column == "label":
            label = values[win]
            label[win < 0] = None
            out["label"] = label
            continue
        flag = np.where(win >= 0, flags[column][win], -1)
        out[column] = pd.arrays.BooleanArray(flag == 1, flag < 0)
        errors = np.full(n, None, dtype=object)
        for i in np.flatnonzero(fail_row >= 0):
            message, _ = failures[int(fail_row[i])]
            errors[i] = f"{sources[int(fail_pair[i])]} failed: {message}"
        out[f"{column}_error"] = errors
    return out


def old_configs(
    labels: pd.DataFrame,
    latest: Mapping[str, str] | None = None,
    prefer: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    cols = ["classifier", "config_hash", "source", "kind", "labels", "failed", "sets"]
    cols += ["latest_run", "rank"]
    if labels.empty:
        return pd.DataFrame(columns=cols)
    labels = labels.reset_index(drop=True)
    failed = (labels["value"] == FAILED).to_numpy(dtype=bool)
    verdicts = {
        "label": np.ones(len(labels), dtype=bool),
        "complied": _flags(labels["complied"]) >= 0,
        "af_reasoning": _flags(labels["af_reasoning"]) >= 0,
    }
    pairs = _old_pairs(labels, verdicts)
    _mark_failed_sets(pairs, _old_failures(labels, failed))  # type: ignore[arg-type]
    latest = latest or {}
    ranks = _config_ranks(pairs, latest, prefer or {})  # type: ignore[arg-type]
    n_failed = np.bincount(pairs.codes, weights=failed, minlength=len(pairs.names))
    rows = []
    for p, (name, h) in enumerate(zip(pairs.names, pairs.hashes, strict=True)):
        fills = [c for c in LABEL_COLUMNS if kind(name) in TIERS[c] and pairs.sets[c][p]]
        rows.append(
            (
                name,
                h,
                source(name, h),
                kind(name),
                int(pairs.coverage[p]),
                int(n_failed[p]),
                ",".join(fills),
                latest.get(name) == h,
                ranks[p],
            )
        )
    frame = pd.DataFrame(rows, columns=cols)
    return frame.sort_values(["classifier", "rank"], kind="stable").reset_index(drop=True)


# --- the store ----------------------------------------------------------------------------


def _extra_labels(trials: list[af.Trial], rng: random.Random) -> list[list[Label]]:
    """Judge, heuristic and failure labels on a random part of ``trials``, in two runs."""
    first: list[Label] = []
    second: list[Label] = []

    def label(t: Any, classifier: str, config: str, value: str, **kw: Any) -> Label:
        key = t if isinstance(t, str) else t.key
        return Label(trial_key=key, classifier=classifier, config_hash=config, value=value, **kw)

    def failure(t: af.Trial, classifier: str, config: str, sets: str | None) -> Label:
        details: dict[str, Any] = {"error": f"BackendResponseError: 400 on {t.request_id}"}
        if sets is not None:
            details["sets"] = sets
        return label(t, classifier, config, FAILED, details=details)

    for t in trials:
        u = rng.random()
        if u < 0.5:  # StrongREJECT, config s1 (the most trials)
            if rng.random() < 0.15:
                first.append(failure(t, "strongreject", "s1aaaaaaaaaaaa", "complied"))
            else:
                yes = rng.random() < 0.5
                first.append(label(t, "strongreject", "s1aaaaaaaaaaaa", "v", complied=yes))
        if rng.random() < 0.3:  # a second config, the latest run
            yes = rng.random() < 0.5
            second.append(label(t, "strongreject", "s2bbbbbbbbbbbb", "v", complied=yes))
        if rng.random() < 0.4:  # the AF judge: verdicts, failures naming the column or not
            r = rng.random()
            if r < 0.2:
                first.append(failure(t, "af_reasoning", "a1cccccccccccc", "af_reasoning"))
            elif r < 0.3:
                first.append(failure(t, "af_reasoning", "a1cccccccccccc", None))
            elif r < 0.4:
                first.append(label(t, "af_reasoning", "a1cccccccccccc", "nothing_to_read"))
            else:
                yes = rng.random() < 0.3
                first.append(label(t, "af_reasoning", "a1cccccccccccc", "af", af_reasoning=yes))
        if rng.random() < 0.3:  # a heuristic for compliance
            yes = rng.random() < 0.5
            first.append(label(t, "heuristic_compliance", "h1dddddddddd", "x", complied=yes))
        if rng.random() < 0.05:  # an old judge failure with no other config to tell its column
            second.append(failure(t, "motives", "m1eeeeeeeeee", None))
        if rng.random() < 0.1:  # a judge named after the tags in order, setting complied
            yes = rng.random() < 0.5
            second.append(label(t, "zz_judge", "", "v", complied=yes))
    for key in ("sim/opus-like|nope|r0|0", "sim/opus-like|x|y|1", "other|c|r|0"):
        first.append(label(key, "strongreject", "s1aaaaaaaaaaaa", "v", complied=True))
    return [first, second]


@dataclass
class _Built:
    db: Path
    swept: SweepResult  # the sweep's own result: scoped to its design
    memory: SweepResult  # one model's trials and labels held in memory


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> _Built:
    db = tmp_path_factory.mktemp("equiv") / "s.sqlite"
    design = af.Perturbation.preset("rater_sycophancy")
    reqs = af.datasets.synthetic(24, seed=3)
    swept = design.sweep("sim/opus-like", reqs[:20], samples=2, store=db, progress=False)
    design.sweep("sim/no-gap", reqs, samples=1, store=db, progress=False)

    def script(messages: Any, context: Any) -> Any:
        if "3" in messages[-1].content or "7" in messages[-1].content:
            return BackendResponseError("refused: 400", status_code=400)
        return ACCEPT

    sweep(FakePerturbation(), ScriptedModel(script, name="fake/b"), requests(12), store=db,
          progress=False, samples=2)  # fmt: skip
    rng = random.Random(5)
    with Store.open(db) as store:
        trials = list(store.trials())
        for batch in _extra_labels(trials, rng):
            store.put_labels(batch)
        no_gap = [t for t in trials if t.model == "sim/no-gap"]
        by_key: dict[str, list[Label]] = {}
        for lab in store.labels():
            by_key.setdefault(lab.trial_key, []).append(lab)
        rows = [TrialRow(t, labels=tuple(by_key.get(t.key, ()))) for t in no_gap]
        conds = list(store.conditions().values())
    memory = SweepResult.from_rows(rows, conds, model="sim/no-gap")
    return _Built(db, swept, memory)


def _cases(b: _Built) -> dict[str, SweepResult]:
    whole = SweepResult.load(b.db)
    opus = SweepResult.load(b.db, model="sim/opus-like")
    axis = next(a for c in whole.conditions.values() for a in c.levels)
    level = next(c.levels[axis] for c in whole.conditions.values() if axis in c.levels)
    run = Store.open(b.db).manifests("fake/b")[0]["run_id"]
    return {
        "load": whole,
        "one model": opus,
        "sweep's own result": b.swept,
        "filtered": whole.filter(**{axis: level}),
        "preferred config": whole.prefer({"strongreject": "s1"}),
        "same trials twice": SweepResult.combine([opus, opus]),
        "scoped and whole": SweepResult.combine([b.swept, whole]),
        "store and memory": SweepResult.combine([opus, b.memory]),
        "memory": b.memory,
        "one run": SweepResult.load(b.db, run=run),
    }


CASES = [
    "load",
    "one model",
    "sweep's own result",
    "filtered",
    "preferred config",
    "same trials twice",
    "scoped and whole",
    "store and memory",
    "memory",
    "one run",
]


_LATER = ("partial", "partial_source", "partial_error", "outcome")


def _assert_same(new: pd.DataFrame, old: pd.DataFrame, case: str) -> None:
    new = new.drop(columns=list(_LATER))
    if case == "one run":
        # load(run=) holds only that run's model (issue 14). The old table read a part with
        # no rows as object columns, and concatenating demoted model, condition_id,
        # request_id and status to object; they are now str whatever the parts hold.
        demoted = ["model", "condition_id", "request_id", "status"]
        old = old.astype({c: new[c].dtype for c in demoted})
    pd.testing.assert_frame_equal(new, old)


@pytest.mark.parametrize("case", CASES)
def test_frame_equals_the_code_before(built: _Built, case: str) -> None:
    res = _cases(built)[case]
    res._cache.clear()
    new = res.to_frame()
    old = old_frame(res)
    assert len(new) > 0
    _assert_same(new, old, case)
    # The rules had something to decide: several sources per column, failures shown.
    if case == "load":
        assert new["complied_source"].str.split(":").str[0].nunique() >= 4
        assert new["complied_error"].notna().any() and new["af_reasoning_error"].notna().any()
        assert (new["status"] == "failed").any() and new["error"].notna().any()
        stood = new["complied_error"].notna() & new["complied"].notna()
        assert stood.any() and (~stood & new["complied_error"].notna()).any()


@pytest.mark.parametrize("case", CASES)
def test_label_configs_equal_the_code_before(built: _Built, case: str) -> None:
    res = _cases(built)[case]
    pd.testing.assert_frame_equal(res.label_configs(), old_label_configs(res))


def test_small_read_chunks_give_the_same_frame(
    built: _Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Codes of chunk-local strings are merged across chunks (7 rows a chunk here)."""

    def small(method: Any) -> Any:
        def chunked(self: Store, *args: Any, **kwargs: Any) -> Any:
            return method(self, *args, **{**kwargs, "size": 7})

        return chunked

    names = ("frame_trial_columns", "frame_label_codes", "label_table_chunks")
    for name in names:
        monkeypatch.setattr(Store, name, small(getattr(Store, name)))
    for case in ("load", "scoped and whole", "one run"):
        res = _cases(built)[case]
        _assert_same(res.to_frame(), old_frame(res), case)


@pytest.mark.parametrize(("sample", "most"), [(1, 256), (0, 256), (2000, 2), (0, 0)])
def test_labels_of_kinds_learnt_late_or_too_many_give_the_same_frame(
    built: _Built, monkeypatch: pytest.MonkeyPatch, sample: int, most: int
) -> None:
    """Store.frame_label_codes codes the kinds (classifier, config, value) it knows in SQL:
    those of the labels at the table's ends first, then each one met (looked up by rowid);
    beyond _MAX_KINDS it reads columns. Every way gives the same frame."""
    from afperturb.store import _store

    monkeypatch.setattr(_store, "_KIND_SAMPLE", sample)
    monkeypatch.setattr(_store, "_MAX_KINDS", most)
    codes = Store.frame_label_codes

    def small(self: Store, *args: Any, **kwargs: Any) -> Any:
        return codes(self, *args, **{**kwargs, "size": 97})

    monkeypatch.setattr(Store, "frame_label_codes", small)
    for case in ("load", "sweep's own result", "scoped and whole"):
        res = _cases(built)[case]
        _assert_same(res.to_frame(), old_frame(res), case)
    with Store.open(built.db) as store:
        chunks = list(store.frame_label_codes("sim/opus-like"))
        plain = [r for r in store.label_table() if r[0].startswith("sim/opus-like|")]
    kinds = chunks[-1][0]
    decoded = []
    flag = {0: None, 1: 0, 2: 1}
    for _, columns in chunks:
        key_column, code_column, failure_column = (
            columns[c] for c in ("trial_key", "code", "failure")
        )
        for key, code, failure in zip(key_column, code_column, failure_column, strict=True):
            classifier, config, value = kinds[code // 9]
            c, a = (code // 3) % 3, code % 3
            decoded.append((key, classifier, value, flag[c], flag[a], config, failure))
    assert decoded == plain and len(kinds) > 10


def test_empty_results_have_the_columns(built: _Built) -> None:
    res = SweepResult.load(built.db).filter(model="nobody")
    new, old = res.to_frame(), old_frame(res)
    assert new.empty and old.empty
    assert [c for c in new.columns if c not in _LATER] == list(old.columns)


def test_len_repr_and_labels_without_the_frame(built: _Built) -> None:
    for case, res in _cases(built).items():
        res._cache.clear()
        old = old_frame(res)
        assert len(res) == len(old), case
        assert f"{(old['status'] == 'failed').sum()} failed" in repr(res), case
        keys = {t.key for t in res.trials()}
        assert {lab.trial_key for lab in res.labels()} <= keys
        assert "frame" not in res._cache, case


def test_labels_found_in_store_order_or_by_hash_alike() -> None:
    """Labels are matched to trials by comparing each run with the next trial's key (labels
    written with their trials) and by a hash index otherwise; either way, the hash index's
    positions."""
    from afperturb.results import _AlignedKeys

    rng = np.random.default_rng(0)
    keys = np.array([f"m|c{i % 7}|r{i}|{i % 3}" for i in range(3000)], dtype=object)
    in_order = np.repeat(keys, 2)
    skipped = np.repeat(keys[rng.random(len(keys)) < 0.7], rng.integers(1, 4))
    shuffled = rng.permutation(in_order)
    mixed = np.concatenate([in_order[:900], shuffled[:500], in_order[900:], ["m|x|y|0"] * 3])
    index = pd.Index(keys, dtype=object)
    for labels in (in_order, skipped, shuffled, mixed):
        labels = np.array([str(k) for k in labels], dtype=object)  # other string objects
        found = _AlignedKeys(keys)
        got = np.concatenate([found(labels[i : i + 256]) for i in range(0, len(labels), 256)])
        np.testing.assert_array_equal(got, index.get_indexer(labels))


def test_changing_a_returned_frame_leaves_the_next_one_alone(built: _Built) -> None:
    res = SweepResult.load(built.db, model="sim/opus-like")
    first = res.to_frame()
    want = first.copy(deep=True)
    first.loc[0, "label"] = "changed"
    first["sample"] += 5
    first.loc[first.index[:3], "complied"] = pd.NA
    del first["error"]
    pd.testing.assert_frame_equal(res.to_frame(), want)


@pytest.mark.parametrize("size", [50_000, 16])
def test_awkward_values_take_the_row_by_row_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """Strings holding the separator SQLite joins with, latencies and costs that are not 0,
    errors, a quote in a classifier's name and a sample above 255: read row by row where
    needed (ranges of 16 rowids: some with the separator, some without), the same frame as
    the code before."""
    from afperturb.records import Completion, Condition, Facts, Trial, Usage

    db = tmp_path / "awkward.sqlite"
    cond = Condition(id="c1", scenario="s", levels={"tier": "free"}, facts=Facts())
    other = Condition(id="c2", scenario="s", levels={"tier": "paid"}, facts=Facts())
    odd = Condition(id="c\x1f3", scenario="s", levels={"tier": "odd"}, facts=Facts())
    rng = random.Random(1)
    with Store.open(db, batch_size=7) as store:
        for i in range(300):
            c = odd if i % 50 == 1 else cond if i % 3 else other
            request = f"r{i}\x1fx" if i % 50 == 0 else f"r{i}"
            failed = i % 17 == 0
            usage = Usage(input_tokens=rng.randint(0, 5000), output_tokens=rng.randint(0, 900))
            completion = Completion(text="<OUTPUT>x</OUTPUT>", usage=usage,
                                    latency_s=rng.random() * 3 if i > 150 else 0.0)  # fmt: skip
            trial = Trial(
                model="m'odel",
                condition_id=c.id,
                request_id=request,
                sample=i % 4 * 100,
                status="failed" if failed else "completed",
                error=f"BackendError: {i}" if failed else None,
                completions=() if failed else (completion,),
                cost_usd=rng.random() / 100 if i % 2 else 0.0,
            )
            labels = (
                Label(trial_key=trial.key, classifier="tags", config_hash="t1", value="accepted",
                      complied=True),
                Label(trial_key=trial.key, classifier="o'brien", config_hash="q'1",
                      value="error" if i % 5 == 0 else "v", af_reasoning=None if i % 5 == 0
                      else bool(i % 2), details={"error": "x", "sets": "af_reasoning"}),
            )  # fmt: skip
            store.put_trial(TrialRow(trial, run_id="run", labels=labels)).result()
    with Store.open(db) as store:
        chunks = list(store.frame_trial_columns("m'odel", size=64))
    assert sum(len(c["key"]) for c in chunks) == 300
    for name in ("frame_trial_columns", "frame_label_codes"):
        method = getattr(Store, name)

        def sized(self: Store, *args: Any, _method: Any = method, **kwargs: Any) -> Any:
            return _method(self, *args, **{**kwargs, "size": size})

        monkeypatch.setattr(Store, name, sized)
    res = SweepResult.from_store(Store.open(db), model="m'odel", conditions=[cond, other, odd])
    new, old = res.to_frame(), old_frame(res)
    pd.testing.assert_frame_equal(new.drop(columns=list(_LATER)), old)
    assert new["latency_s"].gt(0).any() and new["cost_usd"].gt(0).any()
    assert new["request_id"].str.contains("\x1f").any() and new["error"].notna().any()
    assert new["condition_id"].str.contains("\x1f").any()
    assert new["af_reasoning_error"].notna().any() and (new["sample"] > 255).any()


def test_sort_order_is_a_stable_lexsort() -> None:
    from afperturb.results import _sort_order

    rng = np.random.default_rng(2)
    keys = [rng.integers(0, 3, 5000), rng.integers(0, 40, 5000), rng.integers(0, 5, 5000)]
    want = np.lexsort(tuple(reversed(keys)))
    np.testing.assert_array_equal(_sort_order(keys), want)
    wide = [rng.integers(0, 2**40, 500), rng.integers(0, 2**40, 500)]  # past 2**62: lexsort
    np.testing.assert_array_equal(_sort_order(wide), np.lexsort(tuple(reversed(wide))))
    assert len(_sort_order([np.zeros(0, np.int64)])) == 0
