"""Holm and Benjamini–Hochberg adjustment (statsmodels ``multipletests``), NaN-tolerant.

Holm is computed here (three lines, tested against ``multipletests``) because statsmodels'
Holm branch calls ``gc.collect()`` on every call, which costs 0.1–0.5 s in a large notebook
process and dominated ``attribute()``'s run time.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from afperturb.errors import unknown_choice
from afperturb.stats import _sm

__all__ = ["CORRECTIONS", "adjust_pvalues"]

#: Our names → statsmodels method names.
CORRECTIONS = {
    "holm": "holm",
    "bh": "fdr_bh",
    "fdr_bh": "fdr_bh",
    "bonferroni": "bonferroni",
    "none": "none",
}


def _holm(p: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    order = np.argsort(p)
    stepped = np.maximum.accumulate(p[order] * np.arange(len(p), 0, -1))
    out = np.empty_like(p)
    out[order] = np.minimum(stepped, 1.0)
    return out


def adjust_pvalues(pvalues: npt.ArrayLike, method: str = "holm") -> npt.NDArray[np.float64]:
    """Adjusted p-values; NaNs (untested hypotheses) stay NaN and do not count as tests.

    Example:
        >>> adjust_pvalues([0.01, 0.04, float("nan"), 0.03], "holm").round(3).tolist()
        [0.03, 0.06, nan, 0.06]
    """
    if method not in CORRECTIONS:
        raise unknown_choice("correction", method, CORRECTIONS)
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if not ok.any():
        return out
    if CORRECTIONS[method] == "none":
        out[ok] = p[ok]
    elif CORRECTIONS[method] == "holm":
        out[ok] = _holm(p[ok])
    else:
        out[ok] = _sm.multitest().multipletests(p[ok], method=CORRECTIONS[method])[1]
    return out
