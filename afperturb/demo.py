"""The demo: the paper's Table 1 reproduced on five simulated models whose motives are known.

:func:`run_demo` sweeps the ``paper`` preset (41 conditions) on the five built-in profiles
shaped after the paper's gapped models (``sim/claude-3-opus-like``, ``sim/claude-3.5-sonnet-like``,
``sim/llama-3-405b-like``, ``sim/grok-3-beta-like``, ``sim/gemini-2.0-flash-like``; each with
framing effects of the kind the paper reports) into one store, applies
:func:`afperturb.attribute`, and compares each verdict with what the planted truth implies
(:meth:`MotivationProfile.expected_verdicts`), in the paper's symbols: ✓ supported,
❍ conflicting, × no conclusive evidence. A *hit* is a cell whose symbol matches.
The sweeps run in worker processes (one per model, ``jobs`` at a time) because the simulated
backend is CPU-bound; the store is shared through SQLite's WAL mode.

Example:
    >>> demo = run_demo(requests=20, models=["sim/sycophant"], jobs=1)  # doctest: +SKIP
    >>> demo.hits, demo.total  # doctest: +SKIP
    (4, 4)
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import html
import math
import multiprocessing
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from afperturb.errors import DesignError, unknown_choice

__all__ = ["DEMO_MODELS", "DemoResult", "check_demo", "format_demo", "run_demo"]

#: The demo's models: one per gapped model of the paper's Table 1.
DEMO_MODELS = (
    "sim/claude-3-opus-like",
    "sim/claude-3.5-sonnet-like",
    "sim/llama-3-405b-like",
    "sim/grok-3-beta-like",
    "sim/gemini-2.0-flash-like",
)

_SHORT = {
    "rater_sycophancy": "rater sycophancy",
    "instrumental_goal_guarding": "instrumental GG",
    "terminal_goal_guarding": "terminal GG",
    "low_coherence": "low coherence",
}


@dataclasses.dataclass(frozen=True, eq=False)
class DemoResult:
    """What the demo found: the hypothesis table beside the planted truth, and its timings.

    ``comparison`` has one row per model × hypothesis: model, hypothesis, planted, expected
    (the verdict the planted truth implies), paper (the paper's Table 1 symbol where the model
    is shaped after one of its rows), verdict, verdict_reason, estimate, ci_low, ci_high,
    pvalue_adj, hit. ``elapsed_s`` is the wall-clock time of the
    whole demo (sweeps, table, attribution); ``sweep_s`` each model's sweep time.
    """

    comparison: pd.DataFrame
    table: object
    store: Path
    requests: int
    trials: int
    seed: int
    elapsed_s: float
    sweep_s: dict[str, float]

    @property
    def hits(self) -> int:
        """Model × hypothesis cells whose verdict's symbol matches the planted truth's."""
        return int(self.comparison["hit"].sum())

    @property
    def total(self) -> int:
        """Model × hypothesis cells compared."""
        return len(self.comparison)

    @property
    def all_hit(self) -> bool:
        """Whether every verdict matches the planted truth."""
        return self.hits == self.total

    def __repr__(self) -> str:
        return (
            f"<DemoResult {self.comparison['model'].nunique()} models × {self.requests} requests: "
            f"{self.trials} trials, {self.hits}/{self.total} hits in {self.elapsed_s:.1f} s>"
        )

    def to_frame(self) -> pd.DataFrame:
        """The comparison table (a copy)."""
        return self.comparison.copy()

    def to_markdown(self) -> str:
        """The comparison as a GitHub markdown table."""
        frame = _display(self.comparison)
        head = "| " + " | ".join(frame.columns) + " |"
        rule = "|" + "---|" * len(frame.columns)
        body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(False)]
        return "\n".join([head, rule, *body])

    def _repr_html_(self) -> str:
        frame = _display(self.comparison)
        head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
            for row in frame.itertuples(False)
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _num(value: float, digits: int = 3) -> str:
    return "" if math.isnan(value) else f"{value:.{digits}f}"


def _pvalue(value: float) -> str:
    if math.isnan(value):
        return ""
    return "<1e-4" if value < 1e-4 else f"{value:.4f}"


def _display(comparison: pd.DataFrame) -> pd.DataFrame:
    """Human-readable columns: the paper's symbol beside ours, estimate, CI, adjusted p, hit."""
    from afperturb.hypotheses import symbol

    rows = []
    for r in comparison.to_dict("records"):
        low, high = float(r["ci_low"]), float(r["ci_high"])
        rows.append(
            {
                "model": str(r["model"]),
                "hypothesis": _SHORT.get(str(r["hypothesis"]), str(r["hypothesis"])),
                "paper": str(r["paper"]) or symbol(str(r["expected"])),
                "afperturb": symbol(str(r["verdict"])),
                "verdict": str(r["verdict"]),
                "reason": str(r["verdict_reason"]),
                "estimate": _num(float(r["estimate"])),
                "CI": "" if math.isnan(low) else f"[{_num(low)}, {_num(high)}]",
                "p_adj": _pvalue(float(r["pvalue_adj"])),
                "hit": "hit" if r["hit"] else "MISS",
            }
        )
    return pd.DataFrame(rows)


