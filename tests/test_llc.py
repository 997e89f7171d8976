"""estimate_llc against known learning coefficients, its contracts and its error messages."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from slt_probe import LLCEstimator, LLCResult, default_nbeta, estimate_llc


def half_sq(out, y):
    return 0.5 * ((out - y) ** 2).sum(-1).mean()


def linear_regression(d_in=4, d_out=2, n=4000, seed=0):
    """A regular model at its least-squares minimiser: λ = d/2 (weights + biases)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g)
    y = x @ torch.randn(d_in, d_out, generator=g) + torch.randn(n, d_out, generator=g)
    model = nn.Linear(d_in, d_out)
    xb = torch.cat([x, torch.ones(n, 1)], 1)
    sol = torch.linalg.lstsq(xb, y).solution
    with torch.no_grad():
        model.weight.copy_(sol[:d_in].T)
        model.bias.copy_(sol[d_in])
    return model, (x, y), (d_in + 1) * d_out / 2


class Crossing(nn.Module):
    """f(x) = w1·w2²·x: K(w) ∝ w1²·w2⁴, a normal crossing with λ = min(1/2, 1/4) = 1/4 and
    multiplicity 1 at w = 0 (multiplicity 1 keeps the finite-n correction small: with m = 2,
    as for (w1 w2)², E[nβK] is lowered by about (m − 1)/log(nβ))."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2))

    def forward(self, x):
        return self.w[0] * self.w[1] ** 2 * x


def test_regular_model_llc_is_half_the_parameter_count():
    model, data, truth = linear_regression()
    res = estimate_llc(model, half_sq, data, num_draws=1000, num_burnin=500, seed=1)
    assert res.llc_mean == pytest.approx(truth, rel=0.1)
    assert res.diagnostics.num_used_chains == 4
    assert res.diagnostics.r_hat < 1.1


def test_normal_crossing_llc_is_one_quarter():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 1, generator=g)
    y = torch.randn(4000, 1, generator=g)  # truth f = 0: w* = 0 sits on the crossing
    res = estimate_llc(Crossing(), half_sq, (x, y), num_draws=8000, num_burnin=1000, seed=0)
    # The Hessian vanishes at w* = 0: the curvature the chains meet, not that at w*, sets ε.
    cal = res.diagnostics.calibration
    assert cal["curvatures_seen"][-1] > 2 * cal["curvature_at_w_star"]
    assert res.step_size < 1.0 / cal["curvature_at_w_star"]
    assert res.llc_mean == pytest.approx(0.25, rel=0.25)


def test_result_fields_shapes_and_views():
    model, data, _ = linear_regression(n=1000)
    res = estimate_llc(model, half_sq, data, num_chains=3, num_draws=50, num_burnin=20)
    assert isinstance(res, LLCResult)
    assert res.loss_trace.shape == (3, 50)
    assert res.llc_per_chain.shape == (3,)
    assert res.nbeta == pytest.approx(1000 / math.log(1000))
    assert res.n == 1000 and res.num_draws == 50 and res.num_burnin == 20
    assert res.step_size > 0 and res.diagnostics.calibration["step_size"] == res.step_size
    assert res.llc_mean == pytest.approx(np.mean(res.llc_per_chain))
    d = res.to_dict()
    assert set(["llc_mean", "llc_std", "llc_per_chain", "loss_trace", "diagnostics"]) <= set(d)
    assert len(d["loss_trace"]) == 3 and len(d["loss_trace"][0]) == 50
    df = res.to_pandas()
    assert len(df) == 150 and list(df.columns) == ["chain", "draw", "loss", "llc_chain"]


def test_model_is_left_exactly_as_it_was():
    model, data, _ = linear_regression(n=500)
    model.train()
    model.weight.grad = torch.full_like(model.weight, 7.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    estimate_llc(model, half_sq, data, num_draws=20, num_burnin=5)
    estimate_llc(model, half_sq, data, num_draws=10, num_burnin=5, backend="devinterp")
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(model.weight.grad, torch.full_like(model.weight, 7.0))
    assert model.bias.grad is None


def test_data_forms_give_the_same_n_and_nbeta():
    model, (x, y), _ = linear_regression(n=600)
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
    for data in [(x, y), TensorDataset(x, y), loader]:
        res = estimate_llc(model, half_sq, data, num_draws=5, num_burnin=0, step_size=1e-4)
        assert res.n == 600
        assert res.nbeta == pytest.approx(default_nbeta(600))
    assert res.batch_size == 64  # the DataLoader's batch size


def test_vmap_and_devinterp_backends_agree_within_standard_errors():
    model, data, truth = linear_regression(n=2000)
    kw = dict(
        step_size=2e-4,
        num_chains=4,
        num_draws=600,
        num_burnin=200,
        batch_size=200,
        seed=3,
        paired=False,
        shared_batch=False,
    )
    # the same algorithm on both sides: Lau et al.'s update (devinterp's), unpaired losses
    lau = dict(sampler_options={"noise": "independent"}, minibatch_correction=False)
    a = estimate_llc(model, half_sq, data, backend="vmap", **kw, **lau)
    b = estimate_llc(model, half_sq, data, backend="devinterp", **kw)
    assert b.backend == "devinterp" and a.backend == "vmap"
    combined = math.hypot(a.llc_stderr, b.llc_stderr)
    assert abs(a.llc_mean - b.llc_mean) < 3 * combined
    assert a.llc_mean == pytest.approx(truth, rel=0.2)


def test_devinterp_rmsprop_sgld_is_given_our_step_in_its_units():
    """devinterp's RMSprop preconditioner averages ∇L², ours ∇U² ≈ nβ²·∇L²: at the same lr its
    steps were ~nβ times ours and λ̂ read 3× the truth. Passed lr = ε/nβ and eps = δ/nβ, the
    two updates match (up to devinterp's V starting at zero)."""
    model, data, truth = linear_regression(n=2000)
    kw = dict(sampler="rmsprop_sgld", num_draws=600, num_burnin=400, batch_size=200, seed=4)
    kw.update(paired=False, shared_batch=False)
    em = {"noise": "independent", "adapt_in_draws": True}  # devinterp's form
    a = estimate_llc(
        model, half_sq, data, backend="vmap", sampler_options=em, minibatch_correction=False, **kw
    )
    b = estimate_llc(model, half_sq, data, backend="devinterp", **kw)
    assert b.sampler_options == a.sampler_options
    assert em.items() <= a.sampler_options.items() and not a.sampler_options["minibatch_correction"]
    assert b.step_size == a.step_size  # the same calibration, reported in our units
    passed = b.diagnostics.engine["optimizer_kwargs"]
    assert passed["lr"] == pytest.approx(b.step_size / b.nbeta)
    assert passed["eps"] == pytest.approx(1.0 / b.nbeta)  # δ = √γ = 1
    assert abs(a.llc_mean - b.llc_mean) < 3 * math.hypot(a.llc_stderr, b.llc_stderr)
    assert b.llc_mean == pytest.approx(truth, rel=0.15)


def test_extrapolation_removes_first_order_step_size_bias():
    model, data, truth = linear_regression(n=4000)
    kw = dict(step_size=1.2e-3, num_draws=1000, num_burnin=300, seed=0, batch_size=4000)
    euler = dict(sampler_options={"noise": "independent"})  # Lau et al.'s update
    plain = estimate_llc(model, half_sq, data, **kw, **euler)
    extra = estimate_llc(model, half_sq, data, extrapolate=True, **kw, **euler)
    assert plain.llc_mean > truth * 1.08  # ε·a ≈ 0.58: ≈ +17 % discretisation bias
    assert abs(extra.llc_mean - truth) < 0.5 * abs(plain.llc_mean - truth)
    assert extra.extrapolation["step_sizes"] == [1.2e-3, 6e-4]
    # the default Leimkuhler–Matthews noise has no such bias on a quadratic loss
    lm = estimate_llc(model, half_sq, data, **kw)
    assert lm.sampler_options == {"noise": "leimkuhler-matthews", "minibatch_correction": True}
    assert lm.llc_mean == pytest.approx(truth, rel=0.04)


def test_minibatch_correction_removes_the_minibatch_inflation():
    # batch 32 of n = 4000: nβ/m ≈ 15, so minibatch gradient noise adds a third to the noise
    model, data, truth = linear_regression(n=4000)
    kw = dict(step_size=2e-4, num_draws=2000, num_burnin=500, seed=1, batch_size=32)
    raw = estimate_llc(model, half_sq, data, minibatch_correction=False, **kw)
    fixed = estimate_llc(model, half_sq, data, **kw)
    report = fixed.diagnostics.minibatch_noise
    assert report["corrected"] and report["clamped_coordinates"] == 0
    assert 0.2 < report["mean_fraction"] < 0.6
    assert raw.diagnostics.minibatch_noise == {"corrected": False, "reason": "switched off"}
    assert raw.llc_mean > truth * 1.15
    assert fixed.llc_mean == pytest.approx(truth, rel=0.06)
    # first order: the inflation is (d/2)·mean over coordinates of (ε/4)·nβ²·Var(∂L_m/∂w_j)
    predicted = truth * report["mean_fraction"]
    assert raw.llc_mean - fixed.llc_mean == pytest.approx(predicted, rel=0.3)


def test_minibatch_correction_of_rmsprop_sgld_removes_the_minibatch_inflation():
    # the same case preconditioned: the gradient's noise is (ε/4)·G_j·nβ²·v_j of the injected ε·G
    model, data, truth = linear_regression(n=4000)
    kw = dict(step_size=0.01, num_draws=2000, num_burnin=500, seed=1, batch_size=32)
    kw.update(sampler="rmsprop_sgld")
    raw = estimate_llc(model, half_sq, data, minibatch_correction=False, **kw)
    fixed = estimate_llc(model, half_sq, data, **kw)
    report = fixed.diagnostics.minibatch_noise
    assert report["corrected"] and report["clamped_coordinates"] == 0
    assert fixed.sampler_options == {
        "alpha": 0.999,
        "delta": None,
        "noise": "leimkuhler-matthews",
        "adapt_in_draws": False,
        "minibatch_correction": True,
    }
    assert raw.llc_mean > truth * 1.15
    assert fixed.llc_mean == pytest.approx(truth, rel=0.06)
    # at w*'s preconditioner, to first order
    assert raw.llc_mean - fixed.llc_mean == pytest.approx(truth * report["mean_fraction"], rel=0.3)


def test_minibatch_correction_says_when_it_does_not_apply():
    model, data, _ = linear_regression(n=400)
    kw = dict(step_size=1e-3, num_draws=20, num_burnin=5)
    full = estimate_llc(model, half_sq, data, batch_size=400, **kw)
    assert full.diagnostics.minibatch_noise["reason"] == "not needed: full-batch gradients"
    sgnht = estimate_llc(model, half_sq, data, batch_size=40, sampler="sgnht", **kw)
    assert "sgnht has no minibatch-noise correction" in sgnht.diagnostics.minibatch_noise["reason"]


def test_too_large_step_diverges_and_is_reported_not_averaged():
    model, data, _ = linear_regression(n=1000)
    res = estimate_llc(model, half_sq, data, step_size=1.0, num_draws=50, num_burnin=10)
    assert res.diagnostics.num_diverged == 4
    assert math.isnan(res.llc_mean)
    assert np.isnan(res.llc_per_chain).all()
    assert any("diverged" in w for w in res.diagnostics.warnings)


def test_end_curvature_measures_the_step_against_the_curvature_the_chains_reached():
    model, data, _ = linear_regression(n=256)
    x = torch.cat([data[0], torch.ones(256, 1)], 1).double()
    # n = 256: the end check's power iteration sees every example.
    # A quadratic loss: the same curvature everywhere, nβ·λ_max(E[x̃x̃ᵀ]) + γ with x̃ = (x, 1)
    a = default_nbeta(256) * float(torch.linalg.eigvalsh(x.T @ x / 256)[-1]) + 1.0
    # SGLD, whose stiffness is ε·a (BAOAB measures its step against its own bound)
    calm = estimate_llc(model, half_sq, data, sampler="sgld", num_draws=200, num_burnin=100, seed=0)
    end = calm.diagnostics.end_curvature
    # power iteration (12 steps) approaches the top eigenvalue from below
    assert 0.95 * a <= end["curvature"] <= 1.001 * a
    assert end["stiffness"] == pytest.approx(calm.step_size * end["curvature"], rel=1e-9)
    assert end["distance"] > 0
    assert not any("too coarse" in w for w in calm.diagnostics.warnings)
    stiff = estimate_llc(
        model,
        half_sq,
        data,
        sampler="sgld",
        step_size=2.0 / a,
        num_draws=200,
        num_burnin=100,
        seed=0,
    )
    assert stiff.diagnostics.num_diverged == 0
    assert 0.95 * 2.0 <= stiff.diagnostics.end_curvature["stiffness"] <= 1.001 * 2.0
    assert any("too coarse" in w for w in stiff.diagnostics.warnings)


def test_end_curvature_sees_the_examples_the_calibration_sees():
    """A feature present in 2 % of 1,000 examples holds the top curvature: a check on a 256-example
    sample (the old rule) read it anywhere from 0 to twice its value; the end check now measures
    on the calibration's examples (all of them up to 2,048) and reads it exactly."""
    n = 1000
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 3, generator=g)
    x[:, 2] = 0.0
    x[torch.randperm(n, generator=g)[:20], 2] = 10.0
    y = x @ torch.tensor([[0.5], [-1.0], [0.2]]) + torch.randn(n, 1, generator=g)
    model = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.linalg.lstsq(x, y).solution.T)
    a = default_nbeta(n) * float(torch.linalg.eigvalsh(x.double().T @ x.double() / n)[-1]) + 1.0
    res = estimate_llc(
        model, half_sq, (x, y), sampler="sgld", num_draws=100, num_burnin=100, seed=0
    )
    assert 0.98 * a <= res.diagnostics.end_curvature["curvature"] <= 1.001 * a


