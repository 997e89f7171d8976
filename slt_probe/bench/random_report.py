"""Summary and page of ``slt-probe bench accuracy --random N`` (and ``--devinterp``).

The summary states the issue-18 criteria on the rows of
:func:`slt_probe.bench.random_accuracy.random_rows`: median and worst |λ̂ − λ|/λ, median
|λ̂ − NUTS|/NUTS, pairs read in the wrong order where the truths differ by more than 10 %, and
the estimates more than 25 % from NUTS with and without a warning ("silent"), plus the share of
the others that carry one (false alarms). Seeds are split in two halves (even and odd) so that a
warning rule chosen on one can be judged on the other.
"""

from __future__ import annotations

import numpy as np

from slt_probe.bench.accuracy import misordered_pairs
from slt_probe.bench.pages import fmt, page, table
from slt_probe.bench.random_accuracy import FAR_FROM_NUTS
from slt_probe.estimators.diagnostics import RSE_WARN, VIRIAL_COLD, is_cold, is_imprecise

#: Truths closer than this (relative) are not required to be ordered.
ORDER_GAP = 0.10


def _median(values) -> float:
    values = [v for v in values if np.isfinite(v)]
    return float(np.median(values)) if values else float("nan")


def current_warnings(row: dict, cold: float = VIRIAL_COLD, rse: float = RSE_WARN) -> list[str]:
    """The row's warnings under the current cold-chain and imprecision rules.

    A row keeps the warnings it was estimated with, except those two kinds, which are
    re-decided from its recorded virial ratio (± standard error) and λ̂ (± standard error) by
    :func:`~slt_probe.estimators.diagnostics.is_cold` and
    :func:`~slt_probe.estimators.diagnostics.is_imprecise`, the functions ``estimate_llc``
    applies. So rows stored before a rule changed read as a fresh run would (same chains, same
    numbers: the rules only read them). ``cold``, ``rse``: the two thresholds (default the
    estimator's), to see what another choice would do (:func:`threshold_sweep`).
    """
    kept = [
        w
        for w in row["warnings"]
        if not w.startswith("imprecise") and not (w.startswith("virial ratio") and "cold" in w)
    ]
    if is_cold(row["virial"], row["virial_stderr"], cold):
        kept.append(f"virial ratio {row['virial']:.3g} (± {row['virial_stderr']:.2g}): cold")
    if is_imprecise(row["llc"], row["llc_stderr"], rse):
        kept.append(f"imprecise: λ̂ = {row['llc']:.3g} ± {row['llc_stderr']:.2g}")
    return kept


def alarm_counts(rows: list[dict], warned=current_warnings) -> dict:
    """far: |λ̂/NUTS − 1| > 25 %; silent: far without a warning; false alarms: warned among the
    rest (within 25 % of NUTS) and among the close ones (within 10 %). ``warned(row)``: the
    row's warnings (default: under the current rules)."""
    far = [r for r in rows if abs(r["rel_error_nuts"]) > FAR_FROM_NUTS]
    near = [r for r in rows if abs(r["rel_error_nuts"]) <= FAR_FROM_NUTS]
    close = [r for r in rows if abs(r["rel_error_nuts"]) <= 0.10]
    return {
        "cases": len(rows),
        "far_from_nuts": len(far),
        "silent": [r["case"] for r in far if not warned(r)],
        "warned_within_25pct": sum(bool(warned(r)) for r in near),
        "within_25pct": len(near),
        "warned_within_10pct": sum(bool(warned(r)) for r in close),
        "within_10pct": len(close),
    }


COLD_SWEEP = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
RSE_SWEEP = (0.075, 0.1, 0.125, 0.15, 0.2)


def threshold_sweep(rows: list[dict]) -> list[dict]:
    """Silent far-off estimates and false alarms (warned within 25 % of NUTS) per half of the
    seeds for other cold-chain and imprecision thresholds, one varied at a time: thresholds
    are chosen on the even seeds and judged on the odd ones."""
    out = []
    settings = [(c, RSE_WARN) for c in COLD_SWEEP] + [(VIRIAL_COLD, r) for r in RSE_SWEEP]
    for cold, rse in settings:
        row = {"cold": cold, "rse": rse}
        for half, parity in (("even", 0), ("odd", 1)):
            a = alarm_counts(
                [r for r in rows if r["seed"] % 2 == parity],
                lambda r, c=cold, e=rse: current_warnings(r, c, e),
            )
            row[f"{half}_silent"] = f"{len(a['silent'])} of {a['far_from_nuts']}"
            row[f"{half}_false"] = f"{a['warned_within_25pct']} of {a['within_25pct']}"
        out.append(row)
    return out