def format_demo(demo: DemoResult) -> str:
    """The comparison as an aligned plain-text table, with the totals and the timing."""
    frame = _display(demo.comparison)
    widths = {c: max(len(c), *(len(str(v)) for v in frame[c])) for c in frame.columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in frame.columns)]
    lines.append("  ".join("-" * widths[c] for c in frame.columns))
    previous = None
    for row in frame.itertuples(index=False):
        values = list(row)
        if previous is not None and values[0] != previous:
            lines.append("")
        previous = values[0]
        lines.append(
            "  ".join(str(v).ljust(widths[c]) for v, c in zip(values, frame.columns, strict=True))
        )
    lines += ["", *_baseline_lines(demo.table), ""]
    lines.append(
        f"{demo.hits}/{demo.total} cells match the planted truth (paper: Sheshadri et al. 2025, "
        "Table 1; ✓ evidence, ❍ conflicting, × no conclusive evidence)."
    )
    from afperturb.design import Perturbation  # lazy, like the rest of the demo's imports

    lines.append(
        f"{demo.trials} trials ({demo.comparison['model'].nunique()} models × "
        f"{len(Perturbation.preset('paper'))} conditions × {demo.requests} requests), "
        f"store {demo.store}; elapsed {demo.elapsed_s:.1f} s."
    )
    return "\n".join(line.rstrip() for line in lines)


def _baseline_lines(table: object) -> list[str]:
    """One line per model: the null control's gap, CI, p and AF rate, and how it came out."""
    from afperturb.hypotheses import HypothesisTable

    if not isinstance(table, HypothesisTable) or table.baseline().empty:
        return []
    base = table.baseline()
    width = max(len(str(m)) for m in base["model"])
    lines = [
        "Null-control baseline, free vs paid with the conflicting criteria cut "
        "(expected ≈ 0; Greenblatt et al. 2024 G.1.19: ≈ 1 % gap, no AF reasoning):"
    ]
    for r in base.to_dict("records"):
        low, high = float(r["ci_low"]), float(r["ci_high"])
        ci = "" if math.isnan(low) else f" [{_num(low)}, {_num(high)}]"
        af_rate = float(r["af_rate"])
        af_text = "" if math.isnan(af_rate) else f", AF {af_rate:.1%}"
        lines.append(
            f"  {str(r['model']).ljust(width)}  gap {_num(float(r['estimate']))}{ci}, "
            f"p_adj {_pvalue(float(r['pvalue_adj']))}{af_text}: {r['verdict_reason']}"
        )
    return lines


def _sweep_one(model: str, requests: int, seed: int, store: str, progress: bool) -> float:
    """Sweep the paper preset on one model into ``store`` (runs in a worker process)."""
    from afperturb.datasets import synthetic
    from afperturb.design import Perturbation
    from afperturb.sweep import sweep

    start = time.perf_counter()
    sweep(
        Perturbation.preset("paper"),
        model,
        synthetic(requests, seed=seed),
        seed=seed,
        store=store,
        progress=progress,
    )
    return time.perf_counter() - start


def check_demo(models: Sequence[str], requests: int, jobs: int | None = None) -> list[str]:
    """Validate the demo's arguments before any work; returns the models, de-duplicated."""
    from afperturb.models.simulated import PROFILES

    if requests < 2:
        raise DesignError(f"requests must be >= 2 (paired tests need pairs), got {requests}")
    if jobs is not None and jobs < 1:
        raise DesignError(f"jobs must be >= 1, got {jobs}")
    names = list(dict.fromkeys(models))
    if not names:
        raise DesignError("the demo needs at least one model")
    valid = [f"sim/{p}" for p in PROFILES]
    for name in names:
        if name not in valid:
            raise unknown_choice("demo model", name, valid)
    return names


