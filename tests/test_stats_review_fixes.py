"""Statistics defects from the review (issue 13, item 6): each test fails without its fix."""

from __future__ import annotations

import pytest
from scipy import stats

import afperturb.stats as st

# ---------------------------------------------------------------- McNemar mid-p


@pytest.mark.parametrize(
    ("b", "c", "hand"),
    [
        (1, 1, 1.0),  # b = c: 2·P(X < 1) + P(X = 1) = 2·¼ + ½
        (3, 3, 1.0),  # b = c: the two tails and the middle make up the whole distribution
        (0, 0, 1.0),  # no discordant pairs: no evidence either way
        (5, 2, 37 / 128),  # 2·[P(X < 2) + ½·P(X = 2)] = 2·(8 + 10.5)/128, X ~ Binom(7, ½)
        (2, 5, 37 / 128),  # symmetric in b and c
        (0, 3, 1 / 8),  # 2·[0 + ½·⅛]
        (4, 1, 7 / 32),  # 2·[1/32 + ½·5/32]
        (6, 5, 793 / 1024),  # 2·[P(X < 5) + ½·P(X = 5)] = 2·(562 + 231)/2048, X ~ Binom(11, ½)
    ],
)
def test_mcnemar_midp_by_hand_and_scipy_binom(b: int, c: int, hand: float) -> None:
    r = st.mcnemar_table([[7, b], [c, 9]])
    n, m = b + c, min(b, c)
    # scipy.stats.binom: the two-sided mid-p of X ~ Binom(b + c, ½), capped at 1
    ref = min(1.0, 2 * (stats.binom.cdf(m - 1, n, 0.5) + 0.5 * stats.binom.pmf(m, n, 0.5)))
    assert r.pvalue_midp == pytest.approx(hand, abs=1e-12)
    assert r.pvalue_midp == pytest.approx(ref, abs=1e-12)
    assert r.pvalue_midp <= r.pvalue
