"""``slt-probe validate``: λ̂ (SGLD, devinterp, NUTS) against closed-form λ on the truth cases."""

from __future__ import annotations

import argparse
import shlex

from slt_probe.bench import pages
from slt_probe.cli import bench_scale
from slt_probe.truth.validate import METHODS, run_validation, to_markdown, write_outputs

DEFAULT_OUT = "reports/validate"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "validate",
        help="estimate λ̂ on models with known λ (SGLD, devinterp, NUTS) and tabulate the errors",
        description=(
            "Estimate λ̂ with estimate_llc (vmap and devinterp backends) and NUTS on models whose "
            "learning coefficient is known in closed form; print the table and write "
            "validate.md, validate.html and validate.json."
        ),
    )
    p.add_argument("--quick", action="store_true", help="three small cases, short chains")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--seed", type=int, default=0, help="seed for data, w* and samplers")
    p.add_argument(
        "--methods",
        default="default,devinterp,nuts",
        help="comma-separated subset of default,devinterp,nuts (default all)",
    )
    p.add_argument(
        "--scale",
        action="store_true",
        help="the DLN ladder of 10³–10⁶ parameters instead (same as `slt-probe bench scale`)",
    )
    bench_scale.add_scale_options(p)
    pages.add_markdown_option(p, "validate")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.scale:
        if args.markdown == str(pages.default_page("validate")):
            args.markdown = str(pages.default_page("scale"))
        return bench_scale.run(args)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise SystemExit(f"--methods: unknown {bad or 'empty'}; choose from {','.join(METHODS)}")
    rows = run_validation(quick=args.quick, methods=methods, seed=args.seed)
    print()
    print(to_markdown(rows, methods), end="")
    paths = write_outputs(rows, args.out, methods)
    print(f"wrote {paths['md']}, {paths['html']}, {paths['json']}")
    if args.markdown:
        command = "slt-probe " + shlex.join(getattr(args, "argv", None) or ["validate"])
        note = (
            "This page was made with `--quick` (three small cases, short chains). "
            if args.quick
            else ""
        ) + "Regenerate the full table with `slt-probe validate --markdown` (nine cases and RRR "
        note += "4-3-4 at n = 10⁵; several minutes)."
        body = to_markdown(rows, methods, title=None)
        page = pages.page("Validation: λ̂ against closed-form λ", command, [("Table", body)], note)
        print(f"wrote {pages.write_page(args.markdown, page)}")
    failed = any("error" in row.get(m, {}) for row in rows for m in methods)
    return 1 if failed else 0
