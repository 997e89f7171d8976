"""Transition detection on synthetic curves with known transition points."""

import numpy as np
import pytest

from slt_probe.probe.transitions import align, detect_transition, summarise_transitions


def logistic_curve(steps, mid, width_log10, before, after, noise=0.0, seed=0):
    u = np.log10(steps + 1.0)
    v = before + (after - before) / (1 + np.exp(-(u - np.log10(mid + 1)) / width_log10))
    return v + noise * np.random.default_rng(seed).standard_normal(len(steps))


STEPS = np.unique(np.geomspace(1, 20000, 60).astype(int))


def test_grokking_like_rise_is_found_at_its_midpoint():
    acc = logistic_curve(STEPS, mid=6000, width_log10=0.12, before=0.2, after=0.92, noise=0.01)
    t = detect_transition(STEPS, acc, direction="up")
    assert t is not None and t.direction == "up"
    assert abs(np.log10(t.midpoint) - np.log10(6000)) < 0.05
    assert t.onset < t.midpoint < t.end
    # 10 % → 90 % spans 2·ln 9·w in log10-steps
    assert np.log10(t.end + 1) - np.log10(t.onset + 1) == pytest.approx(
        2 * np.log(9) * 0.12, rel=0.15
    )
    assert t.before == pytest.approx(0.2, abs=0.02) and t.after == pytest.approx(0.92, abs=0.02)


def test_flat_noisy_curve_has_no_transition():
    rng = np.random.default_rng(3)
    assert detect_transition(STEPS, 0.5 + 0.02 * rng.standard_normal(len(STEPS))) is None


def test_rise_then_fall_finds_the_fall_after_the_peak():
    rise = logistic_curve(STEPS, mid=300, width_log10=0.1, before=20, after=50)
    fall = logistic_curve(STEPS, mid=8000, width_log10=0.1, before=0, after=-28)
    llc = rise + fall + 0.3 * np.random.default_rng(1).standard_normal(len(STEPS))
    t = detect_transition(STEPS, llc, after_peak=True)
    assert t.direction == "down"
    assert abs(np.log10(t.midpoint) - np.log10(8000)) < 0.08


def test_lag_and_correlation_between_transitions():
    acc = logistic_curve(STEPS, mid=5000, width_log10=0.1, before=0.2, after=0.9)
    llc = logistic_curve(STEPS, mid=2500, width_log10=0.1, before=50, after=20)
    gen = detect_transition(STEPS, acc, direction="up")
    other = detect_transition(STEPS, llc, direction="down")
    a = align(gen, other, acc, llc)
    assert a["lag_steps"] == pytest.approx(-2500, rel=0.1)
    assert a["lag_log10_steps"] == pytest.approx(np.log10(2501) - np.log10(5001), abs=0.03)
    assert a["correlation"] < -0.9
    assert align(None, other) is None


def test_summary_block_has_the_contract_shape():
    acc = logistic_curve(STEPS, mid=5000, width_log10=0.1, before=0.2, after=0.9)
    metrics = [{"step": int(s), "test_acc": float(v)} for s, v in zip(STEPS, acc)]
    probe_steps = STEPS[::3]
    llc = logistic_curve(
        probe_steps, mid=300, width_log10=0.1, before=20, after=50
    ) + logistic_curve(probe_steps, mid=7000, width_log10=0.1, before=0, after=-25)
    rows = [
        {"step": int(s), "llc_mean": float(v), "hessian_eff_dim": None}
        for s, v in zip(probe_steps, llc)
    ]
    out = summarise_transitions(metrics, rows)
    assert set(out) == {"test_acc", "llc", "hessian_eff_dim", "alignment"}
    assert out["hessian_eff_dim"] is None and out["alignment"]["hessian_eff_dim"] is None
    assert out["test_acc"]["direction"] == "up"
    assert out["llc"]["direction"] == "down"
    lag = out["alignment"]["llc"]["lag_steps"]
    assert lag == out["llc"]["midpoint"] - out["test_acc"]["midpoint"]
    assert 1000 < lag < 3500


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="direction"):
        detect_transition(STEPS, STEPS, direction="sideways")
    with pytest.raises(ValueError, match="differ in length"):
        detect_transition(STEPS, STEPS[:-1])
