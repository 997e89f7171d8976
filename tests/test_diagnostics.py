"""Diagnostics on synthetic loss traces whose answer is known."""

import numpy as np
import pytest

from slt_probe.estimators.diagnostics import compute_diagnostics, trace_drift, virial_check


def _diag(trace, nbeta=10.0, diverged=None, burnin=0):
    llc = nbeta * (trace.mean(axis=1) - 0.0)
    diverged_at = np.full(trace.shape[0], -1) if diverged is None else np.asarray(diverged)
    llc[diverged_at >= 0] = np.nan
    return compute_diagnostics(trace, llc, diverged_at, nbeta=nbeta, num_burnin=burnin)


def test_iid_chains_have_rhat_one_and_full_ess():
    rng = np.random.default_rng(0)
    trace = 1.0 + 0.1 * rng.standard_normal((4, 1000))
    d = _diag(trace)
    assert abs(d.r_hat - 1.0) < 0.01
    assert 3000 < d.ess < 5000
    assert d.warnings == []


def test_disagreeing_chains_raise_rhat_warning():
    rng = np.random.default_rng(1)
    trace = 1.0 + 0.1 * rng.standard_normal((4, 500)) + np.array([[0.0], [0.0], [0.5], [0.5]])
    d = _diag(trace)
    assert d.r_hat > 1.5
    assert any("R-hat" in w for w in d.warnings)


def test_drift_is_measured_in_llc_units_and_warned():
    draws = 900
    ramp = np.linspace(0.0, 0.3, draws)
    trace = np.tile(1.0 + ramp, (4, 1))
    drift = trace_drift(trace, nbeta=10.0)
    # last third mean − first third mean = 0.2 (in loss), × nβ = 2.0
    assert np.allclose(drift, 2.0, rtol=0.01)
    d = _diag(trace)
    assert any("still rising" in w for w in d.warnings)


def test_diverged_chain_is_named_and_excluded():
    rng = np.random.default_rng(2)
    trace = 1.0 + 0.1 * rng.standard_normal((3, 200))
    d = _diag(trace, diverged=[-1, 150, -1], burnin=100)
    assert d.diverged == [(1, 150)]
    assert d.num_used_chains == 2
    assert any("chain 1 diverged at draw 50" in w for w in d.warnings)


def test_negative_llc_warning():
    rng = np.random.default_rng(3)
    trace = -0.5 + 0.01 * rng.standard_normal((2, 300))
    d = _diag(trace)
    assert any("not a local minimum" in w for w in d.warnings)


def test_all_chains_diverged():
    trace = np.full((2, 10), np.nan)
    d = _diag(trace, diverged=[3, 4])
    assert d.num_used_chains == 0
    assert any("every chain diverged" in w for w in d.warnings)


def test_virial_check_averages_records_per_chain_and_skips_diverged_chains():
    # nβ·(w − w*)·∇L = 6 and γ‖w − w*‖² = 4 per record on d = 10: ratio 1 (γ = 2)
    terms = np.zeros((3, 5, 2))
    terms[..., 0], terms[..., 1] = 6.0 / 3.0, 2.0
    terms[1, :, 0] = 9.0 / 3.0  # chain 1 runs hot: (9 + 4)/10
    terms[2, 2:] = np.nan  # chain 2 diverged after two records: only those two count
    report, warning = virial_check(terms, nbeta=3.0, localization=2.0, dim=10)
    assert report["per_chain"] == [1.0, 1.3, 1.0]
    assert report["ratio"] == np.mean([1.0, 1.3, 1.0])
    assert report["records"] == 5
    assert warning is None  # 1.1 is above 1.1 barely, and within 3 standard errors of 1
    terms[:, :, 0] = 9.0 / 3.0
    report, warning = virial_check(terms, nbeta=3.0, localization=2.0, dim=10)
    assert report["ratio"] == 1.3 and report["stderr"] == 0.0
    assert "virial ratio" in warning and "1.3" in warning


def test_virial_check_without_usable_chains_reports_nothing():
    report, warning = virial_check(np.full((2, 4, 2), np.nan), nbeta=3.0, localization=1.0, dim=4)
    assert report == {} and warning is None


def test_virial_check_warns_about_cold_chains_only_beyond_three_standard_errors():
    # nβ·(w − w*)·∇L + γ‖w − w*‖² = 1 per record on d = 10: ratio 0.1, the chains barely moved
    terms = np.zeros((4, 20, 2))
    terms[..., 0] = 0.5 / 3.0
    terms[..., 1] = 0.25
    report, warning = virial_check(terms, nbeta=3.0, localization=2.0, dim=10)
    assert report["ratio"] == pytest.approx(0.1)
    assert "chains are cold" in warning and "underestimate" in warning
    noisy = terms.copy()
    noisy[0, :, 0] = 9.0 / 3.0  # one chain spread out: the spread no longer excludes 0.8
    report, warning = virial_check(noisy, nbeta=3.0, localization=2.0, dim=10)
    assert report["ratio"] < 0.8 and report["ratio"] + 3 * report["stderr"] >= 0.8
    assert warning is None


def test_imprecise_estimate_is_warned_when_two_standard_errors_exceed_a_quarter():
    rng = np.random.default_rng(4)
    base = 0.01 * rng.standard_normal((4, 400))
    # chain means 1.0, 1.1, 1.3, 1.6 (× nβ = 10): λ̂ = 12.5, std 2.65, stderr 1.32 = 10.6 %
    trace = base + np.array([[1.0], [1.1], [1.3], [1.6]])
    assert not any(w.startswith("imprecise") for w in _diag(trace).warnings)
    # 1.0, 1.2, 1.6, 2.2: λ̂ = 15, stderr 2.65 = 18 % of λ̂ > 12.5 %
    trace = base + np.array([[1.0], [1.2], [1.6], [2.2]])
    warned = [w for w in _diag(trace).warnings if w.startswith("imprecise")]
    assert len(warned) == 1 and "18 % of λ̂" in warned[0] and "num_chains" in warned[0]


def test_virial_parts_sum_to_the_ratio():
    terms = np.zeros((2, 4, 2))
    terms[..., 0], terms[..., 1] = 1.0, 3.0  # nβ·1 = 2 and γ·3 = 6 per record on d = 10
    report, _ = virial_check(terms, nbeta=2.0, localization=2.0, dim=10)
    assert report["loss_part"] == pytest.approx(0.2)
    assert report["localization_part"] == pytest.approx(0.6)
    assert report["loss_part"] + report["localization_part"] == pytest.approx(report["ratio"])
