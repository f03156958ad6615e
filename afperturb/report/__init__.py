"""Reports people look at: markdown, the papers' figures and a static HTML transcript viewer.

``write_report(trials, table, manifest, out_dir)`` writes ``report.md``, ``figures/*.png``
(with the ``plot`` extra) and one self-contained ``report.html`` with the hypothesis table, the
figures, the run manifest and a paired transcript viewer. Inputs are plain tables (the
``SweepResult.to_frame()`` columns plus the reply ``text``; ``HypothesisTable.to_frame()``), so
a report can be rebuilt offline from any store.

Example:
    >>> import afperturb.report as rep
    >>> sorted(rep.__all__)[:3]
    ['FigureFiles', 'ReportPaths', 'ReportSource']
"""

from afperturb.report._write import ReportPaths, ReportSource, report_from_store, write_report
from afperturb.report.figures import (
    FigureFiles,
    compliance_bars,
    forest_plot,
    goal_guarding_dose_response,
    threshold_sensitivity,
    write_figures,
)

__all__ = [
    "FigureFiles",
    "ReportPaths",
    "ReportSource",
    "compliance_bars",
    "forest_plot",
    "goal_guarding_dose_response",
    "report_from_store",
    "threshold_sensitivity",
    "write_figures",
    "write_report",
]
