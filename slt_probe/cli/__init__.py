"""The ``slt-probe`` command line.

The top layer: one module per subsystem's subcommands. A module listed in ``COMMAND_MODULES`` exposes
``register(subparsers)``, which adds its parsers and sets ``func`` (called with the parsed
namespace; its return value is the exit status). The namespace also carries ``argv``, the
arguments as given, so that generated pages can say which command made them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES: tuple[str, ...] = (
    "slt_probe.cli.bench",
    "slt_probe.cli.study",
    "slt_probe.cli.run",
    "slt_probe.cli.report",
    "slt_probe.cli.truth",
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
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