def summarise_random(rows: list[dict]) -> dict:
    """The criteria over ``rows`` (all seeds), and :func:`alarm_counts` per half of the seeds."""
    err = [abs(r["rel_error"]) for r in rows]
    err_nuts = [abs(r["rel_error_nuts"]) for r in rows]
    pairs = [p for p in misordered_pairs(rows) if p["true_gap_rel"] > ORDER_GAP]
    families = sorted({r["family"] for r in rows})
    return {
        "cases": len(rows),
        "families": {f: sum(r["family"] == f for r in rows) for f in families},
        "median_abs_rel_error": _median(err),
        "worst_abs_rel_error": float(np.max(err)) if err else float("nan"),
        "median_abs_rel_error_nuts": _median(err_nuts),
        "worst_abs_rel_error_nuts": float(np.max(err_nuts)) if err_nuts else float("nan"),
        "median_nuts_gap": _median([abs(r["nuts_vs_true"]) for r in rows]),
        "misordered_pairs": pairs,
        # the exact sampler on the same posteriors, judged by the same two criteria: what no
        # sampler can beat at these n (the finite-n gap), beside what the default reaches
        "worst_nuts_gap": float(np.max([abs(r["nuts_vs_true"]) for r in rows]))
        if rows
        else float("nan"),
        "nuts_misordered_pairs": [
            p
            for p in misordered_pairs([{**r, "llc": r["nuts"], "llc_stderr": 0.0} for r in rows])
            if p["true_gap_rel"] > ORDER_GAP
        ],
        "alarms": alarm_counts(rows),
        "alarms_as_run": alarm_counts(rows, lambda r: r["warnings"]),
        "alarms_even_seeds": alarm_counts([r for r in rows if r["seed"] % 2 == 0]),
        "alarms_odd_seeds": alarm_counts([r for r in rows if r["seed"] % 2 == 1]),
        "per_family": {
            f: {
                "median_abs_rel_error": _median(
                    [abs(r["rel_error"]) for r in rows if r["family"] == f]
                ),
                "median_abs_rel_error_nuts": _median(
                    [abs(r["rel_error_nuts"]) for r in rows if r["family"] == f]
                ),
                "median_nuts_gap": _median(
                    [abs(r["nuts_vs_true"]) for r in rows if r["family"] == f]
                ),
            }
            for f in families
        },
    }


WARNING_KINDS = (
    ("imprecise", "imprecise"),
    ("virial ratio", "cold/hot (virial)"),
    ("the chains ended", "stiff end"),
    ("R-hat", "R-hat"),
    ("loss trace still", "drift"),
    ("step_size='auto'", "ε retried"),
    ("chain ", "diverged"),
    ("negative", "negative λ̂"),
    ("the minibatch", "minibatch noise"),
)


def warning_kinds(warnings: list[str]) -> list[str]:
    """Short names of warnings for a table cell (the first 20 characters if unknown)."""
    out = []
    for w in warnings:
        kind = next((name for prefix, name in WARNING_KINDS if w.startswith(prefix)), w[:20])
        if kind == "cold/hot (virial)":
            kind = "hot (virial)" if "hotter" in w else "cold (virial)"
        out.append(kind)
    return out


def _pct(x) -> str:
    return f"{100 * x:+.1f} %" if isinstance(x, float) and np.isfinite(x) else "–"


RANDOM_COLUMNS = (
    ("seed", "seed"),
    ("case", "case"),
    ("d", "d"),
    ("n", "n"),
    ("true_llc", "λ"),
    ("nuts", "NUTS"),
    ("sampler", "sampler"),
    ("estimate", "λ̂ ± se"),
    ("vs_true", "vs λ"),
    ("vs_nuts", "vs NUTS"),
    ("r_hat", "R-hat"),
    ("virial", "virial"),
    ("warned", "warnings"),
)


