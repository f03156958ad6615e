"""``write_report``: report.md, figures/*.png and one self-contained report.html.

The report reads plain data (a trial frame, a hypothesis table, a manifest dict) so it can be
rebuilt offline from any store, and never imports the sweep or the models. Loading those inputs
from a store is a :class:`ReportSource`, a callable the CLI or the lead wires in.
"""

from __future__ import annotations

import contextlib
import html
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from afperturb.report._data import FrameLike, PairsArg
from afperturb.report._summary import build_report_data
from afperturb.report.figures import write_figures
from afperturb.report.html import render_html
from afperturb.report.markdown import render_markdown


@dataclass(frozen=True)
class ReportPaths:
    """Where :func:`write_report` put things, and which figures it could not draw."""

    out_dir: Path
    markdown: Path
    html: Path
    figures: dict[str, Path] = field(default_factory=dict)
    skipped_figures: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"<ReportPaths {self.html} figures={len(self.figures)} "
            f"skipped={len(self.skipped_figures)}>"
        )

    def to_frame(self) -> pd.DataFrame:
        """One row per file written (kind, name, path) plus skipped figures with the reason."""
        rows: list[dict[str, str]] = [
            {"kind": "markdown", "name": "report", "path": str(self.markdown), "note": ""},
            {"kind": "html", "name": "report", "path": str(self.html), "note": ""},
        ]
        rows += [
            {"kind": "figure", "name": n, "path": str(p), "note": ""}
            for n, p in self.figures.items()
        ]
        rows += [
            {"kind": "figure", "name": n, "path": "", "note": reason}
            for n, reason in self.skipped_figures.items()
        ]
        return pd.DataFrame(rows, columns=["kind", "name", "path", "note"])

    def to_markdown(self) -> str:
        """The files as a markdown list."""
        lines = [f"- {r['kind']} `{r['name']}`: {r['path'] or r['note']}" for r in self._rows()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        link = html.escape(self.html.as_uri() if self.html.is_absolute() else str(self.html))
        return (
            f'<p>afperturb report: <a href="{link}">{html.escape(str(self.html))}</a>, '
            f"{len(self.figures)} figures ({len(self.skipped_figures)} skipped)</p>"
        )

    def _rows(self) -> list[dict[str, Any]]:
        return [{str(k): v for k, v in r.items()} for r in self.to_frame().to_dict("records")]


def write_report(
    trials: FrameLike,
    table: FrameLike | None,
    manifest: Mapping[str, Any] | None,
    out_dir: str | Path,
    *,
    pairs: PairsArg = None,
    max_requests: int | None = 200,
    title: str = "afperturb report",
) -> ReportPaths:
    """Write ``report.md``, ``figures/*.png`` and a self-contained ``report.html``.

    Args:
        trials: ``SweepResult.to_frame()`` columns plus ``text`` (the reply) and optionally
            ``request_text``, ``af_quotes``, ``af_score``, ``partial``, ``motive``; or any
            object with ``to_frame()``.
        table: ``HypothesisTable.to_frame()`` columns, an object with ``to_frame()``, or None.
        manifest: the run manifest (JSON-able), shown verbatim.
        out_dir: created if missing; existing report files are replaced, each atomically (a
            write that fails, e.g. on a full disk, leaves the previous file as it was).
        pairs: condition-id pairs (a, b) for the gap table, the bars and the viewer's presets;
            default: per model, trained vs unmonitored conditions one axis apart.
        max_requests: requests per model embedded in the viewer (None: all).
        title: page and document title.

    Returns:
        The paths written and the figures skipped with the reason (e.g. matplotlib missing).

    Raises:
        DesignError: a required trial column is missing or a pair names an unknown condition.
        InsufficientDataError: the trials table has no rows.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = build_report_data(trials, table, manifest, pairs)
    table_or_none = None if data.table.empty else data.table
    figs = write_figures(data.trials, table_or_none, out / "figures", pairs=pairs)
    relative = {name: f"figures/{path.name}" for name, path in figs.written.items()}
    markdown_path = out / "report.md"
    html_path = out / "report.html"
    # Both rendered before either is written: a rendering error leaves both previous files.
    text = render_markdown(data, relative, figs.skipped)
    page = render_html(data, figs.written, figs.skipped, title=title, max_requests=max_requests)
    write_atomic(markdown_path, text)
    write_atomic(html_path, page)
    return ReportPaths(
        out_dir=out,
        markdown=markdown_path,
        html=html_path,
        figures=dict(figs.written),
        skipped_figures=dict(figs.skipped),
    )


def write_atomic(path: Path, text: str | bytes) -> None:
    """Replace ``path`` with ``text`` (UTF-8; or ``bytes`` as they are) all at once, or not.

    The text goes to a temporary file in the same directory (so the rename never crosses a
    file system), is fsynced, and then :func:`os.replace` swaps it in: readers see the old file
    or the new one, never part of one. On any failure (``ENOSPC`` mid-write, an interrupt) the
    temporary file is removed and the error propagates. A new file gets the usual permissions
    (0666 less the umask); an existing one keeps its own.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = None
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        data = text.encode("utf-8") if isinstance(text, str) else text
        with open(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable too (POSIX); a no-op where directories cannot be opened."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class ReportSource(Protocol):
    """Loads the three report inputs (trials with text, hypothesis table, manifest) from a store."""

    def __call__(
        self, store_path: Path, /
    ) -> tuple[FrameLike, FrameLike | None, Mapping[str, Any]]:
        """Return (trials, table, manifest) for the store at ``store_path``."""
        ...


def report_from_store(
    store_path: str | Path,
    out_dir: str | Path,
    *,
    load: ReportSource | None = None,
    **options: Any,
) -> ReportPaths:
    """Write the report of a stored run; ``load`` reads the store (default: the built-in one).

    Extra keyword arguments go to :func:`write_report`.
    """
    if load is None:
        from afperturb.report._store import load_store

        load = load_store
    trials, table, manifest = load(Path(store_path))
    return write_report(trials, table, manifest, out_dir, **options)


__all__ = ["ReportPaths", "ReportSource", "report_from_store", "write_report"]