def test_virial_ratio_is_one_at_equilibrium_and_measures_heating():
    # E[(w − w*)·∇U] = d for any target ∝ exp(−U); for this quadratic loss nβ·(L − L*) is also
    # half of nβ·(w − w*)·∇L, so λ̂ / (d/2) and the virial ratio read the same heating.
    model, data, truth = linear_regression(n=4000)
    kw = dict(num_draws=2000, num_burnin=500, seed=1)
    calm = estimate_llc(model, half_sq, data, **kw)
    v = calm.diagnostics.virial
    assert v["records"] == 250 and len(v["per_chain"]) == 4
    assert v["ratio"] == pytest.approx(1.0, abs=0.08)
    assert not any("virial" in w for w in calm.diagnostics.warnings)
    # minibatch noise left in (batch 32, no correction) heats the chains by a third
    hot = estimate_llc(
        model, half_sq, data, step_size=2e-4, batch_size=32, minibatch_correction=False, **kw
    )
    ratio, stderr = hot.diagnostics.virial["ratio"], hot.diagnostics.virial["stderr"]
    assert ratio > 1.15
    # the records carry the batch-32 gradient noise: agreement within their standard error
    assert hot.llc_mean / truth == pytest.approx(ratio, abs=0.03 + 3 * stderr)
    assert any("virial ratio" in w and "hotter" in w for w in hot.diagnostics.warnings)