def _alarm_line(name: str, a: dict) -> str:
    return (
        f"| {name} | {a['cases']} | {a['far_from_nuts']} | {len(a['silent'])} | "
        f"{a['warned_within_25pct']} of {a['within_25pct']} | "
        f"{a['warned_within_10pct']} of {a['within_10pct']} |"
    )


def _criteria(s: dict) -> str:
    """The criteria table: each issue-18 figure, measured and asked."""
    a = s["alarms"]
    return "\n".join(
        [
            "| criterion | measured | issue 18 asks |",
            "|---|---|---|",
            f"| median \\|λ̂ − λ\\|/λ | {100 * s['median_abs_rel_error']:.1f} % | ≤ 10 % |",
            f"| worst \\|λ̂ − λ\\|/λ | {100 * s['worst_abs_rel_error']:.1f} % | ≤ 25 % |",
            f"| median \\|λ̂ − NUTS\\|/NUTS | {100 * s['median_abs_rel_error_nuts']:.1f} % | ≤ 5 % |",
            f"| worst \\|λ̂ − NUTS\\|/NUTS | {100 * s['worst_abs_rel_error_nuts']:.1f} % | – |",
            f"| median \\|NUTS − λ\\|/λ (finite-n gap) | {100 * s['median_nuts_gap']:.1f} % | – |",
            f"| worst \\|NUTS − λ\\|/λ (what an exact sampler reads) | "
            f"{100 * s['worst_nuts_gap']:.1f} % | – |",
            f"| pairs misordered (truths > 10 % apart) | {len(s['misordered_pairs'])} | 0 |",
            f"| pairs NUTS itself misorders (truths > 10 % apart) | "
            f"{len(s['nuts_misordered_pairs'])} | – |",
            f"| estimates > 25 % from NUTS without a warning | {len(a['silent'])} of "
            f"{a['far_from_nuts']} | 0 |",
            f"| the same, with the warnings the rows were estimated with | "
            f"{len(s['alarms_as_run']['silent'])} of {a['far_from_nuts']} | – |",
        ]
    )


def _sweep_section(rows: list[dict]) -> str:
    """The threshold sweep (:func:`threshold_sweep`) with its legend."""
    return (
        "Silent = more than 25 % from NUTS without a warning; false alarms = warned within "
        f"25 % of NUTS. Current: cold below {VIRIAL_COLD:g} (3 standard errors), imprecise "
        f"above {RSE_WARN:g}.\n\n"
        + table(
            threshold_sweep(rows),
            [
                ("cold", "virial cold below"),
                ("rse", "imprecise above"),
                ("even_silent", "even: silent"),
                ("even_false", "even: false alarms"),
                ("odd_silent", "odd (held out): silent"),
                ("odd_false", "odd: false alarms"),
            ],
        )
    )


