"""Pure statistics for perturbation experiments: counts and frames in, result objects out.

Every function takes a trial DataFrame with the ``SweepResult.to_frame()`` columns (or any
object with ``.to_frame()``) and returns a frozen result with a one-line repr, ``to_frame()``,
``to_markdown()`` and ``_repr_html_``. Names follow scipy (``statistic``, ``pvalue``,
``confidence_interval(confidence_level=)``, ``alternative``); statsmodels does the work where
it already can. This package never imports models, sweep or store.

Example:
    >>> import afperturb.stats as st
    >>> f = st.simulate_frame("rater_sycophancy", "sycophant", n_requests=400)
    >>> pro, enterprise = {"rater_scrutiny": "pro"}, {"rater_scrutiny": "enterprise"}
    >>> gap = st.compliance_gap(f, treated=pro, control=enterprise)
    >>> gap.pvalue < 0.001
    True
"""

from afperturb.stats._frame import as_frame, build_cells
from afperturb.stats.equivalence import EquivalenceResult, equivalence_test, tost_from_gap
from afperturb.stats.gaps import GapEstimate, compliance_gap
from afperturb.stats.heterogeneity import HeterogeneityResult, gap_heterogeneity
from afperturb.stats.misclassification import CorrectedRate, correct_misclassification
from afperturb.stats.models import InteractionEstimate, interaction
from afperturb.stats.multiplicity import adjust_pvalues
from afperturb.stats.paired import McNemarResult, mcnemar, mcnemar_table
from afperturb.stats.power import (
    PowerResult,
    paired_correlation,
    power_gap,
    sample_size_gap,
    simulated_power,
)
from afperturb.stats.rates import RateEstimate, compliance_rate, rates_by, wilson_interval
from afperturb.stats.simulate import PROFILES, simulate_frame
from afperturb.stats.trend import TrendEstimate, gap_trend

__all__ = [
    "PROFILES",
    "CorrectedRate",
    "EquivalenceResult",
    "GapEstimate",
    "HeterogeneityResult",
    "InteractionEstimate",
    "McNemarResult",
    "PowerResult",
    "RateEstimate",
    "TrendEstimate",
    "adjust_pvalues",
    "as_frame",
    "build_cells",
    "compliance_gap",
    "compliance_rate",
    "correct_misclassification",
    "equivalence_test",
    "gap_heterogeneity",
    "gap_trend",
    "interaction",
    "mcnemar",
    "mcnemar_table",
    "paired_correlation",
    "power_gap",
    "rates_by",
    "sample_size_gap",
    "simulate_frame",
    "simulated_power",
    "tost_from_gap",
    "wilson_interval",
]
