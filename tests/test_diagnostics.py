"""Diagnostics on synthetic loss traces whose answer is known."""

import numpy as np

from slt_probe.estimators.diagnostics import compute_diagnostics, trace_drift


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
