"""``slt-probe bench speed|accuracy``: benchmarks that print their figures (table + JSON) and,
with ``--markdown``, write them as a page under docs/benchmarks/ (:mod:`slt_probe.bench.pages`)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from slt_probe.bench import accuracy, devinterp_cases, pages, random_accuracy, random_report, speed
from slt_probe.cli.bench_common import _command, _emit, _machine
from slt_probe.cli.bench_components import register_components
from slt_probe.cli.bench_precision import add_options as add_precision_options
from slt_probe.cli.bench_precision import to_precision
from slt_probe.cli.bench_scale import register_scale
from slt_probe.runs import run_spec
from slt_probe.runs.rundir import RunDir
from slt_probe.sampling import onednn
from slt_probe.sampling.stacked import stacked_layers
from slt_probe.truth.cases import dln_case
from slt_probe.truth.random_cases import random_seeds

REPO = Path(__file__).resolve().parents[2]


# Every column runs the same update as devinterp's (Euler–Maruyama noise, no minibatch
# correction) but "vmap_corrected", estimate_llc's default, whose set-up measures the minibatch
# gradient noise (32 gradients) and whose noise costs one extra pass a step.
LAU = {"sampler_options": {"noise": "independent"}, "minibatch_correction": False}
SPEED_VARIANTS = {
    "vmap": LAU,
    "vmap_corrected": {},
    "vmap_indep_batches": {"shared_batch": False, "paired": False, **LAU},
    "vmap_bf16": {"compute_dtype": "bfloat16", **LAU},
}
SPEED_STEPS, SPEED_REPEATS = 200, 3  # defaults of `bench speed`
SPEED_LOOPS = {"devinterp_loop": None, "devinterp_loop_bf16": torch.bfloat16}


def _speed_rows(args, peak: float) -> list[dict]:
    """chain-steps/s of every variant on every workload and chain count, with the ratios."""
    rows = []
    # enough steps that each estimator's fixed set-up (full-data L_n(w*), diagnostics) is small
    workloads = [
        (speed.dln_workload(), args.steps),
        (speed.mlp_workload(), max(args.steps // 2, 10)),
        (speed.transformer_workload(), max(args.steps // 4, 10)),
    ]
    for w, steps in workloads:
        variants = dict(SPEED_VARIANTS)
        names = [k for k, p in w.model.named_parameters() if p.requires_grad]
        if stacked_layers(w.model, names) is not None:  # show what the hand-batched path buys
            variants["vmap_generic"] = {"fast_path": False, **LAU}
        flops = w.matmul_flops_per_chain_step()
        for row in speed.compare(
            w, args.chains, steps, variants, repeats=args.repeats, loops=SPEED_LOOPS
        ):
            row["vmap_vs_devinterp"] = row["vmap"] / row["devinterp"]
            row["vmap_vs_devinterp_loop"] = row["vmap"] / row["devinterp_loop"]
            row["bf16_vmap_vs_devinterp_loop_bf16"] = row["vmap_bf16"] / row["devinterp_loop_bf16"]
            row["bf16_vmap_vs_devinterp_loop"] = row["vmap_bf16"] / row["devinterp_loop"]
            row["vmap_peak_fraction"] = row["vmap"] * flops / peak
            row["devinterp_loop_peak_fraction"] = row["devinterp_loop"] * flops / peak
            rows.append(row)
            print(
                f"  {w.name} chains={row['chains']}: vmap {row['vmap']:.0f}/s, "
                f"devinterp {row['devinterp']:.0f}/s, devinterp loop {row['devinterp_loop']:.0f}/s; "
                f"bf16: vmap {row['vmap_bf16']:.0f}/s, loop {row['devinterp_loop_bf16']:.0f}/s",
                flush=True,
            )
    return rows


def _time_to_precision(max_steps: int) -> dict:
    """Seconds to a trustworthy λ̂ (R-hat ≤ 1.05, no drift, 5 % relative standard error) on DLN
    10-8-6-4 (rank 2) with default arguments."""
    case = dln_case([10, 8, 6, 4], 2)
    seconds, steps, res = speed.seconds_to_precision(case, target=0.05, max_steps=max_steps)
    met = res.diagnostics.precision["met"]
    print(
        f"  R-hat ≤ 1.05 and 5 % relative standard error on {case.name}: {seconds:.1f} s "
        f"({steps} steps/chain, {res.sampler}{'' if met else ', NOT met'}; λ̂ {res.llc_mean:.2f} "
        f"vs λ {case.true_llc:g})"
    )
    return {
        "case": case.name,
        "true_llc": case.true_llc,
        "seconds": seconds,
        "steps": steps,
        "met": met,
        "sampler": res.sampler,
        "llc": res.llc_mean,
        "llc_stderr": res.llc_stderr,
        "rel_error": res.llc_mean / case.true_llc - 1.0,
        "num_burnin": res.num_burnin,
    }


def _speed(args) -> int:
    if args.to_precision:
        return to_precision(args)
    warnings.filterwarnings("ignore")
    peaks = speed.matmul_peaks()
    print(
        f"  float32 products through oneDNN: {'yes' if onednn.enabled() else 'no'} ({onednn.reason()})"
    )
    rows = _speed_rows(args, peaks["peak"])
    payload = {
        "benchmark": "speed",
        "matmul_peak_gflops": peaks["peak"] / 1e9,
        "matmul_gflops": {k: v / 1e9 for k, v in peaks.items() if k != "peak"},
        "onednn": {"enabled": onednn.enabled(), "reason": onednn.reason()},
        "time_to_5pct_stderr": _time_to_precision(args.precision_steps or 68_000),
        "probe_share": _probe_share(args),
        **_machine(),
        "rows": rows,
    }
    _emit(payload, rows, args.json)
    if args.markdown:
        small = args.steps < SPEED_STEPS or args.repeats < SPEED_REPEATS
        page = pages.speed_page(payload, _command(args), small=small)
        path = pages.write_page(args.markdown, page)
        print(f"wrote {path}")
    return 0


def _probe_share(args) -> dict | None:
    """The probe's share of wall time in the default grokking run (``models/omnigrok_mnist.toml``):
    run it with ``--grokking-run`` (a full training run), else read the last one in
    ``--probe-run``."""
    run_dir = Path(args.probe_run)
    if args.grokking_run:
        spec = REPO / "models" / "omnigrok_mnist.toml"
        run_spec(spec, out_dir=str(run_dir.parent), name=run_dir.name, progress=False)
    summary = RunDir(run_dir).read_summary()
    if summary is None:
        print(f"  probe share: no grokking run at {run_dir} (pass --grokking-run to make one)")
        return None
    share = {
        "run_dir": str(run_dir),
        "status": summary.get("status"),
        "wall_time_s": summary.get("wall_time_s"),
        "probe_time_s": summary.get("probe_time_s"),
        "fraction": summary.get("probe_overhead_fraction"),
    }
    print(
        f"  probe share of the default grokking run ({run_dir}, {share['status']}): "
        f"{100 * (share['fraction'] or float('nan')):.0f} % of {share['wall_time_s']:.0f} s"
    )
    return share


DEFAULT_JSON = "reports/bench/accuracy.json"


def _page_path(args, name: str) -> str:
    """--markdown without PATH writes docs/benchmarks/NAME.md for the --random/--devinterp pages."""
    return (
        str(pages.default_page(name))
        if args.markdown == str(pages.default_page("accuracy"))
        else args.markdown
    )


def _random(args) -> int:
    """``bench accuracy --random N``: default λ̂ on random cases against λ and NUTS."""
    if args.from_rows:  # a run split over processes: render what they wrote
        rows = []
        for path in args.from_rows:
            data = json.loads(Path(path).read_text())
            rows += data["rows"] if isinstance(data, dict) else data
        rows = sorted({r["seed"]: r for r in reversed(rows)}.values(), key=lambda r: r["seed"])
    else:
        seeds = random_seeds(args.random, args.random_start)
        rows = random_accuracy.random_rows(seeds, args.nuts_cache, sampler=args.sampler)
    summary = random_report.summarise_random(rows)
    payload = {"benchmark": "accuracy_random", **summary, **_machine(), "rows": rows}
    if args.json == DEFAULT_JSON:
        args.json = "reports/bench/accuracy_random.json"
    table = [{k: r[k] for k in ("case", "d", "n", "true_llc", "nuts", "llc", "rel_error",
                                "rel_error_nuts", "virial", "num_warnings")} for r in rows]  # fmt: skip
    _emit(payload, table, args.json)
    for name in summary["alarms"]["silent"]:
        print(f"  silent: {name} is more than 25 % from NUTS and carries no warning")
    if args.markdown:
        page = random_report.random_page(rows, summary, _command(args))
        print(f"wrote {pages.write_page(_page_path(args, 'accuracy_random'), page)}")
    return 0


def _devinterp(args) -> int:
    """``bench accuracy --devinterp``: devinterp's accuracy cases with default arguments."""
    if args.from_rows:  # rows an earlier run (or a split one) wrote
        rows = []
        for path in args.from_rows:
            data = json.loads(Path(path).read_text())
            rows += data["rows"] if isinstance(data, dict) else data
    else:
        rows = devinterp_cases.devinterp_rows()
    payload = {"benchmark": "accuracy_devinterp", **_machine(), "rows": rows}
    if args.json == DEFAULT_JSON:
        args.json = "reports/bench/accuracy_devinterp.json"
    payload["passed"] = sum(r["passes"] for r in rows)
    table = [{k: r[k] for k in ("case", "true_llc", "llc", "llc_std", "passes")} for r in rows]
    _emit(payload, table, args.json)
    if args.markdown:
        page = random_report.devinterp_page(rows, _command(args))
        print(f"wrote {pages.write_page(_page_path(args, 'accuracy_devinterp'), page)}")
    return 0 if payload["passed"] == len(rows) else 1