def test_virial_ratio_shows_chains_not_yet_spread_along_flat_directions():
    # At a singular w* the directions held only by γ = 1 need ~1/(εγ) ≫ 2,000 SGLD steps to
    # spread: the ratio reads well below 1; below 0.8 (by 3 standard errors) it is a "cold"
    # warning. The default ("auto": full-batch BAOAB here) needs ~1/(ε√γ) and has spread.
    from slt_probe.truth.cases import dln_case

    case = dln_case([5, 4, 3, 4], 1, n=4000, seed=0)
    kw = dict(num_draws=1000, num_burnin=1000)
    res = estimate_llc(case.model, case.loss_fn, case.data, sampler="sgld", **kw)
    ratio, stderr = res.diagnostics.virial["ratio"], res.diagnostics.virial["stderr"]
    assert 0.1 < ratio < 0.7
    cold = [w for w in res.diagnostics.warnings if "chains are cold" in w]
    assert len(cold) == int(ratio + 3 * stderr < 0.8)
    assert not any("hotter" in w for w in res.diagnostics.warnings)
    default = estimate_llc(case.model, case.loss_fn, case.data, **kw)
    assert default.sampler == "baoab"
    assert default.diagnostics.virial["ratio"] > 0.8
    assert not any("chains are cold" in w for w in default.diagnostics.warnings)
    assert abs(default.llc_mean / case.true_llc - 1) < abs(res.llc_mean / case.true_llc - 1)


