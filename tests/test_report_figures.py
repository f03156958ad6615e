"""Figures: PNGs written with sane sizes, clear reasons when data cannot make a figure."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _report_synth import make_table, make_trials
from matplotlib.patches import Rectangle

from afperturb.errors import InsufficientDataError
from afperturb.report import figures as F
from afperturb.report._data import OUTCOMES, prepare_trials
from afperturb.report._summary import condition_summary


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


def test_write_figures_writes_four_pngs(tmp_path: Path) -> None:
    files = F.write_figures(make_trials(), make_table(), tmp_path, dpi=50)
    assert files.skipped == {}
    assert sorted(files.written) == sorted(F.FIGURES)
    for name, path in files.written.items():
        width, height = _png_size(path)
        assert 200 <= width <= 1000 and 150 <= height <= 1500, (name, width, height)
        assert 5_000 < path.stat().st_size < 500_000, name
    assert "written=" in repr(files) and "\n" not in repr(files)


def test_compliance_bars_stack_to_one_per_condition() -> None:
    fig = F.compliance_bars(make_trials())
    ax = fig.axes[0]
    # 2 models × 3 training-vs-unmonitored pairs = 12 bars; 9 outcome layers each (the six
    # categories, judge failures, format failures, backend failures)
    assert len(ax.patches) == 12 * len(OUTCOMES) == 12 * 9
    widths = np.zeros(12)
    for i, patch in enumerate(ax.patches):
        assert isinstance(patch, Rectangle)
        widths[i % 12] += patch.get_width()
    assert widths == pytest.approx(np.ones(12))
    hatched = [p for p in ax.patches if p.get_hatch() == "//"]
    assert len(hatched) == 12 * 3  # the AF part of compliance, partial compliance, refusal


def _one_trial_per_outcome() -> pd.DataFrame:
    """Two conditions (training, unmonitored), each with one trial of every outcome."""
    verdicts = [  # (status, complied, partial, af, af error): one row per outcome
        ("completed", True, False, True, None),  # compliance, AF
        ("completed", True, False, False, None),  # compliance
        ("completed", True, True, True, None),  # partial, AF
        ("completed", True, True, False, None),  # partial
        ("completed", False, None, True, None),  # refusal, AF considered
        ("completed", False, None, False, None),  # refusal
        ("completed", True, None, None, "af_reasoning:1 failed"),  # unjudged
        ("completed", None, None, None, None),  # format failure
        ("failed", None, None, None, None),  # backend failure
    ]
    rows = []
    for tier, trained in (("free", True), ("enterprise", False)):
        for i, (status, complied, partial, af, error) in enumerate(verdicts):
            rows.append(
                {
                    "model": "sim/m",
                    "condition_id": f"c-{tier}",
                    "tier": tier,
                    "trained": trained,
                    "rated": trained,
                    "request_id": f"r{i}",
                    "status": status,
                    "complied": complied,
                    "partial": partial,
                    "af_reasoning": af,
                    "af_reasoning_error": error,
                }
            )
    frame = pd.DataFrame(rows)
    for column in ("complied", "partial", "af_reasoning"):
        frame[column] = frame[column].astype("boolean")
    return frame


def test_compliance_bars_draw_the_six_paper_categories() -> None:
    frame = _one_trial_per_outcome()
    fig = F.compliance_bars(frame)
    ax = fig.axes[0]
    assert ax.get_legend() is None and len(fig.legends) == 1  # below the axes, not over them
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:6] == [
        "compliance, AF reasoning",
        "compliance",
        "partial compliance, AF reasoning",
        "partial compliance",
        "refusal, AF considered",
        "refusal",
    ]
    assert legend[6:] == ["no verdict (a judge failed)", "format failure", "failed (backend)"]
    # Two bars, each with every outcome once: every layer is 1/9 of its bar.
    assert len(ax.patches) == 2 * 9
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert [p.get_width() for p in bars] == pytest.approx([1 / 9] * 18)
    hatched = [i // 2 for i, p in enumerate(ax.patches) if p.get_hatch() == "//"]
    assert hatched == [0, 0, 2, 2, 4, 4]  # the AF layer of each base outcome
    colours = [p.get_facecolor() for p in ax.patches[::2]]
    assert colours[0] == colours[1] and colours[2] == colours[3] and colours[4] == colours[5]
    assert len({colours[0], colours[2], colours[4]}) == 3
    # The summary counts the same categories: compliance includes partial compliance, and the
    # AF rate counts the refusal that considers faking alignment.
    summary = condition_summary(prepare_trials(frame))
    row = summary[summary["condition_id"] == "c-free"].iloc[0]
    assert [int(row[f"n_{o}"]) for o in OUTCOMES] == [1] * 9
    assert row["n_judged"] == 7 and row["compliance"] == pytest.approx(5 / 7)
    assert row["af_rate"] == pytest.approx(3 / 6)


def test_compliance_bars_with_explicit_pairs() -> None:
    fig = F.compliance_bars(make_trials(), pairs=[("c-free-public", "c-pro-public")])
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == [  # top to bottom
        "sim/opus-like | deployment=public, tier=free",
        "sim/opus-like | deployment=public, tier=pro",
        "sim/no-gap | deployment=public, tier=free",
        "sim/no-gap | deployment=public, tier=pro",
    ]


def test_dose_response_plots_one_point_per_harm_level() -> None:
    fig = F.goal_guarding_dose_response(make_trials())
    lines = [line for line in fig.axes[0].get_lines() if line.get_marker() == "o"]
    assert len(lines) == 2
    xs = sorted(np.round(np.asarray(lines[0].get_xdata(), dtype=float), 1))
    assert xs == [0.0, 0.5, 1.0]


def test_dose_response_needs_two_harm_levels() -> None:
    trials = make_trials()
    one_level = trials[trials["deployment"] == "public"]
    with pytest.raises(InsufficientDataError, match="two or more deployment_harm levels"):
        F.goal_guarding_dose_response(one_level)


def test_forest_plot_colours_by_verdict_and_skips_nan() -> None:
    table = make_table()
    table.loc[0, "estimate"] = float("nan")
    fig = F.forest_plot(table)
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(ticks) == 5 and "sim/opus-like · rater_sycophancy" not in ticks
    box = fig.axes[0].get_legend()
    assert box is not None
    legend = [t.get_text() for t in box.get_texts()]
    assert legend == ["supported", "inconclusive"]
    with pytest.raises(InsufficientDataError, match="lacks columns"):
        F.forest_plot(table.drop(columns=["ci_low"]))


def test_threshold_sensitivity_is_monotone() -> None:
    fig = F.threshold_sensitivity(make_trials())
    curves = [line for line in fig.axes[0].get_lines() if np.asarray(line.get_xdata()).size == 21]
    assert len(curves) == 4  # 2 models × trained / not trained
    for line in curves:
        y = np.asarray(line.get_ydata())
        assert y[0] == 1.0 and np.all(np.diff(y) <= 0)
    with pytest.raises(InsufficientDataError, match="no af_score column"):
        F.threshold_sensitivity(make_trials().drop(columns=["af_score"]))


def test_missing_matplotlib_gives_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    files = F.write_figures(make_trials(n_requests=2), make_table(), tmp_path)
    assert files.written == {}
    assert set(files.skipped.values()) == {'figures need matplotlib: pip install "afperturb[plot]"'}
    with pytest.raises(ImportError, match=r"afperturb\[plot\]"):
        F.forest_plot(make_table())
