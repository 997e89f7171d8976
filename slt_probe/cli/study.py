"""``slt-probe study run|worker|report``: run an Optuna study over training configurations.

    slt-probe study run studies/omnigrok_alpha.toml [--n-trials N] [--workers K]
                        [--storage URL] [--out DIR] [--report]
    slt-probe study worker studies/omnigrok_alpha.toml [--storage URL] [--out DIR]
    slt-probe study report studies/omnigrok_alpha.toml [--storage URL] [--out DIR]

The storage defaults to the embedded journal file ``<out>/study.journal`` (several processes on
one host); a database URL such as ``postgresql://user@host:port/db`` spreads workers over
machines. A URL carrying a password is better given in the environment variable
``SLT_PROBE_STORAGE`` than as ``--storage`` (a command line is visible to other users in ``ps``);
``--storage`` wins when both are set. Watch a study with ``optuna-dashboard <storage>``.

The HTML report is written here, after the study run returns, from the ``optuna.Study`` it
returns: running a study never depends on rendering one, and the reports package, which reads
studies, is never called back from them (that made a studies ↔ reports import cycle).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import optuna

from slt_probe.reports import write_study_report
from slt_probe.studies.spec import StudySpec, load_study_spec
from slt_probe.studies.storage import STORAGE_ENV, default_storage_url, open_storage
from slt_probe.studies.study import default_out_dir, join_study, run_study

STORAGE_HELP = (
    f"journal file path or database URL; default: ${STORAGE_ENV} if set, else <out>/study.journal. "
    f"Prefer ${STORAGE_ENV} for a URL with a password (a command line shows in ps)"
)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="study spec, e.g. studies/omnigrok_alpha.toml")
    p.add_argument("--storage", default=None, help=STORAGE_HELP)
    p.add_argument("--out", default=None, help="output folder (default: runs/studies/<name>)")


def register(subparsers) -> None:
    study = subparsers.add_parser(
        "study",
        help="Optuna studies over training configurations",
        description=f"Optuna studies. Environment: {STORAGE_ENV} = the storage URL "
        "(--storage wins over it).",
    )
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


def storage_url(args) -> str | None:
    """``--storage``, else ``$SLT_PROBE_STORAGE``, else None (the embedded journal)."""
    return args.storage or os.environ.get(STORAGE_ENV) or None


def default_report_dir(spec: StudySpec) -> Path:
    """``reports/<name>`` under the current directory (beside the runs' reports)."""
    return Path("reports") / spec.name


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")


def _write_report(study: optuna.Study, spec: StudySpec, report_dir: str | None) -> Path:
    return write_study_report(study, report_dir or default_report_dir(spec))


def _run(args) -> int:
    _setup_logging()
    spec = load_study_spec(args.spec)
    study = run_study(
        spec,
        n_trials=args.n_trials,
        workers=args.workers,
        storage=storage_url(args),
        out_dir=args.out,
    )
    states = [t.state.name for t in study.trials]
    print(
        f"study {study.study_name}: "
        + ", ".join(f"{s} {states.count(s)}" for s in sorted(set(states)))
    )
    if args.report:
        logging.getLogger(__name__).info(
            "study report: %s", _write_report(study, spec, args.report_dir)
        )
    return 0


def _worker(args) -> int:
    _setup_logging()
    index = args.worker_index if args.worker_index is not None else os.getpid()
    ran = join_study(
        args.spec,
        storage=storage_url(args),
        out_dir=args.out,
        worker_index=index,
        threads=args.threads,
    )
    print(f"worker {os.getpid()}: {ran} trials")
    return 0


def _report(args) -> int:
    spec = load_study_spec(args.spec)
    out = Path(args.out) if args.out else default_out_dir(spec)
    url = storage_url(args) or default_storage_url(out)
    study = optuna.load_study(study_name=spec.name, storage=open_storage(url))
    print(_write_report(study, spec, args.report_dir))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``study …`` without the package-wide CLI (``python -m slt_probe.cli.study``)."""
    parser = argparse.ArgumentParser(prog="slt-probe")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
