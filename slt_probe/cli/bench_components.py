"""``slt-probe bench integrations``, ``groups`` and ``train``: what the framework callbacks,
the batched per-group estimates and a spec's training steps cost."""

from __future__ import annotations

import warnings

from slt_probe.bench import groups as groups_bench
from slt_probe.bench import integrations as integrations_bench
from slt_probe.bench import pages
from slt_probe.bench import training as training_bench
from slt_probe.cli.bench_common import _command, _emit, _machine


def _integrations(args) -> int:
    warnings.filterwarnings("ignore")
    kwargs = {"hessian": not args.no_hessian}
    for name in ("num_chains", "num_burnin", "num_draws"):
        if getattr(args, name) is not None:
            kwargs[name] = getattr(args, name)
    payload = integrations_bench.compare(args.steps, args.points, args.repeats, **kwargs)
    payload.update(_machine())
    rows = [
        {"variant": k, "wall_s": v, **payload["probe_time_s"]} for k, v in payload["wall_s"].items()
    ]
    print(
        f"  callback cost / probe time {payload['callback_cost_over_probe_time']:.3f}, plain loop "
        f"{payload['loop_cost_over_probe_time']:.3f}, callback cost / loop probe cost "
        f"{payload['callback_cost_over_loop_cost']:.3f} (on {payload['cpu_model']})"
    )
    _emit(payload, rows, args.json)
    if args.markdown:
        small = args.steps < integrations_bench.STEPS or args.repeats < integrations_bench.REPEATS
        page = pages.integrations_page(payload, _command(args), small=small)
        print(f"wrote {pages.write_page(args.markdown, page)}")
    return 0


def _register_integrations(bsub) -> None:
    i = bsub.add_parser(
        "integrations",
        help="the Lightning callback's cost against the probe's own (needs lightning)",
    )
    i.add_argument("--steps", type=int, default=integrations_bench.STEPS, help="training steps")
    i.add_argument("--points", type=int, default=integrations_bench.POINTS, help="probe points")
    i.add_argument("--repeats", type=int, default=integrations_bench.REPEATS, help="rounds")
    for flag in ("chains", "burnin", "draws"):
        i.add_argument(f"--num-{flag}", type=int, help=f"{flag} per probe point (probe default)")
    i.add_argument("--no-hessian", action="store_true", help="probe without the Hessian summary")
    i.add_argument("--json", default="reports/bench/integrations.json")
    pages.add_markdown_option(i, "integrations")
    i.set_defaults(func=_integrations)


def _groups(args) -> int:
    rows = groups_bench.run(quick=args.quick, chains=args.chains, steps=args.steps)
    payload = {**_machine(), "command": _command(args), "rows": rows}
    table = [{k: v for k, v in r.items() if not k.startswith("llc_")} for r in rows]
    _emit(payload, table, args.json)
    if args.markdown:
        print(
            f"wrote {pages.write_page(args.markdown, pages.groups_page(payload, _command(args)))}"
        )
    return 0


def _train(args) -> int:
    rows = [training_bench.compare(spec, args.steps, args.repeats) for spec in args.specs]
    payload = {**_machine(), "command": _command(args), "rows": rows}
    table = [
        {
            "spec": r["spec"],
            "fused_steps_per_s": r["median"]["fused"],
            "default_steps_per_s": r["median"]["default"],
            "speedup": r["speedup"],
        }
        for r in rows
    ]
    _emit(payload, table, args.json)
    if args.markdown:
        page = training_bench.train_page(payload, _command(args))
        print(f"wrote {pages.write_page(args.markdown, page)}")
    return 0


def _register_train(bsub) -> None:
    t = bsub.add_parser("train", help="a spec's training steps/s: fused optimizer vs default")
    t.add_argument(
        "specs",
        nargs="*",
        default=["models/omnigrok_mnist.toml", "models/modadd_transformer.toml"],
        help="run specs (default: the two grokking specs)",
    )
    t.add_argument("--steps", type=int, default=training_bench.STEPS, help="updates per round")
    t.add_argument("--repeats", type=int, default=training_bench.REPEATS, help="rounds")
    t.add_argument("--json", default="reports/bench/train.json")
    pages.add_markdown_option(t, "train")
    t.set_defaults(func=_train)


def register_components(bsub) -> None:
    """The ``integrations``, ``groups`` and ``train`` subcommands of ``slt-probe bench``."""
    _register_train(bsub)
    _register_integrations(bsub)
    g = bsub.add_parser("groups", help="per-group λ̂: batched groups vs one after another")
    g.add_argument("--quick", action="store_true", help="short chains, smaller data")
    g.add_argument("--chains", type=int, default=2, help="chains per group")
    g.add_argument("--steps", type=int, help="burn-in + draws per chain (400; --quick 100)")
    g.add_argument("--json", default="reports/bench/groups.json")
    pages.add_markdown_option(g, "groups")
    g.set_defaults(func=_groups)
