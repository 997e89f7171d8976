"""``slt-probe study run|worker|report``: run an Optuna study over training configurations.

    slt-probe study run studies/omnigrok_alpha.toml [--n-trials N] [--workers K]
                        [--storage URL] [--out DIR] [--report]
    slt-probe study worker studies/omnigrok_alpha.toml --storage URL [--out DIR]
    slt-probe study report studies/omnigrok_alpha.toml [--storage URL] [--out DIR]

``--storage`` defaults to the embedded journal file ``<out>/study.journal`` (several processes on
one host); pass ``postgresql://user@host:port/db`` to spread workers over machines. Watch either
with ``optuna-dashboard <storage>``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import optuna


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="study spec, e.g. studies/omnigrok_alpha.toml")
    p.add_argument(
        "--storage",
        default=None,
        help="journal file path or database URL (default: <out>/study.journal)",
    )
    p.add_argument("--out", default=None, help="output folder (default: runs/studies/<name>)")


def register(subparsers) -> None:
    study = subparsers.add_parser("study", help="Optuna studies over training configurations")
    sub = study.add_subparsers(dest="study_command", metavar="ACTION", required=True)
    run = sub.add_parser("run", help="run a study on this host with K worker processes")
    _add_common(run)
    run.add_argument("--n-trials", type=int, default=None, help="budget (default: the spec's)")
    run.add_argument("--workers", type=int, default=1, help="worker processes on this host")
    run.add_argument("--report", action="store_true", help="write the HTML study report")
    run.add_argument(
        "--report-dir", default=None, help="where the report goes (default: reports/<name>)"
    )
    run.set_defaults(func=_run)
    worker = sub.add_parser("worker", help="join an existing study as one more worker")
    _add_common(worker)
    worker.add_argument("--threads", type=int, default=None, help="torch threads for this worker")
    worker.add_argument(
        "--worker-index",
        type=int,
        default=None,
        help="offset of the sampler seed (default: from the process id)",
    )
    worker.set_defaults(func=_worker)
    report = sub.add_parser("report", help="write the study's HTML report")
    _add_common(report)
    report.add_argument(
        "--report-dir", default=None, help="where the report goes (default: reports/<name>)"
    )
    report.set_defaults(func=_report)


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")


def _run(args) -> int:
    from slt_probe.studies.study import run_study

    _setup_logging()
    study = run_study(
        args.spec,
        n_trials=args.n_trials,
        workers=args.workers,
        storage=args.storage,
        out_dir=args.out,
        report=args.report,
        report_dir=args.report_dir,
    )
    states = [t.state.name for t in study.trials]
    print(
        f"study {study.study_name}: "
        + ", ".join(f"{s} {states.count(s)}" for s in sorted(set(states)))
    )
    return 0


def _worker(args) -> int:
    import os

    from slt_probe.studies.study import join_study

    _setup_logging()
    index = args.worker_index if args.worker_index is not None else os.getpid()
    ran = join_study(
        args.spec, storage=args.storage, out_dir=args.out, worker_index=index, threads=args.threads
    )
    print(f"worker {os.getpid()}: {ran} trials")
    return 0


def _report(args) -> int:
    from slt_probe.studies.spec import load_study_spec
    from slt_probe.studies.storage import default_storage_url, open_storage
    from slt_probe.studies.study import default_out_dir, default_report_dir

    spec = load_study_spec(args.spec)
    out = Path(args.out) if args.out else default_out_dir(spec)
    url = args.storage or default_storage_url(out)
    try:
        from slt_probe.reports import write_study_report
    except ImportError:
        print("slt_probe.reports.write_study_report is not available yet", file=sys.stderr)
        return 1
    study = optuna.load_study(study_name=spec.name, storage=open_storage(url))
    path = write_study_report(study, args.report_dir or default_report_dir(spec))
    print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``study …`` without the package-wide CLI (``python -m slt_probe.studies.cli``)."""
    parser = argparse.ArgumentParser(prog="slt-probe")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
