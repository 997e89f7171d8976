"""Run until trustworthy: ``estimate_llc(target_rse=...)`` keeps drawing, continuing the same
chains, until split R-hat, drift and the relative standard error pass, or the step budget runs
out, which is then a warning."""

import pytest
import torch
from torch import nn

from slt_probe import estimate_llc
from slt_probe.sampling.driver import ChainTrace


def half_sq(out, y):
    return 0.5 * ((out - y) ** 2).sum(-1).mean()


def linear_regression(n=2000, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.randn(4, 2, generator=g) + torch.randn(n, 2, generator=g)
    model = nn.Linear(4, 2)
    sol = torch.linalg.lstsq(torch.cat([x, torch.ones(n, 1)], 1), y).solution
    with torch.no_grad():
        model.weight.copy_(sol[:4].T)
        model.bias.copy_(sol[4])
    return model, (x, y), 5.0


def test_draws_in_rounds_until_the_target_precision():
    model, data, truth = linear_regression()
    kw = dict(num_chains=4, num_burnin=300, num_draws=200, seed=0)
    once = estimate_llc(model, half_sq, data, **kw)
    rse_once = once.llc_stderr / once.llc_mean
    res = estimate_llc(model, half_sq, data, target_rse=0.03, **kw)
    p = res.diagnostics.precision
    assert rse_once > 0.03  # the first round alone is not precise enough
    assert p["met"] and p["rounds"] > 1 and p["missing"] == []
    assert res.num_draws == 200 * p["rounds"] == res.loss_trace.shape[1]
    assert p["steps"] == 300 + res.num_draws <= p["max_steps"] == 300 + 8 * 200
    assert res.llc_stderr / res.llc_mean <= 0.03 and res.diagnostics.r_hat <= 1.05
    assert res.llc_mean == pytest.approx(truth, rel=0.1)
    assert not any("target precision" in w for w in res.diagnostics.warnings)


def test_a_spent_budget_is_a_warning_not_a_silent_number():
    model, data, _ = linear_regression()
    res = estimate_llc(
        model, half_sq, data, num_burnin=100, num_draws=50, target_rse=1e-6, max_steps=250
    )
    p = res.diagnostics.precision
    assert not p["met"] and p["steps"] == 250 and p["rounds"] == 3  # 150, then 2 × 50 more
    assert any("relative standard error" in m for m in p["missing"])
    assert any("target precision not reached" in w for w in res.diagnostics.warnings)


def test_precision_arguments_are_checked():
    model, data, _ = linear_regression(n=200)
    with pytest.raises(ValueError, match="max_steps is the budget of target_rse"):
        estimate_llc(model, half_sq, data, max_steps=1000)
    with pytest.raises(ValueError, match="target_rse must be > 0"):
        estimate_llc(model, half_sq, data, target_rse=0.0)
    with pytest.raises(ValueError, match=r"max_steps must be >= num_burnin \+ num_draws = 200"):
        estimate_llc(
            model, half_sq, data, num_burnin=100, num_draws=100, target_rse=0.1, max_steps=150
        )
    with pytest.raises(ValueError, match="no extrapolate"):
        estimate_llc(model, half_sq, data, target_rse=0.1, extrapolate=True)


def test_extended_trace_keeps_a_diverged_chain_diverged():
    nan = float("nan")
    first = ChainTrace(
        losses=torch.tensor([[1.0, 2.0], [1.0, nan]]),
        diverged_at=torch.tensor([-1, 1]),
        final_position=torch.zeros(2, 1),
    )
    more = ChainTrace(
        losses=torch.tensor([[3.0, nan], [1.0, 1.0]]),
        diverged_at=torch.tensor([1, -1]),
        final_position=torch.ones(2, 1),
    )
    both = first.extend(more)
    assert both.diverged_at.tolist() == [3, 1]
    assert both.losses[0, :3].tolist() == [1.0, 2.0, 3.0]
    assert torch.isnan(both.losses[1, 1:]).all()  # its continuation from w* is not counted
    assert torch.equal(both.final_position, more.final_position)


def test_probe_points_stop_when_trustworthy():
    from slt_probe import LLCProbe

    model, data, _ = linear_regression()
    probe = LLCProbe(
        half_sq,
        data,
        schedule=[0],
        hessian=False,
        num_burnin=300,
        num_draws=200,
        target_rse=0.03,
    )
    probe.step(0, model)
    row = probe.rows[-1]
    assert bool(row["precision_met"])
    assert row["num_draws"] % 200 == 0 and row["num_draws"] > 200
