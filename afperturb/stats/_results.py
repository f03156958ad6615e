"""Shared behaviour of the statistics result objects.

Every result is a frozen dataclass that reads well in three places: a terminal (one-line
``repr``), a notebook (``_repr_html_``) and a paper (``to_markdown()``). ``to_frame()`` gives
one flat row with snake_case columns so results from many calls concatenate into a tidy table.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["ResultMixin", "format_markdown", "format_number"]


def format_number(value: object) -> str:
    """Format a cell for markdown: 4 significant digits for floats, '' for missing values."""
    if value is None:
        return ""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, float | np.floating):
        if math.isnan(float(value)):
            return ""
        return f"{float(value):.4g}"
    return str(value)


def format_markdown(frame: pd.DataFrame) -> str:
    """Render a DataFrame as a GitHub pipe table without the optional ``tabulate`` package."""
    columns = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in frame.itertuples(index=False):
        cells = [format_number(v).replace("|", "\\|") for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _scalar(value: object) -> bool:
    return value is None or isinstance(value, int | float | str | bool | np.generic)


class ResultMixin:
    """Mixin giving a frozen result dataclass its repr, HTML, frame and markdown views.

    Subclasses list in ``_repr_fields`` the few fields a one-line repr should show.
    """

    _repr_fields: tuple[str, ...] = ("estimate", "ci_low", "ci_high", "pvalue")

    def _row(self) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.name.startswith("_") or not f.repr:
                continue
            value = getattr(self, f.name)
            if _scalar(value):
                row[f.name] = value.item() if isinstance(value, np.generic) else value
        return row

    def to_frame(self) -> pd.DataFrame:
        """One row with every scalar field as a snake_case column."""
        return pd.DataFrame([self._row()])

    def to_markdown(self) -> str:
        """The one-row table as a GitHub markdown table."""
        return format_markdown(self.to_frame())

    def _repr_html_(self) -> str:
        return self.to_frame().to_html(index=False)

    def __repr__(self) -> str:
        parts = []
        for name in self._repr_fields:
            parts.append(f"{name}={format_number(getattr(self, name))}")
        return f"<{type(self).__name__} " + " ".join(parts) + ">"
