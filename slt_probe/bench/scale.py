"""λ̂ at scale: the DLN ladder (:mod:`slt_probe.truth.ladder`) as a table, JSON and a figure.

Every case is estimated with :func:`slt_probe.estimate_llc`'s defaults (plus whatever the
caller passes, recorded in the payload), one case at a time, and measured for:

- λ̂ ± its standard error (``llc_stderr``), λ̂/λ − 1, split R-hat and the estimate's warnings;
- seconds (the whole ``estimate_llc`` call: calibration, pilots, chains, diagnostics) and
  chain-steps/s = chains · (burn-in + draws) / seconds, the pilots' steps not counted;
- the fraction of the machine's matmul peak, the ``bench speed`` convention: chain-steps/s ·
  6·B·d FLOPs (forward 2·B·d and backward 4·B·d for a bias-free linear network of d weights at
  batch B) / the peak of :func:`slt_probe.bench.speed.matmul_peaks`;
- peak resident memory during the estimate (VmRSS of this process polled every 50 ms, in MiB;
  the case's data and model are part of it).

The figure is λ̂/λ against the parameter count (log axis) with the ±10 % band and the range
Furman & Lau (2024) report for SGLD on deep linear networks, λ̂/λ ∈ [0.5, 1.1].
"""

from __future__ import annotations

import gc
import json
import math
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from slt_probe.bench import pages
from slt_probe.estimators.llc import estimate_llc
from slt_probe.files import atomic_write_text
from slt_probe.truth.cases import TruthCase
from slt_probe.truth.ladder import RUNGS, SAMPLE_SIZES, ladder_cases

#: λ̂/λ range Furman & Lau (2024, arXiv 2402.03698) report for DLNs of 10³–10⁸ parameters.
FURMAN_LAU_RANGE = (0.5, 1.1)
#: The accuracy the issue asks for: |λ̂/λ − 1| ≤ 10 %.
TOLERANCE = 0.10


def _rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class PeakRSS:
    """Context manager: the largest VmRSS (MiB) seen while it is open (polled every 50 ms)."""

    def __enter__(self):
        self.peak = _rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, _rss_mib())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mib())


def estimate_case(case: TruthCase, peak_flops: float | None = None, **kwargs) -> dict:
    """One ladder row: λ̂ of ``case`` with ``estimate_llc(**kwargs)`` and its measurements."""
    with PeakRSS() as rss:
        started = time.perf_counter()
        res = estimate_llc(case.model, case.loss_fn, case.data, **kwargs)
        seconds = time.perf_counter() - started
    draws = int(res.loss_trace.shape[-1]) if res.loss_trace.ndim else res.num_draws
    steps = res.num_chains * (res.num_burnin + draws)
    rate = steps / seconds
    ratio = res.llc_mean / case.true_llc
    row = {
        "case": case.name,
        "d": case.d,
        "n": case.n,
        "llc": case.true_llc,
        "multiplicity": case.multiplicity,
        "llc_hat": res.llc_mean,
        "stderr": res.llc_stderr,
        "rel_stderr": res.llc_stderr / abs(res.llc_mean) if res.llc_mean else math.inf,
        "ratio": ratio,
        "rel_error": ratio - 1.0,
        "r_hat": res.diagnostics.r_hat,
        "warnings": list(res.diagnostics.warnings),
        "sampler": res.sampler,
        "step_size": res.step_size,
        "batch_size": res.batch_size,
        "chains": res.num_chains,
        "burnin": res.num_burnin,
        "draws": draws,
        "seconds": seconds,
        "chain_steps_per_s": rate,
        "peak_rss_mib": rss.peak,
        "layer_ranks": case.info.get("layer_ranks"),
        "train_iterations": case.info.get("iterations"),
    }
    if peak_flops:
        row["peak_fraction"] = rate * 6.0 * res.batch_size * case.d / peak_flops
    row["ok"] = bool(
        abs(row["rel_error"]) <= TOLERANCE
        and not row["warnings"]
        and row["r_hat"] <= 1.1
        and row["rel_stderr"] <= 0.03
    )
    return row


