"""``slt-probe report RUN_DIR [--out DIR]``: the HTML report of a run (complete or partial)."""

from __future__ import annotations

import sys

from slt_probe.reports import write_run_report


def _report(args) -> int:
    try:
        path = write_run_report(args.run_dir, args.out)
    except FileNotFoundError as exc:
        print(f"slt-probe report: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


def register(sub) -> None:
    p = sub.add_parser("report", help="write the HTML report of a run directory")
    p.add_argument("run_dir", help="a run directory (runs/<name>)")
    p.add_argument("--out", default=None, help="output folder (default reports/<run dir name>)")
    p.set_defaults(func=_report)
