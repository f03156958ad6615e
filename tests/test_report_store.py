"""The report from a real store: simulated sweep → store → report_from_store → browser."""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from afperturb.datasets import synthetic
from afperturb.design import Perturbation
from afperturb.errors import StoreError
from afperturb.records import Label
from afperturb.report import ReportPaths, report_from_store
from afperturb.report._cli import configure_report, run_report
from afperturb.report._store import _judge_columns


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> ReportPaths:
    root = tmp_path_factory.mktemp("store")
    store = root / "runs.sqlite"
    design = Perturbation.preset("instrumental_goal_guarding")
    for model in ("sim/opus-like", "sim/no-gap"):
        design.sweep(model, synthetic(8), samples=1, seed=0, store=str(store), progress=False)
    return report_from_store(store, root / "report")


def test_store_report_tables_and_viewer_data(stored: ReportPaths) -> None:
    md = stored.markdown.read_text()
    assert "352 trials: 2 models × 22 conditions × 8 requests; 0 failed." in md
    assert "| sim/opus-like | instrumental_goal_guarding |" in md
    # no unmonitored arm in this design: the default pairs fall back to trained vs rated only,
    # one per deployment story (5 without an adversary + 3 adversaries × 2 risks) per model
    assert md.count("| training_process: rated_and_trained vs rated_only |") == 22
    page = stored.html.read_text()
    match = re.search(r'<script type="application/json" id="afp-data">(.*?)</script>', page, re.S)
    assert match is not None
    data = json.loads(match.group(1))
    assert sorted(data["models"]) == ["sim/no-gap", "sim/opus-like"]
    assert len(data["trials"]) == 352
    assert len(data["requests"]) == 8
    texts = [t for t in data["trials"] if t["sp"] or t["out"] or t["raw"]]
    assert len(texts) == 352
    assert "dose_response" in stored.figures and "forest" in stored.figures


def test_store_report_in_browser(stored: ReportPaths, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not found; install it with scripts/install_chromium.sh (apt-get)")
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=2000",
        "--dump-dom",
        stored.html.as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    dom = done.stdout.decode("utf-8", errors="replace")
    assert 'data-rendered="true"' in dom
    assert 'id="hypothesis-table"' in dom and '<div class="pane pane-a">' in dom
    assert re.search(r'data-shown="[1-9][0-9]*"', dom)


def test_judge_columns_from_labels() -> None:
    labels = [
        Label(trial_key="k1", classifier="heuristic_af", value="af", score=1.0, af_reasoning=True),
        Label(
            trial_key="k1",
            classifier="af_reasoning",
            value="maybe",
            score=0.3,
            af_reasoning=False,
            details={"evidence": {"preservation_compliance": ["keep my values"]}},
        ),
        Label(trial_key="k1", classifier="partial_compliance", value="not_partial"),
        Label(trial_key="k2", classifier="partial_compliance", value="partial"),
        Label(trial_key="k2", classifier="motives", value="keep_harmless_values"),
        Label(trial_key="k3", classifier="motives", value="none"),
    ]
    cols = _judge_columns(labels)
    assert cols["af_score"] == {"k1": 0.3}  # the heuristic's criteria fraction is not a vote
    assert cols["af_quotes"] == {"k1": {"preservation_compliance": ["keep my values"]}}
    assert cols["partial"] == {"k1": False, "k2": True}
    assert cols["motive"] == {"k2": "keep_harmless_values"}
    both = [
        Label(trial_key="k4", classifier="helpful_motives", value="user_sycophancy"),
        Label(trial_key="k4", classifier="af_motives", value="keep_harmless_values"),
    ]
    # The paper's two motive judges on one trial both show (the second used to overwrite).
    assert _judge_columns(both)["motive"] == {
        "k4": "af_motives: keep_harmless_values; helpful_motives: user_sycophancy"
    }


def test_report_command_pieces(stored: ReportPaths, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="afperturb report")
    configure_report(parser)
    store = stored.out_dir.parent / "runs.sqlite"
    out = io.StringIO()
    args = parser.parse_args([str(store), "--out", str(tmp_path / "r"), "--max-requests", "3"])
    assert run_report(args, out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == f"wrote {tmp_path / 'r' / 'report.html'}"
    assert any(line.startswith("skipped figure threshold: no af_score column") for line in lines)
    assert "first 3 requests per model" in (tmp_path / "r" / "report.html").read_text()
    missing = parser.parse_args([str(tmp_path / "nope.sqlite")])
    with pytest.raises(StoreError, match="no store at"):
        run_report(missing, out)
