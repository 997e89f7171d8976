"""Find sigmoidal transitions in training curves and measure how they line up.

A transition is fitted as a logistic in u = log10(step + 1) (or in step):

    v(u) = before + (after − before) / (1 + exp(−(u − u₀)/w)),

with onset and end where the fitted curve has covered 10 % and 90 % of the way from ``before`` to
``after`` (u₀ ∓ w·ln 9) and the midpoint at u₀; all three are reported in steps. For grokking the
generalisation transition is test accuracy leaving its memorisation plateau; λ̂ typically rises
while the network memorises and falls as it generalises, so its transition is looked for after its
peak. The lag between two transitions is the difference of their midpoints (in steps and in
log10-steps), and their correlation is Spearman's ρ over the shared probe points.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.stats import spearmanr

_LN9 = math.log(9.0)
_MIN_R2 = 0.6  # a logistic that explains less of the variance than this is no transition


@dataclass
class Transition:
    """One fitted transition: steps (ints) and plateau levels (floats), with the fit's R²."""

    onset: int
    midpoint: int
    end: int
    direction: str
    before: float
    after: float
    r2: float

    def as_dict(self) -> dict:
        return asdict(self)


def _logistic(u, before, after, u0, width):
    return before + (after - before) / (1.0 + np.exp(-(u - u0) / width))


def _to_axis(steps: np.ndarray, log_x: bool) -> np.ndarray:
    return np.log10(steps + 1.0) if log_x else steps.astype(float)


def _from_axis(u: float, log_x: bool) -> float:
    return 10.0**u - 1.0 if log_x else u


def detect_transition(
    steps,
    values,
    *,
    direction: str = "auto",
    log_x: bool = True,
    after_peak: bool = False,
    window: tuple[int, int] | None = None,
) -> Transition | None:
    """Fit one sigmoidal transition to ``values`` over ``steps``; ``None`` if there is none.

    direction: ``"up"``, ``"down"`` or ``"auto"`` (the sign of last-minus-first plateau).
    after_peak: only look after the curve's maximum (a rise-then-fall curve such as λ̂ across
    grokking; the transition found is then the fall). window: only steps in [start, end].
    """
    if direction not in ("auto", "up", "down"):
        raise ValueError(f"direction must be 'auto', 'up' or 'down', got {direction!r}")
    s = np.asarray(steps, dtype=float)
    v = np.asarray(values, dtype=float)
    if s.shape != v.shape:
        raise ValueError(f"steps and values differ in length: {s.shape} vs {v.shape}")
    keep = np.isfinite(s) & np.isfinite(v)
    if window is not None:
        keep &= (s >= window[0]) & (s <= window[1])
    s, v = s[keep], v[keep]
    order = np.argsort(s)
    s, v = s[order], v[order]
    if after_peak and len(v):
        peak = int(np.argmax(v))
        s, v = s[peak:], v[peak:]
        if direction == "auto":
            direction = "down"
    if len(s) < 5:
        return None
    u = _to_axis(s, log_x)
    edge = max(2, len(v) // 6)
    before0, after0 = float(np.median(v[:edge])), float(np.median(v[-edge:]))
    jump = after0 - before0
    if direction == "auto":
        direction = "up" if jump > 0 else "down"
    if (direction == "up" and jump <= 0) or (direction == "down" and jump >= 0):
        return None
    half = before0 + 0.5 * jump
    crossed = np.nonzero((v - half) * np.sign(jump) >= 0)[0]
    u0_init = float(u[crossed[0]]) if len(crossed) else float(np.median(u))
    span = float(u[-1] - u[0]) or 1.0
    p0 = [before0, after0, u0_init, span / 10]
    lo = [-np.inf, -np.inf, u[0] - 0.1 * span, span * 1e-3]
    hi = [np.inf, np.inf, u[-1] + 0.1 * span, span]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            popt, _ = curve_fit(_logistic, u, v, p0=p0, bounds=(lo, hi), maxfev=20000)
    except (RuntimeError, ValueError):
        return None
    before, after, u0, width = (float(p) for p in popt)
    if (after - before) * (1 if direction == "up" else -1) <= 0:
        return None
    resid = v - _logistic(u, *popt)
    total = float(np.sum((v - v.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / total if total > 0 else 0.0
    if r2 < _MIN_R2 or abs(after - before) < 2.0 * float(np.std(resid)):
        return None

    def step_at(x: float) -> int:
        return int(round(float(np.clip(_from_axis(x, log_x), s[0], s[-1]))))

    return Transition(
        onset=step_at(u0 - width * _LN9),
        midpoint=step_at(u0),
        end=step_at(u0 + width * _LN9),
        direction=direction,
        before=before,
        after=after,
        r2=r2,
    )


def align(
    gen: Transition | None, other: Transition | None, gen_values=None, other_values=None
) -> dict | None:
    """Lag of ``other`` behind the generalisation transition ``gen`` (positive: later) and the
    Spearman correlation of two series sampled at the same steps."""
    if gen is None or other is None:
        return None
    corr = None
    if gen_values is not None and other_values is not None:
        a, b = np.asarray(gen_values, float), np.asarray(other_values, float)
        ok = np.isfinite(a) & np.isfinite(b)
        if ok.sum() >= 3 and np.ptp(a[ok]) > 0 and np.ptp(b[ok]) > 0:
            corr = float(spearmanr(a[ok], b[ok]).statistic)
    return {
        "lag_steps": int(other.midpoint - gen.midpoint),
        "lag_log10_steps": float(np.log10(other.midpoint + 1) - np.log10(gen.midpoint + 1)),
        "correlation": corr,
    }


def _series(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [
        (r["step"], r[key]) for r in rows if r.get(key) is not None and r.get("step") is not None
    ]
    if not pts:
        return np.zeros(0), np.zeros(0)
    s, v = zip(*sorted(pts))
    return np.asarray(s, float), np.asarray(v, float)


def _rise_then_fall(steps, values) -> Transition | None:
    """λ̂-like curves: the fall after the peak when there is one, else any transition."""
    if len(values) >= 5 and int(np.nanargmax(values)) < len(values) - 2:
        found = detect_transition(steps, values, after_peak=True)
        if found is not None:
            return found
    return detect_transition(steps, values)


def summarise_transitions(metrics_rows: list[dict], llc_rows: list[dict]) -> dict:
    """The ``transitions`` block of a run's summary.json (see the run-directory contract)."""
    acc_s, acc_v = _series(metrics_rows, "test_acc")
    gen = detect_transition(acc_s, acc_v, direction="up")
    out: dict = {"test_acc": gen.as_dict() if gen else None, "alignment": {}}
    for key in ("llc_mean", "hessian_eff_dim"):
        name = "llc" if key == "llc_mean" else key
        s, v = _series(llc_rows, key)
        found = _rise_then_fall(s, v)
        out[name] = found.as_dict() if found else None
        acc_at = (
            np.interp(np.log10(s + 1), np.log10(acc_s + 1), acc_v)
            if len(acc_s) and len(s)
            else None
        )
        out["alignment"][name] = align(gen, found, acc_at, v)
    return out
