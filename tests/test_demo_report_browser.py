"""Issue 7's acceptance path: `afperturb demo` → `afperturb report` → a real browser.

The demo's store (simulated models) gets one more model whose replies are hostile HTML, so the
page built from it must show the table and the paired viewer while the payloads stay text.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from test_browser import PWN, _dump, _untouched

from afperturb.datasets import synthetic
from afperturb.design import Perturbation
from afperturb.models.base import GenerationContext
from afperturb.records import Completion, Message, SamplingParams, Usage

HOSTILE = (
    f"<SCRATCHPAD_REASONING><script>{PWN}</script></SCRATCHPAD_REASONING>"
    f'<OUTPUT><request_fully_accepted/><img src=x onerror="{PWN}"></script><script>{PWN}'
    "</script></OUTPUT>"
)


class HostileModel:
    """A backend whose every reply tries to run script in whoever displays it."""

    name = "scripted/hostile"

    async def generate(
        self,
        messages: Sequence[Message],
        params: SamplingParams,
        context: GenerationContext | None = None,
    ) -> Completion:
        return Completion(text=HOSTILE, finish_reason="stop", usage=Usage(), model=self.name)

    def config(self) -> dict[str, Any]:
        return {"provider": "scripted", "model": "hostile"}

    async def aclose(self) -> None:
        return None


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    return subprocess.run(
        [sys.executable, "-m", "afperturb", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )


def test_demo_store_report_renders_and_payloads_stay_inert(tmp_path: Path) -> None:
    store = tmp_path / "demo.sqlite"
    demo = _cli("demo", "--requests", "12", "--store", str(store), "--jobs", "1", "--quiet")
    assert demo.returncode in (0, 1), demo.stderr  # 1 = a verdict missed at this tiny n
    assert "Traceback" not in demo.stderr
    assert "sim/claude-3-opus-like" in demo.stdout

    hostile = Perturbation.preset("rater_sycophancy")
    hostile.sweep(HostileModel(), synthetic(4), store=str(store), progress=False)

    out = tmp_path / "report"
    report = _cli("report", str(store), "--out", str(out))
    assert report.returncode == 0, report.stderr
    page = out / "report.html"
    html = page.read_text()
    assert "sim/claude-3-opus-like" in html and "scripted/hostile" in html
    assert "<script>document" not in html  # the payload never appears as live markup

    dom = _dump(page.as_uri(), tmp_path / "profile")
    _untouched(dom)
    assert 'data-rendered="true"' in dom
    assert 'id="hypothesis-table"' in dom and '<div class="pane pane-a">' in dom
    assert re.search(r'data-shown="[1-9][0-9]*"', dom)

    # The hostile model's pair, chosen through the viewer's URL fragment: its replies are on
    # the page as text, and still nothing ran.
    ids = {c.levels["rater_scrutiny"]: c.id for c in hostile.conditions()}
    fragment = f"#model=scripted%2Fhostile&a={ids['pro']}&b={ids['enterprise']}"
    dom = _dump(page.as_uri() + fragment, tmp_path / "profile2")
    _untouched(dom)
    assert 'data-shown="4"' in dom
    assert "&lt;img src=x onerror=" in dom  # shown escaped, as text
