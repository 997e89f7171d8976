"""The ``slt-probe`` command line.

The top layer: one module per subsystem's subcommands. Each module in ``COMMAND_MODULES`` exposes
``register(subparsers)``, which adds its parsers and sets ``func`` (called with the parsed
namespace; its return value is the exit status). The namespace also carries ``argv``, the
arguments as given, so that generated pages can say which command made them.
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

from slt_probe.cli import bench, report, run, study, truth

# in the order of `slt-probe --help`
COMMAND_MODULES: tuple[ModuleType, ...] = (bench, study, run, report, truth)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slt-probe",
        description="Probe loss landscapes with singular learning theory (local learning coefficients).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
