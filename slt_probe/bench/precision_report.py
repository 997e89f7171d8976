"""The page of ``slt-probe bench speed --to-precision`` (docs/benchmarks/speed_precision.md):
seconds to a trustworthy λ̂ for slt_probe's defaults and devinterp's documented settings
(:mod:`slt_probe.bench.precision`), built from the benchmark's JSON payload."""

from __future__ import annotations

import math
from pathlib import Path

from slt_probe.bench.pages import fmt, page, table

COLUMNS = (
    ("workload", "workload"),
    ("params", "d"),
    ("n", "n"),
    ("true_llc", "λ"),
    ("ours_seconds", "slt_probe s"),
    ("ours_steps", "steps/chain"),
    ("ours_sampler", "sampler"),
    ("ours_llc", "slt_probe λ̂ ± se"),
    ("ours_r_hat", "R-hat"),
    ("ours_met", "met"),
    ("theirs_seconds", "devinterp s"),
    ("theirs_cumulative", "devinterp s, doubling total"),
    ("theirs_draws", "draws"),
    ("theirs_llc", "devinterp λ̂ ± se"),
    ("theirs_r_hat", "R-hat "),
    ("theirs_met", "met "),
    ("speedup", "speed-up"),
)

LEGEND = """Seconds until λ̂ has split R-hat ≤ 1.05 over 4 chains, no drift between the first and
last thirds of the traces and a relative standard error (std of λ̂ across chains / √chains / λ̂)
≤ 5 %, judged by the same code for both columns. **slt_probe**: `estimate_llc` with its
default arguments plus `target_rse=0.05` and a `max_steps` bound (and the workload's minibatch
size where it has one); the same chains continue in rounds until the criterion holds; the time
includes set-up, ε calibration and diagnostics. **devinterp 1.3.2**:
`estimate_learning_coeff_with_summary` with `SGMCMC.sgld`, `lr` {lr:g}, `localization` {gamma:g},
`nbeta = default_nbeta(loader)` (m / log m of the batch size m), no burn-in and its own
`init_loss` (the settings of its README and example notebooks), {chains} chains; it cannot
continue chains, so it is rerun with `num_draws` doubling from 200 until the criterion holds.
"devinterp s" is the wall time of the first run that met it (generous: the shorter runs before
it are not counted), "doubling total" all of them. Speed-up = devinterp s / slt_probe s; a
"≥" marks a lower bound (devinterp never met the criterion, its last run already took that
long); "–" where slt_probe did not meet it within its bound. Both columns run one after the
other in one process with the same torch threads.

The two columns sample different posteriors: slt_probe nβ = n / log n, γ = 1 and a calibrated ε;
devinterp nβ = m / log m, γ = {gamma:g} and ε = {lr:g}. A larger γ truncates flat directions and
a smaller nβ heats the posterior, so their λ̂ differ and only the DLN's can be checked (against
its true λ). Reaching the precision criterion says the chains agree with each other, not that
λ̂ is right; and chains that all start at w* share their early transient, which R-hat cannot
see (the drift check is what looks for it)."""


def _speedup(row: dict) -> str:
    if row["speedup_kind"] == "none" or not math.isfinite(row["speedup"]):
        return "–"
    prefix = "≥ " if row["speedup_kind"] == "lower bound" else ""
    return f"{prefix}{row['speedup']:.3g}×"


def _cells(row: dict) -> dict:
    ours, theirs = row["slt_probe"], row["devinterp"]
    return {
        "workload": row["workload"],
        "params": row["params"],
        "n": row["n"],
        "true_llc": row.get("true_llc"),
        "ours_seconds": ours["seconds"],
        "ours_steps": ours["steps"],
        "ours_sampler": f"{ours['sampler']}, m = {ours['batch_size']}",
        "ours_llc": f"{fmt(ours['llc'], 4)} ± {fmt(ours['llc_stderr'], 2)}",
        "ours_r_hat": ours["r_hat"],
        "ours_met": ours["met"],
        "theirs_seconds": theirs["seconds"],
        "theirs_cumulative": theirs["cumulative_seconds"],
        "theirs_draws": theirs["draws"],
        "theirs_llc": f"{fmt(theirs['llc'], 4)} ± {fmt(theirs['llc_stderr'], 2)}",
        "theirs_r_hat": theirs["r_hat"],
        "theirs_met": theirs["met"],
        "speedup": _speedup(row),
    }


def _details(row: dict) -> list[str]:
    ours, theirs, info = row["slt_probe"], row["devinterp"], row.get("info") or {}
    lines = [f"- **{row['workload']}**"]
    if "train_steps" in info:
        lines.append(
            f"  - w*: `{'/'.join(Path(info['spec']).parts[-2:])}` after {info['train_steps']} steps of its own training "
            f"({fmt(info['train_seconds'], 3)} s): train accuracy {fmt(info['train_acc'], 3)}, "
            f"test accuracy {fmt(info['test_acc'], 3)}."
        )
    work = ours["steps"] * ours["batch_size"]
    lines.append(
        f"  - slt_probe: {ours['sampler']} at ε {fmt(ours['step_size'], 3)}, nβ "
        f"{fmt(ours['nbeta'], 4)}, γ {fmt(ours['localization'])}, batch {ours['batch_size']}; "
        f"{ours['rounds']} round(s), {ours['steps']} steps per chain (burn-in included), "
        f"{fmt(work / 1e6, 3)} M example-gradients per chain, "
        f"{fmt(ours['seconds'] / (ours['num_chains'] * work / 1e6), 3)} s per million overall; "
        + ("met." if ours["met"] else f"not met: {'; '.join(ours['missing'])}.")
    )
    runs = ", ".join(
        f"{r['draws']} draws {fmt(r['seconds'], 3)} s (rse {fmt(r['rse'], 2)}, R-hat "
        f"{fmt(r['r_hat'], 4)}{', met' if r['met'] else ''})"
        for r in theirs["runs"]
    )
    work = theirs["draws"] * theirs["batch_size"]
    lines.append(
        f"  - devinterp: nβ {fmt(theirs['nbeta'], 4)}, batch {theirs['batch_size']}; runs: "
        f"{runs}; the reported run: {fmt(work / 1e6, 3)} M example-gradients per chain, "
        f"{fmt(theirs['seconds'] / (theirs['num_chains'] * work / 1e6), 3)} s per million"
        + ("." if theirs["met"] else f"; not met: {'; '.join(theirs['missing'])}.")
    )
    return lines


def precision_page(payload: dict, command: str) -> str:
    """The whole page from the ``--json`` payload of ``bench speed --to-precision``."""
    settings = payload["settings"]
    legend = LEGEND.format(
        lr=settings["lr"], gamma=settings["localization"], chains=settings["num_chains"]
    )
    rows = payload["rows"]
    conditions = [
        f"torch threads {payload['torch_threads']} for both columns, on a shared machine: the "
        "1-minute load average before and after each workload says how much other work slowed "
        "both columns alike.",
        "",
    ]
    conditions += [
        f"- {r['workload']}: load {fmt(r.get('load_before'), 3)} → {fmt(r.get('load_after'), 3)}"
        f"; `{r.get('command') or payload.get('command')}`"
        for r in rows
    ]
    sections = [
        ("Time to precision", legend + "\n\n" + table([_cells(r) for r in rows], COLUMNS)),
        ("Details", "\n".join(line for r in rows for line in _details(r))),
        ("Conditions", "\n".join(conditions)),
    ]
    return page("Benchmark: time to a trustworthy λ̂", command, sections)
