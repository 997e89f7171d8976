"""The ``slt-probe`` command line.

Each subsystem owns its subcommands: a module listed in ``COMMAND_MODULES`` exposes
``register(subparsers)``, which adds its parsers and sets ``func`` (called with the parsed
namespace; its return value is the exit status).
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES: tuple[str, ...] = (
    "slt_probe.bench.cli",
    "slt_probe.studies.cli",
    "slt_probe.runs.cli",
    "slt_probe.reports.cli",
    "slt_probe.truth.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slt-probe",
        description="Probe loss landscapes with singular learning theory (local learning coefficients).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