def test_negative_llc_warns_that_w_star_is_not_a_minimum():
    model, data, _ = linear_regression(n=2000)
    with torch.no_grad():
        model.bias.add_(0.5)  # off the minimum: chains run downhill
    res = estimate_llc(model, half_sq, data, num_draws=300, num_burnin=0, seed=0)
    assert res.llc_mean < 0
    assert any("not a local minimum" in w for w in res.diagnostics.warnings)


def test_llc_estimator_for_user_driven_loops():
    est = LLCEstimator(num_chains=2, num_draws=3, nbeta=10.0, init_loss=1.0)
    for draw, losses in enumerate([[1.1, 1.2], [1.3, 1.2], [1.2, 1.4]]):
        est.update_all(draw, torch.tensor(losses))
    res = est.result()
    assert res.llc_per_chain.tolist() == pytest.approx([2.0, 2.667], rel=1e-3)
    assert res.llc_mean == pytest.approx(2.3333, rel=1e-3)
    with pytest.raises(IndexError):
        est.update(2, 0, 1.0)


class WithBatchNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 1)
        self.bn = nn.BatchNorm1d(1)

    def forward(self, x):
        return self.bn(self.lin(x))


def _data(n=64):
    return torch.randn(n, 3), torch.randn(n, 1)


def test_error_batchnorm_in_train_mode():
    with pytest.raises(ValueError, match=r"BatchNorm1d\) is in train mode.*model.eval\(\)"):
        estimate_llc(WithBatchNorm().train(), half_sq, _data())


