"""``afperturb report STORE --out DIR``: the pieces the CLI registers (argument setup, runner).

Kept here so the report owns its command line; ``afperturb.cli`` wires it with
``command("report", REPORT_HELP, configure_report, REPORT_EPILOG)(run_report)``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from afperturb.errors import StoreError
from afperturb.report._write import report_from_store

REPORT_HELP = "write report.md, figures/*.png and a self-contained report.html for a store"
REPORT_EPILOG = """examples:
  afperturb report runs.sqlite --out report/
  afperturb report runs.sqlite --out report/ --pair COND_A COND_B --max-requests 50

Open report/report.html in any browser: no server and no network are needed.
"""


def configure_report(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``afperturb report``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("store", type=Path, help="the SQLite store of a sweep")
    parser.add_argument("--out", type=Path, default=Path("report"), help="output directory")
    parser.add_argument(
        "--pair",
        nargs=2,
        action="append",
        metavar=("A", "B"),
        help="condition ids to compare (repeatable); default: trained vs unmonitored pairs",
    )
    parser.add_argument(
        "--max-requests",
        type=int,
        default=200,
        help="requests per model embedded in the transcript viewer (0: all)",
    )
    parser.add_argument("--title", default="afperturb report", help="page title")


def run_report(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Write the report; prints where it went and which figures were skipped and why."""
    stream = out or sys.stdout
    store: Path = args.store
    if not store.exists():
        raise StoreError(f"no store at {str(store)!r}")
    paths = report_from_store(
        store,
        args.out,
        pairs=[tuple(p) for p in args.pair] if args.pair else None,
        max_requests=args.max_requests or None,
        title=args.title,
    )
    print(f"wrote {paths.html}", file=stream)
    print(f"wrote {paths.markdown}", file=stream)
    for name, path in paths.figures.items():
        print(f"wrote {path} ({name})", file=stream)
    for name, reason in paths.skipped_figures.items():
        print(f"skipped figure {name}: {reason}", file=stream)
    return 0


__all__ = ["REPORT_EPILOG", "REPORT_HELP", "configure_report", "run_report"]
