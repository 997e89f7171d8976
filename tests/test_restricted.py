"""The weight-restricted LLC: estimate_llc(params=...) (names, globs, masks, callables)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from slt_probe import estimate_llc
from slt_probe.estimators.selection import resolve_params
from slt_probe.sampling.driver import run_chains
from slt_probe.sampling.functional import FlatModel
from slt_probe.sampling.kernel import Potential
from slt_probe.sampling.kernels import make_kernel
from slt_probe.truth.restricted import random_restricted_cases, restricted_dln_case

QUICK = dict(num_chains=2, num_draws=60, num_burnin=40, step_size=1e-4)


def _mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    x = torch.randn(300, 3)
    return model, nn.functional.mse_loss, (x, model(x).detach() + 0.1 * torch.randn(300, 2))


@pytest.mark.parametrize(
    "everything",
    [["*"], ["0.weight", "0.bias", "2.*"], lambda name, p: True, "all-masks"],
    ids=["glob", "names", "callable", "masks"],
)
def test_selecting_every_parameter_is_bit_identical_to_none(everything):
    model, loss, data = _mlp()
    if everything == "all-masks":
        everything = {k: torch.ones_like(p, dtype=torch.bool) for k, p in model.named_parameters()}
    a = estimate_llc(model, loss, data, **QUICK)
    b = estimate_llc(model, loss, data, params=everything, **QUICK)
    assert np.array_equal(a.llc_per_chain, b.llc_per_chain)
    assert np.array_equal(a.loss_trace, b.loss_trace)
    assert b.sampled_weights == {
        "names": {"0.weight": 15, "0.bias": 5, "2.weight": 10, "2.bias": 2},
        "total": 32,
    }


@pytest.mark.parametrize(
    "params, message",
    [
        (["nope.*"], "'nope.*' matches no parameter"),
        ({"0.weight": torch.ones(3, 5, dtype=torch.bool)}, "shape (3, 5) but the parameter"),
        ({"0.weight": torch.ones(5, 3)}, "dtype torch.bool"),
        ({"0.weight": torch.zeros(5, 3, dtype=torch.bool)}, "selects no weights"),
        ({"missing": True}, "'missing' is not a parameter"),
        (lambda name, p: False, "selects no weights"),
        (lambda name, p: torch.ones(2, dtype=torch.bool), "params['0.weight']: the mask has shape"),
    ],
)
def test_bad_params_are_value_errors_naming_them(params, message):
    model, loss, data = _mlp()
    with pytest.raises(ValueError, match=re.escape(message)):
        estimate_llc(model, loss, data, params=params, **QUICK)


def test_params_of_the_wrong_type_is_a_type_error():
    model, loss, data = _mlp()
    with pytest.raises(TypeError, match="params must be None, a list"):
        estimate_llc(model, loss, data, params=3, **QUICK)


def test_a_frozen_model_can_be_probed_and_records_what_was_sampled():
    model, loss, data = _mlp()
    for p in model.parameters():
        p.requires_grad_(False)
    mask = torch.zeros(5, 3, dtype=torch.bool)
    mask[1:3] = True
    res = estimate_llc(model, loss, data, params={"0.weight": mask, "2.bias": True}, **QUICK)
    assert res.sampled_weights == {"names": {"0.weight": 6, "2.bias": 2}, "total": 8}
    assert np.isfinite(res.llc_mean)
    sel = resolve_params(model, ["2.*"])
    assert sel.names == ("2.weight", "2.bias") and sel.flat_mask() is None


@pytest.mark.parametrize("sampler", ["sgld", "sgnht", "rmsprop_sgld"])
def test_unselected_coordinates_never_move_for_every_kernel(sampler):
    model, loss, (x, y) = _mlp()
    flat = FlatModel(model, loss)
    mask = torch.zeros(3, flat.dim)
    mask[0, :7] = 1
    mask[1, 10:12] = 1
    mask[2, 20:] = 1
    potential = Potential(100.0, 1.0, flat.w_star, mask=mask)
    trace = run_chains(
        make_kernel(sampler),
        potential,
        1e-3,
        flat,
        x,
        y,
        num_chains=3,
        num_steps=60,
        batch_size=64,
        generator=torch.Generator().manual_seed(0),
    )
    moved = trace.final_position != flat.w_star
    assert torch.equal(moved & (mask == 0), torch.zeros_like(moved))
    assert moved[mask == 1].float().mean() > 0.9
    if sampler == "sgnht":  # the thermostat normalises by each chain's own count
        assert trace.final_state.selected.flatten().tolist() == [7.0, 2.0, 12.0]


def _relative_errors(cases, **kwargs):
    errors = []
    for c in cases:
        res = estimate_llc(c.case.model, c.case.loss_fn, c.case.data, params=c.params, **kwargs)
        assert res.sampled_weights["total"] == c.case.d
        errors.append(abs(res.llc_mean - c.true_llc) / c.true_llc)
    return np.array(errors)


def test_restricted_dln_truths_quick():
    """One whole layer by name, one row subset by mask: rank(A_S)·rank(B)/2 (short chains)."""
    cases = [
        restricted_dln_case([5, 4, 3], 2, 2, n=2000, seed=1),
        restricted_dln_case([4, 5, 4], 3, 1, rows=[0, 2], n=2000, seed=2),
    ]
    assert [c.true_llc for c in cases] == [3.0, 4.0]
    errors = _relative_errors(cases, num_draws=600, num_burnin=400)
    assert errors.max() <= 0.25, errors


@pytest.mark.slow
def test_restricted_dln_truths_randomised_default_arguments():
    """12 randomised cases (widths, ranks, layer, row subsets; names and masks), default
    arguments: median relative error ≤ 10 %, worst ≤ 25 %."""
    cases = random_restricted_cases(12, seed=0)
    assert {type(c.params) for c in cases} == {list, dict}
    errors = _relative_errors(cases)
    print("restricted DLN relative errors", np.round(errors, 3).tolist())
    assert np.median(errors) <= 0.10 and errors.max() <= 0.25, errors


def test_docstring_examples_run():
    import doctest

    import slt_probe.estimators.grouped as grouped
    import slt_probe.estimators.llc as llc

    for module in (llc, grouped):
        assert doctest.testmod(module).failed == 0
