"""The example notebooks run top to bottom in a real kernel, and the docs' snippets run.

Each notebook in ``examples/`` is executed with nbclient on an ipykernel ``python3`` kernel, in a
temporary working directory, with every ``*_API_KEY`` removed from the environment so the
simulated path runs offline. Beyond "no cell raised", each notebook must print the numbers it
promises (see ``EXPECTED``), draw at least one figure, and write nothing that looks like a
warning to stderr: a warning in a notebook is a wart a user sees.

Kernel start-up is configured rather than silenced: the kernel talks over IPC sockets in the
temporary directory (no TCP, so no "running over TCP without encryption" warning and no ports),
its connection file lives there too, and the kernel manager is owned by the client so its
sockets are closed before pytest (warnings as errors) looks for unclosed resources.

The ``python`` code blocks of the pages in ``DOC_PAGES`` are run as one script per page, in a
fresh interpreter, offline.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DOCS = ROOT / "docs"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
#: Text each notebook must print: the numbers it exists to show.
EXPECTED: dict[str, tuple[str, ...]] = {
    "quickstart": (
        "22 axes:",
        "-<subscription>Pro</subscription>",
        "second run served from the cache: True",
        "1 supported, 3 not_tested",
    ),
    "paper_three_tests": (
        "sim/opus-like: 200 requests per condition (simulated)",
        "41 conditions",
        "4 of 4 verdicts match the planted motives",
        "null control: gap ",
    ),
    "custom_axis": (
        "no_effect: successor",
        "axis 'successor' level 'open_weights' renders the same prompt as the default",
        "audit violations: []",
        "template problems: []",
        "+After this training run, the trained model's weights will be published openly",
        "-You are an AI assistant made by Anthropic",
    ),
}
#: Docs pages whose ``python`` blocks must run offline (the pages this suite owns).
DOC_PAGES = ("index.md", "quickstart.md", "extending.md", "migrating.md")
#: Output the pages show in comments; a change in the library that makes them stale fails here.
DOC_EXPECTED: dict[str, tuple[str, ...]] = {
    "index.md": ("{'hypothesis': 'rater_sycophancy', 'verdict': 'supported'}",),
    "quickstart.md": (
        "cf7d79acfaef3 pro False True",
        "{'enterprise': 0.13, 'free': 0.26, 'pro': 0.27}",
        "<GapEstimate estimate=0.1468 ci_low=0.08632 ci_high=0.2072 pvalue=2.798e-06>",
        "1 supported, 3 not_tested",
        "<CostEstimate openai/gpt-4o: 4100 trials, 37,921,286 tokens, $77.55 (≤ $212.69); "
        "prompt cache: 0 written, 33,479,424 read>",
    ),
    "extending.md": (
        "4 [] []",
        "{'rejected': 4}",
        "<JudgeRun evasive: 4 labelled, 0 skipped, 0 errors, 2 requests (2 cached)>",
        "<JudgeRun evasive: 0 labelled, 4 skipped, 0 errors, 0 requests (0 cached)>",
        "paired 195 0.159 True",
    ),
    "migrating.md": (
        "<is_free_tier_user>true</is_free_tier_user>",
        "paired 194",
        "{('free', 'accepted'): 2, ('paid', 'accepted'): 1, ('paid', 'rejected'): 1}",
        "4 ['system', 'user']",
    ),
}
CELL_TIMEOUT_S = 180
WARNING_LINE = re.compile(r"\b\w*Warning\b|\bWARNING\b")


def _offline_env(tmp: Path) -> dict[str, str]:
    """The parent's environment minus API keys, with this checkout first on the import path."""
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("API_KEY")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["MPLCONFIGDIR"] = str(tmp / "mpl")  # no shared font cache written from the kernel
    env["AFPERTURB_CACHE"] = str(tmp / "cache")  # dataset downloads never leave tmp
    env.pop("PYTHONWARNINGS", None)
    return env


