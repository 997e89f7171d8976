"""``slt-probe bench speed --to-precision``: seconds to a trustworthy λ̂ (R-hat ≤ 1.05, no drift,
5 % relative standard error), slt_probe's defaults against devinterp's documented settings
(:mod:`slt_probe.bench.precision`), printed, as JSON and as the page
docs/benchmarks/speed_precision.md."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch

from slt_probe.bench import pages, precision, precision_report
from slt_probe.cli.bench_common import _command, _emit, _machine

PAGE = "speed_precision"
DEFAULT_JSON = f"reports/bench/{PAGE}.json"


def add_options(s) -> None:
    """The options of ``bench speed`` that only ``--to-precision`` reads."""
    s.add_argument(
        "--to-precision",
        action="store_true",
        help="instead: seconds to a trustworthy λ̂ (R-hat <= 1.05, no drift, 5 %% relative "
        "standard error), slt_probe defaults vs devinterp's documented settings (page "
        f"docs/benchmarks/{PAGE}.md)",
    )
    s.add_argument(
        "--workloads",
        nargs="+",
        choices=list(precision.WORKLOADS),
        default=list(precision.WORKLOADS),
        help="with --to-precision: which workloads",
    )
    s.add_argument(
        "--devinterp-draws",
        type=int,
        nargs=2,
        metavar=("START", "MAX"),
        help="with --to-precision: devinterp's num_draws doubles from START up to MAX "
        "(default per workload: 200 up to the WORKLOADS table's cap)",
    )
    s.add_argument(
        "--threads", type=int, help="torch threads for both columns (default: torch's own)"
    )
    s.add_argument(
        "--from-json",
        nargs="+",
        metavar="JSON",
        help="with --to-precision: render the page from earlier --json outputs (rows of one "
        "workload in a later file replace those in an earlier one)",
    )


def _row_line(row: dict) -> str:
    ours, theirs = row["slt_probe"], row["devinterp"]

    def col(c: dict, what: str) -> str:
        return (
            f"{c['seconds']:.1f} s, {what}, λ̂ {c['llc']:.3g} ± {c['llc_stderr']:.2g}, "
            f"R-hat {c['r_hat']:.3f}{'' if c['met'] else ', NOT met'}"
        )

    steps, draws = f"{ours['steps']} steps/chain", f"{theirs['draws']} draws"
    return (
        f"  {row['workload']}: slt_probe {col(ours, steps)}; devinterp {col(theirs, draws)}; "
        f"speed-up {row['speedup']:.2f} ({row['speedup_kind']})"
    )


def _rows(args) -> list[dict]:
    rows = []
    for name in args.workloads:
        build, max_steps, max_draws = precision.WORKLOADS[name]
        start = 200
        if args.devinterp_draws:
            start, max_draws = args.devinterp_draws
        max_steps = args.precision_steps or max_steps
        load_before = os.getloadavg()[0]
        row = precision.compare(build(), max_steps, start, max_draws)
        row.update(load_before=load_before, load_after=os.getloadavg()[0])
        row["command"] = _command(args)
        rows.append(row)
        print(_row_line(row), flush=True)
    return rows


def _merged(paths: list[str]) -> dict:
    """One payload from several ``--json`` outputs: the first one's fields, the rows of all,
    a workload's row from the last file that has it (in the order first seen)."""
    payloads = [json.loads(Path(p).read_text()) for p in paths]
    threads = {p["torch_threads"] for p in payloads}
    if len(threads) > 1:
        raise SystemExit(f"--from-json: the files ran with different torch threads {threads}")
    rows: dict[str, dict] = {}
    for p in payloads:
        for i, row in enumerate(p["rows"]):
            row.setdefault("command", p.get("command"))
            if i == 0 and "load_before" in p:  # older outputs kept it for the first only
                row.setdefault("load_before", p["load_before"])
            rows[row["workload"]] = row
    return {**payloads[0], "rows": list(rows.values())}


def to_precision(args) -> int:
    warnings.filterwarnings("ignore")
    if args.json == "reports/bench/speed.json":
        args.json = DEFAULT_JSON
    if args.from_json:
        payload = _merged(args.from_json)
        command = _command(args)
        torch.set_num_threads(payload["torch_threads"])  # the page's machine table says these
    else:
        if args.threads:
            torch.set_num_threads(args.threads)
        command = _command(args)
        payload = {"benchmark": PAGE, "command": command, **_machine()}
        payload.update(settings=precision.DEVINTERP_SETTINGS, rows=_rows(args))
    table = [
        {
            "workload": r["workload"],
            "ours_s": r["slt_probe"]["seconds"],
            "ours_met": r["slt_probe"]["met"],
            "devinterp_s": r["devinterp"]["seconds"],
            "devinterp_met": r["devinterp"]["met"],
            "speedup": r["speedup"],
        }
        for r in payload["rows"]
    ]
    _emit(payload, table, None if args.from_json else args.json)
    if args.markdown:
        path = args.markdown
        if path == str(pages.default_page("speed")):
            path = str(pages.default_page(PAGE))
        text = precision_report.precision_page(payload, command)
        print(f"wrote {pages.write_page(path, text)}")
    return 0
