"""The default :class:`~afperturb.report.ReportSource`: the three report inputs from a store.

Imported only by ``report_from_store`` (lazily), so the report package itself never needs the
store or the sweep. Judge outputs are read from labels defensively: AF vote fractions come from
a non-heuristic classifier that sets ``af_reasoning`` (heuristic scores are criteria fractions,
not votes, and would mislead the threshold figure), quotes from ``details["quotes"]`` or
``details["evidence"]``, partial compliance (value ``partial``) and motives from classifiers
whose names contain "partial" and "motive".
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from afperturb.errors import AfperturbError, StoreError
from afperturb.records import Label

_NO_VERDICT = frozenset({"error", "nothing_to_read", "none", "no_scratchpad"})


def _judge_columns(labels: list[Label]) -> dict[str, dict[str, Any]]:
    """Per judge column, trial key → value (af_score, af_quotes, partial, motive)."""
    cols: dict[str, dict[str, Any]] = {"af_score": {}, "af_quotes": {}, "partial": {}, "motive": {}}
    motives: dict[str, dict[str, str]] = {}  # trial key → motive judge → its value
    for lab in labels:
        key, judge = lab.trial_key, not lab.classifier.startswith("heuristic")
        if lab.af_reasoning is not None and judge and lab.score is not None:
            cols["af_score"][key] = lab.score
        quotes = lab.details.get("quotes", lab.details.get("evidence"))
        if lab.af_reasoning is not None and isinstance(quotes, Mapping | list | str) and quotes:
            cols["af_quotes"][key] = quotes
        if lab.value in _NO_VERDICT:
            continue
        if "partial" in lab.classifier:
            cols["partial"][key] = lab.value == "partial"
        if "motive" in lab.classifier:
            motives.setdefault(key, {})[lab.classifier] = lab.value
    for key, found in motives.items():
        # The paper's two motive judges (helpful_motives, af_motives) both show: one alone
        # gives its value, several "judge: value; judge: value" (they used to overwrite).
        cols["motive"][key] = (
            next(iter(found.values()))
            if len(found) == 1
            else "; ".join(f"{name}: {value}" for name, value in sorted(found.items()))
        )
    return {k: v for k, v in cols.items() if v}


def load_store(store_path: Path) -> tuple[pd.DataFrame, Any, dict[str, Any]]:
    """Trials (with ``text`` and ``request_text``), the hypothesis table and the manifest.

    The table is ``afperturb.attribute(result)`` when the hypotheses module is installed and
    the data allow it, else None (the report then says no table was given).

    Raises:
        StoreError: when ``store_path`` does not exist.
    """
    if not store_path.exists():
        raise StoreError(f"no store at {str(store_path)!r}")
    from afperturb.results import SweepResult
    from afperturb.store import Store

    store = Store.open(store_path, create=False)
    try:
        result = SweepResult.load(store)
        frame = result.to_frame()
        # The frame's grid position → the stored trial (whose key adds its configuration).
        by_grid = {(t.model, t.condition_id, t.request_id, t.sample): t for t in result.trials()}
        texts = {t.key: t.text for t in by_grid.values()}
        keys = [
            by_grid[(m, c, r, int(s))].key if (m, c, r, int(s)) in by_grid else ""
            for m, c, r, s in zip(
                frame["model"],
                frame["condition_id"],
                frame["request_id"],
                frame["sample"],
                strict=True,
            )
        ]
        frame["text"] = [texts.get(k) for k in keys]
        requests = store.requests()
        frame["request_text"] = [
            requests[r].text if r in requests else None for r in frame["request_id"]
        ]
        for column, values in _judge_columns(list(result.labels())).items():
            frame[column] = [values.get(k) for k in keys]
        manifests = store.manifests()
        table = _attribute(result)
    finally:
        store.close()
    manifest: dict[str, Any] = manifests[-1] if len(manifests) == 1 else {"runs": manifests}
    return frame, table, manifest


def _attribute(result: Any) -> Any:
    """The hypothesis table, or None when attribution is unavailable for these data."""
    try:
        module = importlib.import_module("afperturb.hypotheses")
    except ImportError:
        return None
    try:
        return module.attribute(result)
    except AfperturbError:
        return None


__all__ = ["load_store"]
