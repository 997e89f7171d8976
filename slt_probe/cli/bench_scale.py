"""``slt-probe bench scale`` (also ``slt-probe validate --scale``): λ̂ on the DLN ladder of
10³–10⁶ parameters against Aoyagi's λ, as markdown, JSON and a figure
(:mod:`slt_probe.bench.scale`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from slt_probe.bench import pages, scale, speed
from slt_probe.cli.bench_common import _command
from slt_probe.truth.ladder import RUNGS

DEFAULT_OUT = "reports/bench/scale"


def add_scale_options(p) -> None:
    """The options ``bench scale`` and ``validate --scale`` share."""
    p.add_argument(
        "--rungs",
        type=int,
        nargs="+",
        choices=sorted(RUNGS),
        default=sorted(RUNGS),
        help="nominal parameter counts to run (default all: 1000 10000 100000 1000000)",
    )
    p.add_argument("--cases", type=int, help="the first CASES networks of each rung only")
    p.add_argument("--n", type=int, help="examples per case (default: the rung's own n)")
    p.add_argument("--scale-out", default=DEFAULT_OUT, help=f"folder (default {DEFAULT_OUT})")
    p.add_argument("--num-burnin", type=int, help="burn-in steps (default: estimate_llc's)")
    p.add_argument("--num-draws", type=int, help="draws (default: estimate_llc's)")


def run(args: argparse.Namespace) -> int:
    kwargs = {
        key: value
        for key, value in (("num_burnin", args.num_burnin), ("num_draws", args.num_draws))
        if value is not None
    }
    peak = speed.matmul_peaks()["peak"]
    print(f"matmul peak {peak / 1e9:.1f} GFLOP/s; ladder rungs {args.rungs}", flush=True)
    rows = scale.run_ladder(
        args.rungs, n=args.n, limit=args.cases, seed=args.seed, peak_flops=peak, **kwargs
    )
    settings = {
        "estimate_llc": kwargs,
        "n": args.n,
        "cases": args.cases,
        "seed": args.seed,
        "matmul_peak_flops": peak,
    }
    print()
    print(scale.to_markdown(rows), end="")
    paths = scale.write_outputs(rows, args.scale_out, settings)
    print(f"wrote {paths['md']}, {paths['json']}, {paths['png']}")
    if getattr(args, "markdown", None):
        body = scale.to_markdown(rows)
        png = Path(args.markdown).with_suffix(".png")
        png.parent.mkdir(parents=True, exist_ok=True)
        scale.figure(rows).savefig(png, dpi=120)
        figure = f"![λ̂/λ against parameters]({png.name})"
        note = "Settings: `estimate_llc` defaults" + (f" with {kwargs}" if kwargs else "") + "."
        page = pages.page(
            "λ̂ at scale: the DLN ladder",
            _command(args),
            [("Table", body), ("Figure", figure)],
            note,
        )
        print(f"wrote {pages.write_page(args.markdown, page)}")
    return 0 if all(s["all_ok"] for s in scale.rung_summary(rows)) else 1


def register_scale(bsub) -> None:
    """Add ``bench scale`` to the bench subparsers."""
    p = bsub.add_parser("scale", help="λ̂ on deep linear networks of 10³–10⁶ parameters")
    add_scale_options(p)
    p.add_argument("--seed", type=int, default=0, help="seed of data, w* and chains")
    pages.add_markdown_option(p, "scale")
    p.set_defaults(func=run)