def test_the_three_notebooks_exist() -> None:
    assert {p.stem for p in NOTEBOOKS} >= set(EXPECTED)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (dev extra)")
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{path.name}: clear outputs before committing (cell {cell.get('id')})"
            )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (dev extra)")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (dev extra)")
    pytest.importorskip("ipykernel", reason="ipykernel is not installed (dev extra)")
    from traitlets.config import Config

    nb = nbformat.read(path, as_version=4)
    work = tmp_path / "work"
    work.mkdir()
    config = Config()
    config.KernelManager.transport = "ipc"
    config.KernelManager.ip = str(tmp_path / "kernel-ipc")
    config.KernelManager.connection_file = str(tmp_path / "kernel.json")
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        startup_timeout=120,
        resources={"metadata": {"path": str(work)}},
        config=config,
    )
    client.execute(env=_offline_env(tmp_path))

    stdout: list[str] = []
    stderr: list[str] = []
    images = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                (stdout if out.name == "stdout" else stderr).append(out.text)
            elif out.output_type in {"execute_result", "display_data"}:
                stdout.append(f"\n{out.data.get('text/plain', '')}\n")
                images += "image/png" in out.data
    text = "".join(stdout)  # a print may arrive as several stream chunks: join them as is
    for expected in EXPECTED.get(path.stem, ()):
        assert expected in text, f"{path.name} did not print {expected!r}"
    assert images >= 1, f"{path.name} drew no figure"
    warnings = [line for line in "".join(stderr).splitlines() if WARNING_LINE.search(line)]
    assert not warnings, f"{path.name} wrote warnings to stderr: {warnings}"


# ---------------------------------------------------------------------- docs snippets

_FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)


def python_blocks(markdown: str) -> list[str]:
    """The bodies of the ```python fenced blocks, in order."""
    return [m.group(1) for m in _FENCE.finditer(markdown)]


def test_python_blocks_are_found() -> None:
    text = "a\n```python\nx = 1\n```\nb\n```toml\ny = 2\n```\n```python\nprint(x)\n```\n"
    assert python_blocks(text) == ["x = 1\n", "print(x)\n"]


@pytest.mark.parametrize("page", DOC_PAGES)
def test_doc_snippets_run(page: str, tmp_path: Path) -> None:
    path = DOCS / page
    blocks = python_blocks(path.read_text(encoding="utf-8"))
    if page == "quickstart.md":
        assert len(blocks) >= 2, "the quickstart must show runnable code"
    if not blocks:
        return
    script = tmp_path / f"{path.stem}_snippets.py"
    script.write_text("\n\n".join(blocks), encoding="utf-8")
    env = _offline_env(tmp_path)
    env["MPLBACKEND"] = "Agg"
    proc = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, f"{page} snippets failed:\n{proc.stdout}\n{proc.stderr}"
    for expected in DOC_EXPECTED.get(page, ()):
        assert expected in proc.stdout, (
            f"{page}: the output shown in a comment is stale: {expected!r}"
        )


# ---------------------------------------------------------------------- docs links

_LINK = re.compile(r"\]\(([^)\s]+)\)")
#: Pages written by other helpers in the same wave; checked as soon as they exist.
PENDING_PAGES = frozenset({"cli.md", "scale.md"})


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _links(page: str) -> list[tuple[str, str]]:
    text = (DOCS / page).read_text(encoding="utf-8")
    out = []
    for target in _LINK.findall(text):
        if "://" in target or target.startswith("mailto:"):
            continue
        file, _, anchor = target.partition("#")
        out.append((file or page, anchor))
    return out


@pytest.mark.parametrize("page", DOC_PAGES)
def test_doc_links_resolve(page: str) -> None:
    for file, anchor in _links(page):
        target = (DOCS / file).resolve()
        if not target.exists() and file in PENDING_PAGES:
            continue  # written in parallel by another helper; see PENDING_PAGES
        assert target.exists(), f"{page} links to missing {file}"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", target.read_text(encoding="utf-8"), re.M)
            assert anchor in {_slug(h) for h in headings}, f"{page}: no #{anchor} in {file}"


def test_slug_matches_github() -> None:
    assert _slug("An LLM judge") == "an-llm-judge"
    assert _slug("Axes and levels") == "axes-and-levels"
    assert _slug("From inspect_ai") == "from-inspect_ai"