def test_error_dropout_in_train_mode():
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.1), nn.Linear(4, 1)).train()
    with pytest.raises(ValueError, match="Dropout"):
        estimate_llc(model, half_sq, _data())


def test_error_non_scalar_loss():
    with pytest.raises(ValueError, match="scalar mean loss, got shape"):
        estimate_llc(nn.Linear(3, 1), lambda o, y: (o - y) ** 2, _data())


def test_error_empty_data():
    with pytest.raises(ValueError, match="data is empty"):
        estimate_llc(nn.Linear(3, 1), half_sq, (torch.zeros(0, 3), torch.zeros(0, 1)))


def test_error_nan_at_w_star():
    model = nn.Linear(3, 1)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="parameter 'weight' contains NaN or inf: w\\* must be"):
        estimate_llc(model, half_sq, _data())


def test_error_no_trainable_parameters():
    model = nn.Linear(3, 1).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        estimate_llc(model, half_sq, _data())


@pytest.mark.parametrize("eps", [0.0, -0.1])
def test_error_non_positive_step_size(eps):
    with pytest.raises(ValueError, match="step_size must be a positive finite number"):
        estimate_llc(nn.Linear(3, 1), half_sq, _data(), step_size=eps)


def test_error_unknown_backend_and_sampler():
    with pytest.raises(ValueError, match="backend must be one of"):
        estimate_llc(nn.Linear(3, 1), half_sq, _data(), backend="jax")
    with pytest.raises(ValueError, match="sampler must be one of"):
        estimate_llc(nn.Linear(3, 1), half_sq, _data(), sampler="nuts")
    with pytest.raises(ValueError, match="no faithful SGNHT"):
        estimate_llc(nn.Linear(3, 1), half_sq, _data(), sampler="sgnht", backend="devinterp")


