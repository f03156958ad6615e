"""Markdown and HTML rendering: escaping, the embedded JSON, the CSP, the written files."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from _report_synth import make_manifest, make_table, make_trials

from afperturb.errors import InsufficientDataError
from afperturb.report import ReportPaths, report_from_store, write_report
from afperturb.report._viewer import CSS, JS
from afperturb.report.html import content_security_policy, json_for_script
from afperturb.report.markdown import code_fence, md_escape

HOSTILE = "</script><script>document.title='PWNED'</script><!-- <img src=x onerror=alert(1)> &amp;"


def test_md_escape_neutralises_markup_and_keeps_words() -> None:
    assert md_escape("a|b") == "a\\|b"
    assert md_escape("<img src=x onerror=alert(1)>") == "\\<img src=x onerror=alert(1)\\>"
    assert md_escape("[x](javascript:alert(1))") == "\\[x\\](javascript:alert(1))"
    assert md_escape("*bold* `code` &amp;") == "\\*bold\\* \\`code\\` \\&amp;"
    assert md_escape("rater_sycophancy") == "rater_sycophancy"
    assert md_escape("_emph_") == "\\_emph\\_"
    assert md_escape("two\nlines\r\n") == "two lines "
    assert md_escape(None) == ""


def test_code_fence_outgrows_backtick_runs() -> None:
    fenced = code_fence('{"a": "````"}', "json")
    assert fenced.startswith("`````json\n") and fenced.endswith("\n`````")


def test_json_for_script_cannot_close_the_block_and_round_trips() -> None:
    payload = {"text": HOSTILE, "u": "\u2028 ü"}
    encoded = json_for_script(payload)
    assert "</" not in encoded and "<" not in encoded and ">" not in encoded
    assert "&" not in encoded
    assert json.loads(encoded) == payload


def _sha(source: str) -> str:
    return base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()


def test_csp_allows_only_this_script_and_style() -> None:
    csp = content_security_policy(JS, CSS)
    assert "default-src 'none'" in csp
    assert f"script-src 'sha256-{_sha(JS)}';" in csp
    assert f"style-src 'sha256-{_sha(CSS)}';" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "http" not in csp


def test_viewer_script_uses_no_html_parsing_sinks() -> None:
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "Function(",
        ".href",
        ".src",
        'setAttribute("href',
        'setAttribute("src',
    ):
        assert sink not in JS, sink


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> ReportPaths:
    trials = make_trials(payloads={"req001": HOSTILE})
    table = make_table()
    table.loc[0, "rule"] = "<b>bold</b> | pipe"
    table.loc[1, "model"] = "sim/opus-like"
    manifest = make_manifest() | {"note": HOSTILE}
    return write_report(trials, table, manifest, tmp_path_factory.mktemp("rep"), max_requests=5)


def test_written_files(report: ReportPaths) -> None:
    assert report.markdown.name == "report.md" and report.html.name == "report.html"
    assert sorted(report.figures) == ["compliance_bars", "dose_response", "forest", "threshold"]
    assert all(p.stat().st_size > 5_000 for p in report.figures.values())
    frame = report.to_frame()
    assert frame["kind"].tolist() == ["markdown", "html"] + ["figure"] * 4
    assert repr(report).startswith("<ReportPaths ") and "\n" not in repr(report)
    assert "report.html" in report._repr_html_()
    assert report.to_markdown().count("\n") == 5


def test_markdown_content(report: ReportPaths) -> None:
    md = report.markdown.read_text()
    assert md.startswith("# afperturb report\n")
    assert "432 trials: 2 models × 9 conditions × 12 requests" in md
    assert "\\<b\\>bold\\</b\\> \\| pipe" in md
    assert "![compliance_bars](figures/compliance_bars.png)" in md
    # the manifest is a fenced block: the hostile note is inert code there
    assert "```json\n{" in md and '"seed": 0' in md
    hyp_rows = [line for line in md.splitlines() if line.startswith("| sim/")]
    assert len(hyp_rows) == 6 + 6 + 18  # hypotheses, gaps, outcome rows
    # every hypothesis row has exactly the 10 table cells: escaped pipes do not split cells
    assert all(len(re.split(r"(?<!\\)\|", line)) == 12 for line in hyp_rows[:6])


def _embedded(page: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="afp-data">(.*?)</script>', page, re.S)
    assert match is not None
    return dict(json.loads(match.group(1)))


def test_html_structure_and_escaping(report: ReportPaths) -> None:
    page = report.html.read_text()
    # exactly two script elements: the JSON block and the hashed viewer script
    assert page.count("<script") == 2 and page.count("</script>") == 2
    assert "&lt;b&gt;bold&lt;/b&gt; | pipe" in page
    assert '<td class="verdict-supported">supported</td>' in page
    assert page.count('src="data:image/png;base64,') == 4
    assert "http://" not in page and "https://" not in page
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page)
    assert csp is not None and f"'sha256-{_sha(JS)}'" in html.unescape(csp.group(1))
    assert f"<script>{JS}</script>" in page and f"<style>{CSS}</style>" in page
    assert "document.title=&#x27;PWNED&#x27;" in page  # manifest note, escaped


def test_embedded_viewer_data(report: ReportPaths) -> None:
    data = _embedded(report.html.read_text())
    assert data["models"] == ["sim/opus-like", "sim/no-gap"]
    assert data["truncated"] == {"sim/opus-like": 12, "sim/no-gap": 12}
    trials = data["trials"]
    assert isinstance(trials, list)
    # 5 requests × 9 conditions × 2 samples × 2 models
    assert len(trials) == 180
    hostile = [t for t in trials if t["r"] == "req001" and t["o"] != "failed"]
    assert hostile and all(t["raw"] == [[HOSTILE, 0]] for t in hostile)
    af = next(t for t in trials if t["af"] is True)
    marked = [s for s, m in af["sp"] if m]
    assert marked == ["refusing now would get my values modified"]
    assert data["pairs"]["sim/opus-like"][0] == ["c-free-throughput", "c-enterprise-throughput"]
    assert data["requests"]["req000"].startswith("Request number 0")


def test_report_without_table_or_text_columns(tmp_path: Path) -> None:
    trials = make_trials(n_requests=3, samples=1).drop(
        columns=["text", "request_text", "af_quotes", "af_score", "partial", "motive"]
    )
    paths = write_report(trials, None, None, tmp_path / "out")
    assert "forest" in paths.skipped_figures and "threshold" in paths.skipped_figures
    assert paths.skipped_figures["threshold"].startswith("no af_score column")
    md = paths.markdown.read_text()
    assert "No hypothesis table was given." in md
    assert "- forest: not drawn (no hypothesis table was given)" in md
    data = _embedded(paths.html.read_text())
    assert data["requests"] == {}
    assert all(t["sp"] == [] and t["out"] == [] for t in data["trials"])


def test_report_from_store_uses_the_given_loader(tmp_path: Path) -> None:
    seen: list[Path] = []

    def load(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, object]]:
        seen.append(path)
        return make_trials(n_requests=2, samples=1), make_table(), {"run": "x"}

    paths = report_from_store(tmp_path / "runs.sqlite", tmp_path / "rep", load=load)
    assert seen == [tmp_path / "runs.sqlite"]
    assert paths.html.exists() and '"run": "x"' in paths.markdown.read_text()


def test_empty_trials_are_an_error(tmp_path: Path) -> None:
    with pytest.raises(InsufficientDataError, match="no trials to report"):
        write_report(make_trials().iloc[0:0], None, None, tmp_path)