def _accuracy(args) -> int:
    warnings.filterwarnings("ignore")
    if args.devinterp:
        return _devinterp(args)
    if args.random or args.from_rows:
        return _random(args)
    kwargs = {"sampler": args.sampler}
    if args.quick:
        kwargs.update(num_draws=1000, num_burnin=1000)
    for name in ("num_chains", "num_burnin", "num_draws"):
        if getattr(args, name) is not None:
            kwargs[name] = getattr(args, name)
    if args.extrapolate:
        kwargs["extrapolate"] = True
    if args.compute_dtype:
        kwargs["compute_dtype"] = args.compute_dtype
    if args.lau_sgld:
        kwargs.update(sampler_options={"noise": "independent"}, minibatch_correction=False)
    seeds = args.seeds or [args.seed]
    all_rows, per_seed = [], []
    for seed in seeds:  # the seed draws the cases' data and the chains' randomness
        if len(seeds) > 1:
            print(f"seed {seed}:", flush=True)
        criterion, extra = accuracy.benchmark_cases(quick=args.quick, seed=seed)
        rows, summary = accuracy.accuracy_table(criterion, seed=seed, **kwargs)
        extra_rows = accuracy.accuracy_table(extra, seed=seed, **kwargs)[0] if extra else []
        for r in extra_rows:
            r["case"] += " (extra)"
        for r in rows + extra_rows:
            r["seed"] = seed
        all_rows += rows + extra_rows
        per_seed.append({"seed": seed, **summary})
    payload = {"benchmark": "accuracy", "estimator": kwargs}
    if len(seeds) == 1:
        payload.update(per_seed[0])
    else:
        payload.update(
            seeds=seeds,
            median_abs_rel_error_per_seed=[p["median_abs_rel_error"] for p in per_seed],
            worst_abs_rel_error=max(p["worst_abs_rel_error"] for p in per_seed),
            order_preserved_seeds=[p["seed"] for p in per_seed if p["order_preserved"]],
            per_seed=per_seed,
        )
    payload.update(_machine())
    payload["rows"] = all_rows
    _emit(payload, all_rows, args.json)
    if args.markdown:
        page = pages.accuracy_page(payload, per_seed, _command(args), quick=args.quick)
        print(f"wrote {pages.write_page(args.markdown, page)}")
    return 0


