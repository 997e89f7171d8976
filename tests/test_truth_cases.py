"""Truth cases: w* is a critical point of L_n, true_llc is what the formulas say, seeds work."""

import pytest
import torch

from slt_probe.truth.cases import (
    CASES,
    dln_case,
    half_squared_error,
    normal_crossing_case,
    regular_case,
    rrr_case,
    standard_cases,
)
from slt_probe.truth.formulas import dln_llc, rrr_llc


@pytest.fixture(scope="module")
def cases():
    return standard_cases()


def _grad_norm(case):
    loss = case.loss_fn(case.model(case.data[0]), case.data[1])
    grads = torch.autograd.grad(loss, list(case.model.parameters()))
    return float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))


def test_standard_suite_shape(cases):
    assert len(cases) >= 6
    lams = [c.true_llc for c in cases]
    assert lams == sorted(lams)
    assert min(c.d for c in cases) == 2 and max(c.d for c in cases) >= 150
    assert sum(c.name.startswith("rrr") for c in cases) >= 2
    assert sum(c.name.startswith("dln") for c in cases) >= 2
    assert len({c.name for c in cases}) == len(cases)


def test_wstar_is_a_critical_point(cases):
    for case in cases:
        g = _grad_norm(case)
        # the truth itself has ‖∇L_n‖ ≈ √(d/n) ~ 1e-2; w* must be far below that
        assert g < 1e-5, (case.name, g)
        assert case.grad_norm == pytest.approx(g, abs=1e-6)
        assert case.d == sum(p.numel() for p in case.model.parameters())
        assert case.n == 10_000


def test_true_llc_matches_formulas(cases):
    by_name = {c.name: c for c in cases}
    assert by_name["regular_linear_3x1"].true_llc == 2.0  # d = 3 weights + 1 bias
    assert by_name["regular_linear_8x4"].true_llc == 18.0
    assert by_name["normal_crossing_1_2"].true_llc == 0.25
    assert by_name["normal_crossing_1_1"].multiplicity == 2
    assert by_name["rrr_4-3-4_r1"].true_llc == rrr_llc(4, 3, 4, 1) == 6.0
    assert by_name["dln_8-8-8-8_r2"].true_llc == dln_llc([8, 8, 8, 8], 2)[0] == 26.0


def test_most_singular_dln_has_every_layer_rank_r_and_moved_off_the_truth():
    case = dln_case([10, 8, 6, 4], 2, n=2000, seed=3)
    ranks = [
        int(torch.linalg.matrix_rank(layer.weight.double(), atol=1e-5)) for layer in case.model
    ]
    assert ranks == [2, 2, 2]
    assert case.exact and case.info["lbfgs_rounds"] >= 1
    # w* fits the data at least as well as the truth did: the loss is ≈ ½·E‖ε‖² = 2 minus the
    # fitted noise, never more than that plus sampling error
    assert case.loss_at_wstar() < 2.0 * 1.05


def test_generic_dln_is_flagged_as_lower_bound():
    case = dln_case([5, 4, 3, 4], 1, most_singular=False, n=500)
    assert not case.exact and case.name.endswith("_generic")
    ranks = [
        int(torch.linalg.matrix_rank(layer.weight.double(), atol=1e-5)) for layer in case.model
    ]
    assert ranks == [1, 3, 3]


def test_regular_case_is_the_ols_fit():
    case = regular_case(4, 2, n=500, seed=1)
    x, y = (t.double() for t in case.data)
    design = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    coef = torch.linalg.lstsq(design, y).solution
    assert torch.allclose(case.model.weight.double(), coef[:4].T, atol=1e-5)
    assert case.d == 10 and case.true_llc == 5.0


def test_normal_crossing_model_and_loss():
    case = normal_crossing_case((1, 2), n=200)
    with torch.no_grad():
        case.model.w.copy_(torch.tensor([2.0, 3.0]))
        assert torch.allclose(case.model(case.data[0]), 18.0 * case.data[0])
    assert half_squared_error(torch.ones(4, 2), torch.zeros(4, 2)) == 1.0
    with pytest.raises(ValueError, match="powers"):
        normal_crossing_case((1,))


def test_seeds_are_reproducible():
    a, b, c = (
        rrr_case(4, 3, 4, 1, n=300, seed=5),
        rrr_case(4, 3, 4, 1, n=300, seed=5),
        rrr_case(4, 3, 4, 1, n=300, seed=6),
    )
    assert torch.equal(a.data[0], b.data[0]) and torch.equal(a.model[0].weight, b.model[0].weight)
    assert not torch.equal(a.data[0], c.data[0])


def test_registry_and_bad_input():
    assert set(CASES) >= {"regular", "normal_crossing", "rrr", "dln"}
    with pytest.raises(ValueError, match="n "):
        regular_case(3, 1, n=5)
    with pytest.raises(ValueError, match="r"):
        rrr_case(3, 2, 3, 3)