def run_ladder(
    rungs: Iterable[int] = tuple(RUNGS),
    *,
    n: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    peak_flops: float | None = None,
    progress: Callable[[str], None] = print,
    **kwargs,
) -> list[dict]:
    """Rows of :func:`estimate_case` for every case of every rung in ``rungs`` (``limit``: the
    first cases of each rung only; ``n``: override :data:`SAMPLE_SIZES`). A case is built,
    estimated and dropped before the next, so one case's data is held at a time."""
    rows = []
    for rung in rungs:
        for case in ladder_cases(rung, n=n, seed=seed, limit=limit):
            row = {"rung": rung, **estimate_case(case, peak_flops, **kwargs)}
            rows.append(row)
            progress(
                f"  {row['case']} (d = {row['d']}): λ̂ {row['llc_hat']:.4g} ± {row['stderr']:.2g}"
                f" vs λ {row['llc']:g} ({row['rel_error']:+.1%}), R-hat {row['r_hat']:.3f}, "
                f"{len(row['warnings'])} warnings, {row['seconds']:.0f} s, "
                f"{row['chain_steps_per_s']:.0f} chain-steps/s, {row['peak_rss_mib']:.0f} MiB"
            )
            del case
            gc.collect()
    return rows


def rung_summary(rows: list[dict]) -> list[dict]:
    """Per rung: cases, worst and median |λ̂/λ − 1|, all clean (the issue's criteria met)."""
    out = []
    for rung in sorted({r["rung"] for r in rows}):
        mine = [r for r in rows if r["rung"] == rung]
        errs = sorted(abs(r["rel_error"]) for r in mine)
        mid = len(errs) // 2
        median = errs[mid] if len(errs) % 2 else 0.5 * (errs[mid - 1] + errs[mid])
        out.append(
            {
                "rung": rung,
                "cases": len(mine),
                "worst_abs_error": errs[-1],
                "median_abs_error": median,
                "max_seconds": max(r["seconds"] for r in mine),
                "all_ok": all(r["ok"] for r in mine) and median <= TOLERANCE / 2,
            }
        )
    return out


COLUMNS = [
    ("case", "case"),
    ("d", "params"),
    ("n", "n"),
    ("llc", "λ"),
    ("multiplicity", "m"),
    ("llc_hat", "λ̂"),
    ("stderr", "± s.e."),
    ("rel_error", "λ̂/λ − 1"),
    ("r_hat", "R-hat"),
    ("warnings", "warnings"),
    ("chain_steps_per_s", "chain-steps/s"),
    ("peak_fraction", "of matmul peak"),
    ("seconds", "s"),
    ("peak_rss_mib", "peak MiB"),
]


def to_markdown(rows: list[dict]) -> str:
    """The ladder table and the per-rung summary as markdown."""
    shown = [{**r, "warnings": len(r["warnings"])} for r in rows]
    summary = pages.table(
        rung_summary(rows),
        [
            ("rung", "rung"),
            ("cases", "cases"),
            ("worst_abs_error", "worst |λ̂/λ − 1|"),
            ("median_abs_error", "median"),
            ("max_seconds", "slowest case, s"),
            ("all_ok", "criteria met"),
        ],
    )
    return pages.table(shown, COLUMNS) + "\n\n" + summary + "\n"


def figure(rows: list[dict]):
    """λ̂/λ against parameters (log x), the ±10 % band and Furman & Lau's range."""
    from matplotlib.figure import Figure  # deferred: matplotlib is slow to import

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    lo, hi = FURMAN_LAU_RANGE
    ax.axhspan(lo, hi, color="0.85", label="Furman & Lau 2024: 0.5–1.1")
    ax.axhspan(1 - TOLERANCE, 1 + TOLERANCE, color="tab:green", alpha=0.3, label="±10 %")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.errorbar(
        [r["d"] for r in rows],
        [r["ratio"] for r in rows],
        yerr=[2 * r["stderr"] / r["llc"] for r in rows],
        fmt="o",
        color="tab:blue",
        label="slt_probe λ̂/λ (± 2 s.e.)",
    )
    ax.set_xscale("log")
    ax.set_xlabel("parameters d")
    ax.set_ylabel("λ̂ / λ")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def write_outputs(rows: list[dict], out: str | Path, settings: dict) -> dict[str, Path]:
    """scale.md, scale.json (rows, rung summary, settings, machine) and scale.png under out."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "scale.md", "json": out / "scale.json", "png": out / "scale.png"}
    atomic_write_text(paths["md"], to_markdown(rows))
    payload = {
        "machine": pages.machine_info(),
        "settings": settings,
        "rows": rows,
        "rungs": rung_summary(rows),
        "sample_sizes": SAMPLE_SIZES,
    }
    atomic_write_text(paths["json"], json.dumps(payload, indent=2, default=float))
    figure(rows).savefig(paths["png"], dpi=120)
    return paths