def random_page(rows: list[dict], summary: dict, command: str) -> str:
    """The page: criteria, alarms per half, per family, then every case."""
    cells = [
        {
            **r,
            "estimate": f"{fmt(r['llc'])} ± {fmt(r['llc_stderr'], 2)}",
            "vs_true": _pct(r["rel_error"]),
            "vs_nuts": _pct(r["rel_error_nuts"]),
            "sampler": r.get("sampler", "–"),  # rows stored before it was recorded
            "warned": ", ".join(warning_kinds(current_warnings(r))) or "none",
        }
        for r in rows
    ]
    s, a = summary, summary["alarms"]
    criteria = _criteria(s)
    alarms = "\n".join(
        [
            "| seeds | cases | > 25 % from NUTS | silent | warned, within 25 % | "
            "warned, within 10 % |",
            "|---|---|---|---|---|---|",
            _alarm_line("even (rule chosen here)", s["alarms_even_seeds"]),
            _alarm_line("odd (held out)", s["alarms_odd_seeds"]),
            _alarm_line("all", a),
        ]
    )
    fam = table(
        [
            {
                "family": f,
                "cases": s["families"][f],
                "vs_true": f"{100 * v['median_abs_rel_error']:.1f} %",
                "vs_nuts": f"{100 * v['median_abs_rel_error_nuts']:.1f} %",
                "gap": f"{100 * v['median_nuts_gap']:.1f} %",
            }
            for f, v in s["per_family"].items()
        ],
        [
            ("family", "family"),
            ("cases", "cases"),
            ("vs_true", "median |λ̂ − λ|/λ"),
            ("vs_nuts", "median |λ̂ − NUTS|/NUTS"),
            ("gap", "median |NUTS − λ|/λ"),
        ],
    )
    misordered = "; ".join(
        f"{p['lower']} (λ {p['lower_true']:g}) ≥ {p['higher']} (λ {p['higher_true']:g})"
        for p in s["misordered_pairs"]
    )
    sections = [
        (
            "Settings",
            "Cases: `slt_probe.truth.random_cases.random_case(seed)` for the seeds below "
            "(families, sizes, bases and data drawn from the seed; nobody picked them). "
            "`estimate_llc` with default arguments unless the command names a sampler (the "
            "sampler column says which kernel ran). NUTS: `nuts_llc`, 2 chains × (300 warm-up "
            "+ 400 draws), the same nβ = n/log n and γ. vs λ = λ̂/λ − 1; vs NUTS = λ̂/NUTS − 1. "
            "se: standard error across chains. Warnings: those of the current rules (rows "
            "stored by an earlier run have their cold-chain and imprecision warnings re-decided "
            "from their recorded virial ratio and standard errors, as `estimate_llc` would now).",
        ),
        ("Criteria", criteria),
        ("Warnings: estimates far from NUTS, and false alarms", alarms),
        ("Thresholds: what other choices would do", _sweep_section(rows)),
        ("Per family", fam),
        ("Misordered pairs", misordered or "none"),
        ("Every case", table(cells, RANDOM_COLUMNS)),
    ]
    return page("Benchmark: λ̂ on random known-λ cases, against λ and NUTS", command, sections)


def devinterp_page(rows: list[dict], command: str) -> str:
    """The page of devinterp's accuracy cases: λ̂ with defaults, devinterp's tolerance, pass."""
    cells = [
        {
            **r,
            "estimate": f"{fmt(r['llc'])} ± {fmt(r['llc_std'], 2)}",
            "rel": _pct(r["rel_error"]),
            "warned": len(r["warnings"]),
            "exception": r["error"] or "none",
            "nuts": f"{fmt(r['nuts_llc'])} ± {fmt(r['nuts_llc_std'], 2)}"
            if "nuts_llc" in r
            else "–",
            "nuts_rel": _pct(r["rel_error_nuts"]) if "rel_error_nuts" in r else "–",
            "nuts_pass": r.get("nuts_passes", "–"),
        }
        for r in rows
    ]
    passed = sum(r["passes"] for r in rows)
    exact = [r for r in rows if "nuts_llc" in r]
    body = table(
        cells,
        [
            ("case", "case"),
            ("true_llc", "λ"),
            ("estimate", "λ̂ ± std over chains"),
            ("rel", "λ̂/λ − 1"),
            ("tolerance", "devinterp's tolerance"),
            ("passes", "passes"),
            ("nuts", "NUTS λ̂ ± std"),
            ("nuts_rel", "λ̂/NUTS − 1"),
            ("nuts_pass", "NUTS passes"),
            ("warned", "warnings"),
            ("exception", "exception"),
        ],
    )
    reference = (
        f"NUTS (4 × (500 + 1,000), same nβ and γ) on the {len(exact)} normal crossings: "
        f"{sum(bool(r['nuts_passes']) for r in exact)} of {len(exact)} meet devinterp's band; "
        f"the default is within 10 % of NUTS on "
        f"{sum(abs(r['rel_error_nuts']) <= 0.10 for r in exact)} of them. Where NUTS misses the "
        "band too, λ(n) at n = 1,000 lies outside it: the tolerance, not the sampler, fails."
        if exact
        else ""
    )
    sections = [
        (
            "Cases",
            "devinterp's tests/slt/sampler_accuracy_test.py (9 normal crossings, n = 1,000, "
            "MSE) and tests/slt/rrr_test.py (5 reduced-rank regressions trained by Adam on a "
            "zero truth), with `estimate_llc`'s default arguments "
            "(`slt_probe.bench.devinterp_cases`).",
        ),
        (
            "Result",
            f"{passed} of {len(rows)} pass devinterp's own tolerance. {reference}\n\n{body}",
        ),
    ]
    return page("Benchmark: devinterp's accuracy cases with default arguments", command, sections)