@pytest.mark.parametrize("sampler", ["sgnht", "rmsprop_sgld", "baoab"])
def test_other_samplers_estimate_the_regular_llc(sampler):
    model, data, truth = linear_regression(n=4000)
    res = estimate_llc(
        model, half_sq, data, sampler=sampler, num_draws=1500, num_burnin=1000, seed=2
    )
    assert res.sampler == sampler
    assert res.llc_mean == pytest.approx(truth, rel=0.2)


def test_auto_step_repeats_a_diverged_main_run_at_a_quarter_of_the_step(monkeypatch):
    """A pilot that missed the curvature which breaks the main run: "auto" retries at ε/4."""
    from slt_probe.estimators import llc as llc_module
    from slt_probe.estimators.calibration import Calibration

    model, data, truth = linear_regression(n=2000)
    # the curvature of nβ·L_n here is ≈ nβ ≈ 263; ε = 0.06 gives ε·a ≈ 16 (divergent), ε/4
    # still ≈ 4 (divergent), ε/16 ≈ 1 (stable)
    bad = Calibration(step_size=0.06, accuracy=0.2, curvature_at_w_star=1.0, reason="forced")
    monkeypatch.setattr(llc_module, "calibrate", lambda posterior, kernel, budget, accuracy: bad)
    # SGLD: its ε·a stability bound is what the forced ε breaks (BAOAB's is ε·√a)
    res = estimate_llc(model, half_sq, data, sampler="sgld", num_draws=400, num_burnin=200, seed=0)
    retries = res.diagnostics.calibration["main_run_retries"]
    assert [r["step_size"] for r in retries] == pytest.approx([0.06, 0.015, 0.06 / 16])
    assert all(r["diverged_chains"] > 0 for r in retries[:2])
    # ε/16 is stable, but its ε·a ≈ 1 is the stiffness warned about (a discretisation bias of
    # +25 % and more), so it is recalibrated to the forced accuracy at the curvature reached
    assert "stiff_end" in retries[2]
    a = retries[2]["stiff_end"]["curvature"]
    assert res.step_size == pytest.approx(0.2 / a)
    assert res.diagnostics.calibration["step_size"] == pytest.approx(0.2 / a)
    assert res.diagnostics.num_diverged == 0
    assert "repeated at ε/4" in res.diagnostics.warnings[0]
    assert res.llc_mean == pytest.approx(truth, rel=0.15)


def test_auto_step_is_recalibrated_where_the_chains_ended_too_stiff_for_it(monkeypatch):
    """A calibrated ε that is stable but too coarse where the chains went (stiffness above the
    warning level) is recalibrated to the curvature they reached, once, without a warning."""
    from slt_probe.estimators import llc as llc_module
    from slt_probe.estimators.calibration import Calibration
    from slt_probe.estimators.diagnostics import STIFFNESS_WARN

    model, data, truth = linear_regression(n=2000)
    x = torch.cat([data[0], torch.ones(2000, 1)], 1).double()
    a = default_nbeta(2000) * float(torch.linalg.eigvalsh(x.T @ x / 2000)[-1]) + 1.0
    # a pilot that missed the curvature: ε·a = 2, stable for SGLD (below 4) but far too coarse
    coarse = Calibration(
        step_size=2.0 / a, accuracy=0.1, curvature_at_w_star=a / 20, reason="forced"
    )
    monkeypatch.setattr(llc_module, "calibrate", lambda posterior, kernel, budget, accuracy: coarse)
    kw = dict(sampler="sgld", num_draws=400, num_burnin=200, seed=0)
    res = estimate_llc(model, half_sq, data, **kw)
    (retry,) = res.diagnostics.calibration["main_run_retries"]
    assert retry["step_size"] == pytest.approx(2.0 / a)
    assert retry["stiff_end"]["stiffness"] > STIFFNESS_WARN
    # the new ε meets the accuracy at the curvature the chains met, which the end check measures
    # on 256 of the 2,000 examples (so near, not at, the full data's a)
    assert res.step_size == pytest.approx(0.1 / retry["stiff_end"]["curvature"])
    assert retry["stiff_end"]["curvature"] == pytest.approx(a, rel=0.15)
    assert res.diagnostics.end_curvature["stiffness"] < STIFFNESS_WARN
    assert not any("coarse" in w or "repeated" in w for w in res.diagnostics.warnings)
    assert "ε recalibrated" in res.diagnostics.calibration["reason"]
    # a fixed ε is the user's: the same coarse ε given explicitly runs as given, with a warning
    fixed = estimate_llc(model, half_sq, data, step_size=2.0 / a, **kw)
    assert fixed.step_size == 2.0 / a
    assert any("too coarse" in w for w in fixed.diagnostics.warnings)
    assert abs(res.llc_mean / truth - 1) < abs(fixed.llc_mean / truth - 1)