def _random_options(a) -> None:
    """--random, --random-start, --nuts-cache, --from-rows and --devinterp."""
    a.add_argument(
        "--random",
        type=int,
        metavar="N",
        help="instead: N random known-λ cases (seeds START…START+N−1), λ̂ with default "
        "arguments against λ and NUTS (page docs/benchmarks/accuracy_random.md)",
    )
    a.add_argument("--random-start", type=int, default=0, metavar="START")
    a.add_argument(
        "--nuts-cache",
        default="reports/bench/nuts_cache",
        help="folder of cached NUTS references (one JSON per case and settings)",
    )
    a.add_argument(
        "--from-rows",
        nargs="+",
        metavar="JSON",
        help="with --random or --devinterp: render the summary and page from the rows of "
        "earlier --json outputs (a run split over processes) instead of estimating",
    )
    a.add_argument(
        "--devinterp",
        action="store_true",
        help="instead: devinterp's own accuracy cases with default arguments and devinterp's "
        "tolerance (page docs/benchmarks/accuracy_devinterp.md; exit 1 if one fails)",
    )


def register(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks: sampler throughput, λ̂ against known truths")
    bsub = p.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    s = bsub.add_parser("speed", help="chain-steps/s of vmap vs devinterp, side by side")
    s.add_argument("--chains", type=int, nargs="+", default=[1, 4, 8, 16])
    s.add_argument(
        "--steps",
        type=int,
        default=SPEED_STEPS,
        help="SGLD steps per chain (DLN; the MLP runs /2, the transformer /4)",
    )
    s.add_argument("--json", default="reports/bench/speed.json")
    s.add_argument(
        "--precision-steps",
        type=int,
        help="steps per chain the time-to-precision figures may spend (max_steps; >= 8000; "
        "default 68000, with --to-precision per workload)",
    )
    s.add_argument(
        "--repeats",
        type=int,
        default=SPEED_REPEATS,
        help="runs per figure, interleaved; the median is kept",
    )
    s.add_argument(
        "--probe-run",
        default="runs/omnigrok_mnist",
        help="grokking run whose probe share of wall time is reported",
    )
    s.add_argument(
        "--grokking-run",
        action="store_true",
        help="train models/omnigrok_mnist.toml into --probe-run first (a full training run)",
    )
    add_precision_options(s)
    pages.add_markdown_option(s, "speed")
    s.set_defaults(func=_speed)
    a = bsub.add_parser("accuracy", help="λ̂ with default arguments on known-λ cases")
    a.add_argument("--quick", action="store_true", help="fewer, smaller cases and shorter chains")
    a.add_argument(
        "--sampler",
        default="auto",
        choices=["auto", "sgld", "sgnht", "rmsprop_sgld", "baoab"],
        help="estimate_llc's sampler (default: its default, auto); --random runs it too",
    )
    a.add_argument("--seed", type=int, default=0)
    a.add_argument(
        "--seeds", type=int, nargs="+", help="several seeds (data and chains); overrides --seed"
    )
    for flag, what in (("chains", "chains"), ("burnin", "burn-in steps"), ("draws", "draws")):
        a.add_argument(
            f"--num-{flag}",
            type=int,
            help=f"{what} per estimate (default: estimate_llc's)",
        )
    a.add_argument(
        "--lau-sgld",
        action="store_true",
        help="SGLD step for step as Lau et al. and devinterp: Euler-Maruyama noise, no "
        "minibatch-noise correction",
    )
    a.add_argument("--extrapolate", action="store_true", help="estimate_llc(extrapolate=True)")
    a.add_argument(
        "--compute-dtype",
        choices=["bfloat16", "float16"],
        help="estimate_llc(compute_dtype=...): forward/backward passes in low precision",
    )
    _random_options(a)
    a.add_argument("--json", default=DEFAULT_JSON)
    pages.add_markdown_option(a, "accuracy")
    a.set_defaults(func=_accuracy)
    register_components(bsub)
    register_scale(bsub)
