"""The burn-in that lasts until the loss trace stops trending (slt_probe.estimators.burnin)."""

import math

import numpy as np
import pytest
import torch

from slt_probe import estimate_llc
from slt_probe.estimators.burnin import trending
from slt_probe.estimators.result import Diagnostics


def _slow_regression(n: int = 1000, d: int = 4):
    """A linear-Gaussian regression whose every direction is weak (curvature nβ·h ≈ 2.9 beside
    γ = 1), so that SGLD at ε = 2.5e-3 relaxes from w* over ~50 steps: a burn-in of 0 leaves the
    rise of the loss in the first third of 600 draws. Its λ at γ is Σ_j ½·nβh_j/(nβh_j + γ)."""
    g = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(n, d, generator=g)
    y = x @ torch.randn(d, 1, generator=g) + 0.5 * torch.randn(n, 1, generator=g)
    model = torch.nn.Linear(d, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.linalg.lstsq(x, y).solution.T)
    nbeta = n / math.log(n)
    h = torch.linalg.eigvalsh(2 * x.T @ x / n)
    truth = float((0.5 * nbeta * h / (nbeta * h + 1.0)).sum())
    return model, (x, y), truth


SLOW = dict(sampler="sgld", step_size=2.5e-3, num_chains=32, num_burnin=0, num_draws=600, seed=2)


def test_a_trending_window_slides_until_it_stops_and_reads_the_truth():
    model, data, truth = _slow_regression()
    loss = torch.nn.functional.mse_loss
    fixed = estimate_llc(model, loss, data, max_burnin=0, **SLOW)
    slid = estimate_llc(model, loss, data, **SLOW)
    # without the rule: the transient stays in the draws, λ̂ reads low and says it is trending
    assert any(w.startswith("loss trace still rising") for w in fixed.diagnostics.warnings)
    assert fixed.llc_mean < 0.9 * truth
    assert fixed.diagnostics.burnin == {}
    # with it: a third of the draws (200 steps) per extension, the window keeps its length
    record = slid.diagnostics.burnin
    assert record["extensions"] >= 1 and not record["trending"]
    assert record["used"] == 200 * record["extensions"] == slid.num_burnin
    assert record["max"] == 600  # the default ceiling: at least num_burnin + num_draws
    assert slid.loss_trace.shape == (32, 600)
    assert not any(w.startswith("loss trace still") for w in slid.diagnostics.warnings)
    assert abs(slid.llc_mean - truth) < 3 * slid.llc_stderr
    assert abs(slid.llc_mean / truth - 1) < 0.1


def test_the_ceiling_stops_the_extensions_and_the_warning_stays():
    model, data, _ = _slow_regression()
    res = estimate_llc(
        model, torch.nn.functional.mse_loss, data, max_burnin=100, **{**SLOW, "num_draws": 300}
    )
    # a third of 300 draws is 100 steps: one extension reaches the ceiling, no second one
    record = res.diagnostics.burnin
    assert (record["extensions"], record["used"], record["max"]) == (1, 100, 100)
    assert res.loss_trace.shape == (32, 300) and res.num_burnin == 100


@pytest.mark.parametrize(
    "drift, spread, expected",
    [
        (0.6, 0.1, True),  # 6 % of λ̂ = 10, far beyond its noise
        (-0.6, 0.1, True),  # falling counts as much as rising
        (0.4, 0.1, False),  # 4 %: below the 5 % a target_rse of 0.05 could tell
        (0.6, 1.0, False),  # 6 %, but within three standard errors (0.5 · 3 = 1.5)
    ],
)
def test_a_trend_is_five_percent_of_the_estimate_and_three_standard_errors(drift, spread, expected):
    llc = 10.0 + spread * np.array([-1.0, -1.0, 1.0, 1.0]) * np.sqrt(3.0) / 2
    diagnostics = Diagnostics(drift=[drift] * 4)
    assert trending(llc, diagnostics) is expected
    # chains that diverged (NaN) are left out, and fewer than four cannot be judged
    three = np.append(llc[:3], np.nan)
    assert trending(three, Diagnostics(drift=[drift] * 3)) is False


def test_a_stationary_window_is_left_bit_for_bit_as_it_was():
    model, data, _ = _slow_regression()
    options = {**SLOW, "num_burnin": 400, "num_draws": 300, "num_chains": 4}
    on = estimate_llc(model, torch.nn.functional.mse_loss, data, **options)
    off = estimate_llc(model, torch.nn.functional.mse_loss, data, max_burnin=400, **options)
    assert on.diagnostics.burnin["extensions"] == 0
    assert np.array_equal(on.llc_per_chain, off.llc_per_chain)
    assert np.array_equal(on.loss_trace, off.loss_trace)


def test_the_virial_records_come_from_the_window_only():
    model, data, _ = _slow_regression()
    res = estimate_llc(model, torch.nn.functional.mse_loss, data, **SLOW)
    extensions = res.diagnostics.burnin["extensions"]
    assert extensions >= 1
    # one record every 8 steps of the window: the 600 − 200·k draws of the main run that are
    # left and 25 records of each 200-step extension
    kept_main = len([s for s in range(0, 600, 8) if s >= 200 * extensions])
    assert res.diagnostics.virial["records"] == kept_main + 25 * extensions


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_burnin": 100, "max_burnin": 50}, "max_burnin must be >= num_burnin = 100, got 50"),
        ({"max_burnin": -1}, "max_burnin"),
        (
            {
                "num_burnin": 10,
                "num_draws": 10,
                "target_rse": 0.1,
                "max_steps": 40,
                "max_burnin": 35,
            },
            "max_burnin + num_draws must be <= max_steps = 40, got 35 + 10",
        ),
        (  # target_rse's default budget: num_burnin + 8 × num_draws
            {"num_burnin": 10, "num_draws": 10, "target_rse": 0.1, "max_burnin": 85},
            "max_burnin + num_draws must be <= max_steps = 90, got 85 + 10",
        ),
        (
            {"num_burnin": 10, "max_burnin": 20, "extrapolate": True},
            "max_burnin extends one step size's chains: the vmap backend, no extrapolate",
        ),
    ],
)
def test_bad_max_burnin_is_named(options, message):
    model, data, _ = _slow_regression(n=50)
    with pytest.raises(ValueError, match=message.replace("+", r"\+")):
        estimate_llc(model, torch.nn.functional.mse_loss, data, step_size=1e-3, **options)


def test_with_target_rse_the_burnin_leaves_room_for_one_window():
    model, data, _ = _slow_regression()
    res = estimate_llc(
        model,
        torch.nn.functional.mse_loss,
        data,
        target_rse=0.05,
        max_steps=1000,
        **SLOW,
    )
    # the default ceiling 4·0 ∨ (0 + 600) = 600 fits max_steps − num_draws = 400 only as 400
    assert res.diagnostics.burnin["max"] == 400
    assert res.diagnostics.precision["steps"] <= 1000