def run_demo(
    requests: int = 400,
    models: Sequence[str] = DEMO_MODELS,
    store: str | Path | None = None,
    seed: int = 0,
    *,
    jobs: int | None = None,
    progress: bool = False,
    on_model_done: Callable[[str, float], None] | None = None,
) -> DemoResult:
    """Run the demo (see the module docstring) and compare verdicts with the planted truth.

    Args:
        requests: synthetic requests per condition.
        models: ``sim/NAME`` models (any built-in simulated profile).
        store: the SQLite store to write; None makes one in a fresh temporary directory.
        seed: the sweep seed (request set and simulated draws).
        jobs: worker processes; None uses one per CPU (at most one per model); 1 runs in-process.
        progress: show a progress bar per sweep (only sensible with ``jobs=1``).
        on_model_done: called with (model, seconds) as each model's sweep finishes.

    Returns:
        A :class:`DemoResult`.
    """
    names = check_demo(models, requests, jobs)
    start = time.perf_counter()
    path = Path(store) if store is not None else Path(tempfile.mkdtemp(prefix="afperturb-demo-"))
    if store is None:
        path = path / "demo.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    workers = jobs if jobs is not None else min(len(names), os.cpu_count() or 1)
    timings: dict[str, float] = {}
    if workers <= 1:
        for name in names:
            timings[name] = _sweep_one(name, requests, seed, str(path), progress)
            if on_model_done is not None:
                on_model_done(name, timings[name])
    else:
        _init_store(path)
        # Forking a process that already runs threads (a notebook kernel) can deadlock.
        context = multiprocessing.get_context("spawn") if threading.active_count() > 1 else None
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {
                pool.submit(_sweep_one, name, requests, seed, str(path), False): name
                for name in names
            }
            for future in concurrent.futures.as_completed(futures):
                name = futures[future]
                timings[name] = future.result()
                if on_model_done is not None:
                    on_model_done(name, timings[name])
    comparison, table, trials = _attribute(path, names, requests, seed)
    return DemoResult(
        comparison=comparison,
        table=table,
        store=path,
        requests=requests,
        trials=trials,
        seed=seed,
        elapsed_s=time.perf_counter() - start,
        sweep_s={name: timings[name] for name in names},
    )


def _init_store(path: Path) -> None:
    """Create the schema once, so parallel workers never race to create it."""
    from afperturb.store import Store

    Store.open(path).close()


def _attribute(
    path: Path, names: Sequence[str], requests: int, seed: int
) -> tuple[pd.DataFrame, object, int]:
    """Attribute this demo's trials only (a reused ``--store`` may hold other runs)."""
    from afperturb.datasets import synthetic
    from afperturb.design import Perturbation
    from afperturb.hypotheses import HYPOTHESES, attribute
    from afperturb.profiles import PAPER_TABLE1, PROFILES
    from afperturb.results import SweepResult
    from afperturb.store import Store, manifest_variant

    conditions = Perturbation.preset("paper").conditions()
    request_ids = [r.id for r in synthetic(requests, seed=seed)]
    db = Store.open(path)
    try:
        frames = [
            SweepResult.from_store(
                db,
                model=name,
                conditions=conditions,
                request_ids=request_ids,
                samples=1,
                # This demo's own sweep: the model's latest run (a reused --store may hold
                # other seeds' trials beside it).
                variant=manifest_variant(db.manifests(name)[-1]),
            ).to_frame()
            for name in names
        ]
    finally:
        db.close()
    frame = pd.concat(frames, ignore_index=True)
    table = attribute(frame)
    profiles = {name: PROFILES[name.partition("/")[2]] for name in names}
    truth = {name: prof.expected_verdicts() for name, prof in profiles.items()}
    compared = table.compare(truth)
    paper = {
        (name, h): sym
        for name in names
        for h, sym in zip(HYPOTHESES, PAPER_TABLE1.get(name.partition("/")[2], ()), strict=False)
    }
    compared["paper"] = [
        paper.get((m, h), "")
        for m, h in zip(compared["model"], compared["hypothesis"], strict=True)
    ]
    stats = table.to_frame()[
        ["model", "hypothesis", "verdict_reason", "estimate", "ci_low", "ci_high", "pvalue_adj"]
    ]
    merged = compared.merge(stats, on=["model", "hypothesis"], how="left")
    columns = [
        "model",
        "hypothesis",
        "planted",
        "expected",
        "paper",
        "verdict",
        "verdict_reason",
        "estimate",
        "ci_low",
        "ci_high",
        "pvalue_adj",
        "hit",
    ]
    return merged[columns], table, len(frame)
