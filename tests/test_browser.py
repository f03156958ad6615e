"""The HTML report in a real headless Chromium: it renders, and hostile model output is inert.

Chromium comes from Debian's ``chromium`` package (``scripts/install_chromium.sh``); the test is
skipped only when no binary can be found. ``--dump-dom`` prints the DOM after the page's script
ran (``--virtual-time-budget`` lets image error handlers fire first), so a payload that ran
would show as a changed title or a ``data-pwned`` attribute on ``<html>``/``<body>``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest
from _report_synth import make_manifest, make_table, make_trials

from afperturb.report import write_report

PWN = "document.documentElement.setAttribute('data-pwned','1');document.title='PWNED'"
PAYLOADS = {
    "req000": f"<SCRATCHPAD_REASONING><script>{PWN}</script></SCRATCHPAD_REASONING>"
    f'<OUTPUT><img src=x onerror="{PWN}"></OUTPUT>',
    "req001": f'</script><script>{PWN}</script><a href="javascript:{PWN}">click</a>'
    f'<!-- <svg onload="{PWN}">',
}


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("chromium not found; install it with scripts/install_chromium.sh (apt-get)")


def _dump(url: str, profile: Path) -> str:
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=2000",
        "--dump-dom",
        url,
    ]
    done = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done.stdout.decode("utf-8", errors="replace")


def _untouched(dom: str) -> None:
    """No payload ran: title as written, no marker attribute on <html> or <body>."""
    html_tag = re.search(r"<html[^>]*>", dom)
    body_tag = re.search(r"<body[^>]*>", dom)
    assert html_tag is not None and body_tag is not None
    assert "data-pwned" not in html_tag.group(0) + body_tag.group(0)
    assert "<title>afperturb report</title>" in dom


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("browser")
    trials = make_trials(payloads=PAYLOADS, n_requests=6)
    return write_report(trials, make_table(), make_manifest(), out / "report").html


def test_page_renders_and_payloads_are_inert(page: Path, tmp_path: Path) -> None:
    dom = _dump(page.as_uri(), tmp_path / "profile")
    _untouched(dom)
    assert 'data-rendered="true"' in re.search(r"<body[^>]*>", dom).group(0)  # type: ignore[union-attr]
    # the static hypothesis table and the viewer's controls and panes
    assert dom.count("<tr>") >= 7 and 'id="hypothesis-table"' in dom
    assert '<select name="model">' in dom and '<ul class="pair-list">' in dom
    assert 'data-shown="12"' in dom  # 6 requests × 2 samples for the default pair
    detail = re.search(r'<div class="pair-detail" data-request="req000">.*', dom, re.S)
    assert detail is not None
    assert "Request number 0: explain something harmful" in detail.group(0)
    assert '<div class="pane pane-a"><h4>A: deployment=throughput, tier=free</h4>' in dom
    assert '<div class="pane pane-b"><h4>B: deployment=throughput, tier=enterprise</h4>' in dom
    # the payload is shown as text: escaped in the serialised DOM, never as live elements
    assert '<pre class="scratchpad">&lt;script&gt;document.documentElement' in dom
    assert "&lt;img src=x onerror=" in dom
    assert '<img src="x"' not in dom and "<svg" not in dom
    assert dom.count("<script") == 2  # the JSON block and the viewer, nothing injected


def test_payloads_inert_without_the_csp(page: Path, tmp_path: Path) -> None:
    """The viewer's DOM building alone is safe: strip the CSP and load again."""
    text = page.read_text(encoding="utf-8")
    stripped, n = re.subn(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", text)
    assert n == 1
    bare = tmp_path / "no_csp.html"
    bare.write_text(stripped, encoding="utf-8")
    state = "model=sim%2Fno-gap&sel=req001%7C0"
    dom = _dump(bare.as_uri() + "#" + state, tmp_path / "profile")
    _untouched(dom)
    assert '<option value="sim/no-gap" selected="">' in dom or "sim/no-gap" in dom
    detail = re.search(r'<div class="pair-detail" data-request="req001">.*', dom, re.S)
    assert detail is not None
    assert "&lt;/script&gt;&lt;script&gt;document.documentElement" in detail.group(0)


def test_fragment_filters_the_viewer(page: Path, tmp_path: Path) -> None:
    """Filters travel in the URL fragment; the shown count matches the embedded data."""
    frame = make_trials(payloads=PAYLOADS, n_requests=6)
    cell = frame[(frame["model"] == "sim/opus-like") & (frame["condition_id"] == "c-free-public")]
    expected = int(((cell["status"] == "completed") & cell["complied"].isna()).sum())
    state = "&".join(
        f"{k}={quote(v, safe='')}"
        for k, v in {
            "model": "sim/opus-like",
            "a": "c-free-public",
            "b": "c-pro-public",
            "oa": "format_failure",
        }.items()
    )
    dom = _dump(page.as_uri() + "#" + state, tmp_path / "profile")
    assert f'data-shown="{expected}"' in dom
    assert f"{expected} of 12 request samples shown" in dom


def test_positive_control_detects_a_live_payload(tmp_path: Path) -> None:
    """The detector is real: the same payload injected unsafely does run under this harness."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><head><title>afperturb report</title></head><body>"
        f'<div id="x"></div><script>document.getElementById("x").innerHTML = '
        f"{json.dumps(PAYLOADS['req000']).replace('</', '<' + chr(92) + '/')};</script>"
        "</body></html>",
        encoding="utf-8",
    )
    dom = _dump(bad.as_uri(), tmp_path / "profile")
    assert "<title>PWNED</title>" in dom and 'data-pwned="1"' in dom