def test_fixed_step_size_is_never_changed_behind_the_user():
    model, data, _ = linear_regression(n=1000)
    res = estimate_llc(model, half_sq, data, step_size=1.0, num_draws=30, num_burnin=0)
    assert res.step_size == 1.0 and res.diagnostics.num_diverged == 4
    assert "main_run_retries" not in res.diagnostics.calibration


def test_auto_sampler_is_full_batch_baoab_only_where_a_full_batch_step_is_cheap():
    from slt_probe.estimators.arguments import FULL_BATCH_WORK, resolve_sampler

    model, (x, y), _ = linear_regression(n=4000)  # d = 10
    base = dict(
        sampler="auto",
        batch_size=None,
        model=model,
        data=(x, y),
        backend="vmap",
        step_size="auto",
        sampler_options=None,
    )
    assert resolve_sampler(base) == ("baoab", 4000)
    assert resolve_sampler(base | {"data": TensorDataset(x, y)}) == ("baoab", 4000)
    assert resolve_sampler(base | {"data": DataLoader(TensorDataset(x, y), 50)}) == ("baoab", 4000)
    # an explicit ε is SGLD's ε; options are SGLD's; a minibatch heats momentum methods
    assert resolve_sampler(base | {"step_size": 1e-4}) == ("sgld", None)
    assert resolve_sampler(base | {"sampler_options": {"noise": "independent"}}) == ("sgld", None)
    assert resolve_sampler(base | {"batch_size": 100}) == ("sgld", 100)
    assert resolve_sampler(base | {"batch_size": 4000}) == ("baoab", 4000)
    assert resolve_sampler(base | {"backend": "devinterp"}) == ("sgld", None)
    big = torch.zeros(FULL_BATCH_WORK // 10 + 1, 4)
    assert resolve_sampler(base | {"data": (big, big)}) == ("sgld", None)
    assert resolve_sampler(base | {"sampler": "sgnht"}) == ("sgnht", None)
    assert resolve_sampler(base | {"sampler": "baoab", "step_size": 0.1}) == ("baoab", 4000)
    assert resolve_sampler(base | {"sampler": "baoab", "batch_size": 100}) == ("baoab", 100)


def test_auto_sampler_estimates_the_regular_llc_with_full_batch_baoab():
    model, data, truth = linear_regression(n=4000)
    res = estimate_llc(model, half_sq, data, sampler="auto", num_draws=1000, num_burnin=500)
    assert (res.sampler, res.batch_size) == ("baoab", 4000)
    assert res.llc_mean == pytest.approx(truth, rel=0.1)
    assert res.diagnostics.r_hat < 1.1


def test_baoab_spreads_along_flat_directions_where_sgld_is_still_cold():
    # the case of test_virial_ratio_shows_chains_not_yet_spread_along_flat_directions: SGLD
    # needs ~a_max/γ steps to cross the flat directions, BAOAB ~√(a_max/γ)
    from slt_probe.truth.cases import dln_case

    case = dln_case([5, 4, 3, 4], 1, n=4000, seed=0)
    budget = dict(num_draws=1000, num_burnin=1000)
    sgld = estimate_llc(case.model, case.loss_fn, case.data, sampler="sgld", **budget)
    auto = estimate_llc(case.model, case.loss_fn, case.data, sampler="auto", **budget)
    assert auto.sampler == "baoab"
    assert sgld.diagnostics.virial["ratio"] < 0.7
    assert 0.85 < auto.diagnostics.virial["ratio"] < 1.15
    assert auto.llc_mean > sgld.llc_mean
