"""Random known-λ cases: deterministic from the seed, w* a critical point on the truth's stratum,
λ from the formulas, every family drawn."""

import pytest
import torch

from slt_probe.truth.bridge import torch_to_jax
from slt_probe.truth.cases import MonomialRegression
from slt_probe.truth.formulas import dln_llc, normal_crossing_llc, rrr_llc, tanh_llc
from slt_probe.truth.random_cases import (
    FAMILIES,
    MAX_D,
    linear_network_case,
    numerical_rank,
    random_case,
    random_cases,
    random_seeds,
)

SEEDS = range(16)


@pytest.fixture(scope="module")
def cases():
    return random_cases(len(SEEDS))


def _grad_norm(case):
    loss = case.loss_fn(case.model(case.data[0]), case.data[1])
    grads = torch.autograd.grad(loss, list(case.model.parameters()))
    return float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))


def test_every_family_is_drawn_and_sizes_are_bounded(cases):
    assert {c.info["family"] for c in cases} == set(FAMILIES)
    assert len({c.name for c in cases}) == len(cases)
    for c in cases:
        assert 2 <= c.d <= MAX_D, c.name
        assert c.n in (1_000, 10_000)
        assert c.d == sum(p.numel() for p in c.model.parameters())
        assert c.info["case_seed"] == int(c.name[1:].split("_")[0])


def test_same_seed_same_case_bit_for_bit():
    a, b = random_case(11), random_case(11)
    assert a.name == b.name and a.true_llc == b.true_llc
    assert torch.equal(a.data[0], b.data[0]) and torch.equal(a.data[1], b.data[1])
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)
    assert random_case(12).name != a.name or not torch.equal(random_case(12).data[1], a.data[1])


def test_wstar_is_a_critical_point(cases):
    for c in cases:
        g = _grad_norm(c)
        # the truth has ‖∇L_n‖ ~ √(d/n) ≥ 1e-2; float32 w* resolves ~1e-7
        assert g < 2e-5, (c.name, g)


def test_linear_networks_sit_on_the_rank_r_stratum_with_non_aligned_bases(cases):
    nets = [c for c in cases if c.info["family"] in ("dln", "rrr")]
    assert len(nets) >= 6
    for c in nets:
        r = c.info["r"]
        assert c.info["layer_ranks"] == [r] * (len(c.info["widths"]) - 1), c.name
        assert c.info["product_rank"] == r
        weights = [m.weight.detach() for m in c.model if isinstance(m, torch.nn.Linear)]
        assert [numerical_rank(w, 1e-4) for w in weights] == [r] * len(weights)
        for w in weights:  # random bases: no exactly-zero row or column (nothing aligned)
            assert (w.abs().sum(dim=0) > 1e-3).all() and (w.abs().sum(dim=1) > 1e-3).all()


def test_true_llc_comes_from_the_formulas(cases):
    for c in cases:
        fam, info = c.info["family"], c.info
        if fam == "dln":
            assert (c.true_llc, c.multiplicity) == dln_llc(info["widths"], info["r"])
        elif fam == "rrr":
            assert c.true_llc == rrr_llc(*info["widths"], info["r"])
        elif fam == "regular":
            assert c.true_llc == c.d / 2
        elif fam == "normal_crossing":
            assert (c.true_llc, c.multiplicity) == normal_crossing_llc(info["powers"])
        else:
            assert (c.true_llc, c.multiplicity) == tanh_llc(info["hidden"])


def test_tanh_llc_closed_form():
    # H = 1: K ∝ a²b², the normal crossing λ = ½ with multiplicity 2
    assert tanh_llc(1) == (0.5, 2)
    assert tanh_llc(2) == (pytest.approx(2 / 3), 1)
    assert tanh_llc(4) == (1.0, 2)  # i = 2: (4 + 4 + 2)/10
    assert tanh_llc(6) == (pytest.approx(1.2), 1)
    assert tanh_llc(9) == (1.5, 2)  # i = 3: (9 + 9 + 3)/14
    with pytest.raises(ValueError, match="hidden"):
        tanh_llc(0)


def test_rotated_monomial_keeps_its_zero_and_rejects_bad_rotation():
    rot = torch.linalg.qr(torch.randn(2, 2, dtype=torch.float64))[0]
    m = MonomialRegression(
        (1, 2), init=torch.tensor([0.3, -0.2], dtype=torch.float64), rotation=rot
    )
    u = rot @ m.w.detach()
    x = torch.ones(1, 1, dtype=torch.float64)
    assert float(m(x).detach()) == pytest.approx(float(u[0] * u[1] ** 2))
    params, apply_fn = torch_to_jax(m)  # NUTS samples the same rotated model
    assert float(apply_fn(params, x.numpy())[0, 0]) == pytest.approx(float(m(x)), rel=1e-12)
    with pytest.raises(ValueError, match="rotation"):
        MonomialRegression((1, 2), rotation=torch.eye(3))


def test_linear_network_case_records_the_optimiser():
    case = linear_network_case([4, 3, 4], 1, n=500, seed=1, name="x")
    assert case.true_llc == rrr_llc(4, 3, 4, 1)
    assert case.info["lbfgs_rounds"] >= 1 and "L-BFGS" in case.info["optimiser"]


def test_bad_input_names_the_field():
    with pytest.raises(ValueError, match="seed"):
        random_case(-1)
    with pytest.raises(ValueError, match="family"):
        random_case(0, family="resnet")
    with pytest.raises(ValueError, match="count"):
        random_seeds(0)
    assert random_seeds(3, 5) == [5, 6, 7]
    assert random_case(3, family="tanh").info["family"] == "tanh"
