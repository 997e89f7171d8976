"""``slt-probe run SPEC [--set key=value ...] [--out DIR] [--name NAME] [--resume] [--no-report]``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run",
        help="train a model from a spec with the λ̂ probe attached",
        description="Train the model a TOML spec describes, estimating λ̂ along the way; writes "
        "runs/<name>/ (config.json, metrics.jsonl, llc.jsonl, checkpoints/, summary.json) and an "
        "HTML report.",
    )
    p.add_argument("spec", help="run spec, e.g. models/omnigrok_mnist.toml")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec field (TOML literal), e.g. --set train.steps=2000 (repeatable)",
    )
    p.add_argument(
        "--out", default="runs", help="parent folder of the run directory (default runs)"
    )
    p.add_argument("--name", default=None, help="run name (default: the spec's name)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from slt_probe.runs.spec import SpecError
    from slt_probe.runs.train import run_spec

    try:
        summary = run_spec(
            args.spec,
            overrides=args.overrides,
            out_dir=args.out,
            name=args.name,
            resume=args.resume,
            progress=not args.quiet,
            report=not args.no_report,
        )
    except (SpecError, FileNotFoundError, FileExistsError) as exc:
        print(f"slt-probe run: error: {exc}", file=sys.stderr)
        return 2
    final = summary["final"]
    run_dir = Path(args.out) / summary["name"]
    print(f"run directory: {run_dir}")
    print(
        "final: "
        + json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in final.items()})
    )
    frac = summary.get("probe_overhead_fraction")
    print(
        f"wall time {summary['wall_time_s']:.1f} s, probe {summary['probe_time_s']:.1f} s"
        + (f" ({100 * frac:.0f} %)" if frac is not None else "")
    )
    if summary.get("report"):
        print(f"report: {summary['report']}")
    return 0
