"""``slt-probe run SPEC [--set key=value ...] [--out DIR] [--name NAME] [--resume] [--no-report]``
and ``slt-probe llc RUN_DIR [--steps ...] [--like-probe] [estimator options]`` (λ̂ again at a run's
checkpoints, :mod:`slt_probe.runs.posthoc`).

Both accept ``--model-file PATH.py`` and ``--allow-arch module:Class``: the model classes the user
allows besides slt_probe's own (a run directory's config.json never allows one; see
:mod:`slt_probe.runs.arch`). Choice lists are read from the registries (kernels, backends).
The HTML report of a run is written here, after the run returns.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from slt_probe.estimators.arguments import samplers
from slt_probe.estimators.llc import BACKENDS
from slt_probe.files import FolderLock, LockedError, check_safe_name
from slt_probe.reports import write_run_report
from slt_probe.runs.posthoc import POSTHOC_FILE, estimate_checkpoints
from slt_probe.runs.rundir import RunDir, RunDirError
from slt_probe.runs.runner import run_spec
from slt_probe.runs.spec import SpecError

#: Errors of bad input or a busy/broken run directory: one line on stderr and exit code 2.
RUN_ERRORS = (SpecError, FileNotFoundError, FileExistsError, LockedError, RunDirError)
#: ``slt-probe llc`` also reports the estimator options' own ValueError/TypeError that way.
LLC_ERRORS = (*RUN_ERRORS, ValueError, TypeError)


def _run_name(text: str) -> str:
    try:
        return check_safe_name(text, "--name")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _allow_options(parser) -> None:
    parser.add_argument(
        "--model-file",
        dest="model_files",
        action="append",
        default=[],
        metavar="PATH.py",
        help="allow the model classes defined in this file (repeatable)",
    )
    parser.add_argument(
        "--allow-arch",
        dest="allow_archs",
        action="append",
        default=[],
        metavar="MODULE:CLASS",
        help="allow this importable model class (repeatable)",
    )


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
    p.add_argument(
        "--name", type=_run_name, default=None, help="run name (default: the spec's name)"
    )
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--lock-timeout", type=float, default=0.0, help="seconds to wait for another writer"
    )
    _allow_options(p)
    p.set_defaults(func=main)

    q = subparsers.add_parser(
        "llc",
        help="estimate λ̂ again at a run's checkpoints, with other settings",
        description="Re-estimate λ̂ at the checkpoints of a run directory (default: the steps its "
        "probe measured) with estimate_llc's defaults, or the run's probe settings "
        "(--like-probe), overridden by the options given. Rows are appended to "
        "RUN_DIR/llc_posthoc.jsonl as each checkpoint finishes; rerunning the same command "
        "skips the steps already done.",
    )
    q.add_argument("run_dir", help="a run directory, e.g. runs/omnigrok_mnist")
    q.add_argument("--steps", type=int, nargs="+", help="checkpoint steps (default: the probe's)")
    q.add_argument(
        "--like-probe", action="store_true", help="start from the run's own probe settings"
    )
    q.add_argument("--num-chains", type=int)
    q.add_argument("--num-draws", type=int)
    q.add_argument("--num-burnin", type=int)
    q.add_argument("--step-size", type=_step_size, help='a positive float, or "auto"')
    q.add_argument("--localization", type=float, help="γ")
    q.add_argument("--nbeta", type=float, help="nβ (default n / log n)")
    q.add_argument("--batch-size", type=int)
    q.add_argument("--sampler", choices=samplers())
    q.add_argument("--backend", choices=list(BACKENDS))
    q.add_argument("--compute-dtype", help="e.g. bfloat16 (checked as estimate_llc checks it)")
    q.add_argument("--seed", type=int, help="step t is estimated with seed + t (default 0)")
    q.add_argument("--out", help="JSONL file for the rows (default RUN_DIR/llc_posthoc.jsonl)")
    q.add_argument(
        "--groups",
        nargs="+",
        choices=["heads", "layers"],
        help="also λ̂ of every attention head / layer, batched (rows in "
        "RUN_DIR/llc_groups_posthoc.jsonl)",
    )
    _allow_options(q)
    q.set_defaults(func=llc_main)


def _step_size(text: str):
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'step size must be a number or "auto", got {text!r}'
        ) from None


_ESTIMATOR_OPTIONS = (
    "num_chains",
    "num_draws",
    "num_burnin",
    "step_size",
    "localization",
    "nbeta",
    "batch_size",
    "sampler",
    "backend",
    "compute_dtype",
    "seed",
)


def llc_main(args: argparse.Namespace) -> int:
    options = {k: getattr(args, k) for k in _ESTIMATOR_OPTIONS if getattr(args, k) is not None}

    def show(row: dict) -> None:
        probe = row["probe_llc_mean"]
        stiff = row["end_stiffness"]
        print(
            f"step {row['step']:>8}: λ̂ = {_num(row['llc_mean']):.4g} ± {_num(row['llc_stderr']):.2g}"
            + (f" (probe {probe:.4g})" if probe is not None else "")
            + f", ε = {row['step_size']:.3g}, R-hat {row['r_hat'] or float('nan'):.3f}"
            + (f", ε·a at end {stiff:.2g}" if stiff is not None else "")
            + (f", virial {row['virial_ratio']:.3f}" if row.get("virial_ratio") is not None else "")
            + f", {row['wall_time_s']:.1f} s"
            + (f", {len(row['warnings'])} warning(s)" if row["warnings"] else ""),
            flush=True,
        )

    try:
        rows = estimate_checkpoints(
            args.run_dir,
            args.steps,
            like_probe=args.like_probe,
            out=args.out,
            on_row=show,
            model_files=args.model_files,
            allow_archs=args.allow_archs,
            groups=args.groups,
            **options,
        )
    except LLC_ERRORS as exc:
        print(f"slt-probe llc: error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(rows)} checkpoint(s); rows in {args.out or Path(args.run_dir) / POSTHOC_FILE}")
    return 0


def _num(value) -> float:
    """A row's number for printing (JSON null, e.g. no spread with one chain, prints as nan)."""
    return float("nan") if value is None else value


def _write_report(run_dir: Path, summary: dict) -> None:
    """The run's HTML report, its path recorded in summary.json (under the run's lock)."""
    try:
        path = write_run_report(run_dir)
    except OSError as exc:
        print(f"slt-probe run: no report: {exc}", file=sys.stderr)
        return
    summary["report"] = str(path) if path is not None else None
    with FolderLock(run_dir, timeout=10.0):
        RunDir(run_dir).write_summary(summary)


def main(args: argparse.Namespace) -> int:
    try:
        summary = run_spec(
            args.spec,
            overrides=args.overrides,
            out_dir=args.out,
            name=args.name,
            resume=args.resume,
            progress=not args.quiet,
            model_files=args.model_files,
            allow_archs=args.allow_archs,
            lock_timeout=args.lock_timeout,
        )
    except RUN_ERRORS as exc:
        print(f"slt-probe run: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only folder
        print(f"slt-probe run: error: {exc}", file=sys.stderr)
        return 1
    run_dir = Path(args.out) / summary["name"]
    if not args.no_report:
        _write_report(run_dir, summary)
    final = summary["final"]
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
