"""Closed-form learning coefficients: against each other where they overlap, and hand values."""

import pytest

from slt_probe.truth.formulas import (
    dln_llc,
    dln_num_params,
    minimally_singular_llc,
    normal_crossing_llc,
    regular_llc,
    rrr_llc,
    rrr_multiplicity,
)


def test_two_layer_dln_equals_rrr_on_a_grid():
    checked = 0
    for M in range(1, 8):
        for H in range(1, 8):
            for N in range(1, 8):
                for r in range(0, min(M, H, N) + 1):
                    lam, mult = dln_llc([M, H, N], r)
                    assert lam == pytest.approx(rrr_llc(M, H, N, r), abs=1e-12), (M, H, N, r)
                    assert mult == rrr_multiplicity(M, H, N, r), (M, H, N, r)
                    checked += 1
    assert checked > 800


@pytest.mark.parametrize(
    "M,H,N,r,expected",
    [
        # balanced case, M+H+N+r = 12 even: [2·4·8 − 0 − 16]/8 = 6
        (4, 3, 4, 1, 6.0),
        # M + H < N + r: (HM − Hr + Nr)/2 = (2 − 2 + 10)/2 (= MN/2: the image is all of R^10)
        (1, 2, 10, 1, 5.0),
        # N + H < M + r: (HN − Hr + Mr)/2 = (2 − 2 + 10)/2
        (10, 2, 1, 1, 5.0),
        # M + N < H + r: MN/2
        (2, 10, 3, 2, 3.0),
        # odd balanced: [2·5·6 − 0 − 25 + 1]/8 = 4.5, multiplicity 2
        (3, 3, 3, 2, 4.5),
    ],
)
def test_rrr_hand_values(M, H, N, r, expected):
    assert rrr_llc(M, H, N, r) == pytest.approx(expected)


def test_rrr_odd_balanced_case_has_multiplicity_two():
    assert rrr_multiplicity(3, 3, 3, 2) == 2
    assert rrr_multiplicity(4, 3, 4, 1) == 1


def test_full_rank_rank_one_rrr_is_minimally_singular():
    # y = b aᵀ x with true rank 1: the image is the (M + N − 1)-dimensional manifold of rank-1
    # matrices, the scaling (a, b) → (ta, b/t) is the only redundancy: λ = (M + N − 1)/2.
    for M, N in [(2, 3), (3, 5), (6, 4)]:
        assert rrr_llc(M, 1, N, 1) == minimally_singular_llc(M + N - 1)


def test_square_full_rank_network_is_d_over_2_minus_symmetries():
    # One layer: regular, λ = d/2. Two square layers at full rank: d = 2h², GL(h) removes h².
    assert dln_llc([3, 5], 3) == (regular_llc(15), 1)
    for h in (2, 3, 4):
        assert dln_llc([h, h, h], h)[0] == regular_llc(2 * h * h) - h * h / 2


def test_dln_hand_values():
    # [8,8,8,8], r=2: M_s = 6,6,6,6; S = all (ℓ=3), ΣS = 24, M̄ = 8, a = 3:
    # λ = (−4 + 2·16)/2 + 0 − (3·2/4)·8² + ½·(6 pairs · 36) = 14 − 96 + 108 = 26.
    assert dln_llc([8, 8, 8, 8], 2) == (26.0, 1)
    # [5,4,3,4], r=1: M_s sorted = 2,3,3,4; S = {2,3,3} (ℓ=2, ΣS=8 < 2·4): M̄ = 4, a = 2:
    # λ = (−1 + 9)/2 + 0 − (2/4)·16 + ½(6 + 6 + 9) = 4 − 8 + 10.5 = 6.5.
    assert dln_llc([5, 4, 3, 4], 1) == (6.5, 1)
    assert dln_num_params([5, 4, 3, 4]) == 20 + 12 + 12


def test_dln_value_is_below_d_over_2():
    for widths, r in [([10, 8, 6, 4], 2), ([8, 8, 8, 8], 2), ([6, 2, 6, 2, 6], 1)]:
        lam, mult = dln_llc(widths, r)
        assert 0 < lam < dln_num_params(widths) / 2
        assert mult >= 1


@pytest.mark.parametrize(
    "powers,expected",
    [((1, 1), (0.5, 2)), ((1, 2), (0.25, 1)), ((2, 2, 1), (0.25, 2)), ((3, 0), (1 / 6, 1))],
)
def test_normal_crossing(powers, expected):
    lam, mult = normal_crossing_llc(powers)
    assert lam == pytest.approx(expected[0])
    assert mult == expected[1]


def test_regular_and_minimally_singular():
    assert regular_llc(7) == 3.5
    assert minimally_singular_llc(0) == 0.0


@pytest.mark.parametrize(
    "call,field",
    [
        (lambda: rrr_llc(3, 2, 3, 3), "r"),
        (lambda: rrr_llc(0, 2, 3, 0), "M"),
        (lambda: dln_llc([4, -1, 4], 1), "widths[1]"),
        (lambda: dln_llc([4], 1), "widths"),
        (lambda: dln_llc([4, 3], 1), "r"),
        (lambda: normal_crossing_llc([0, 0]), "powers"),
        (lambda: normal_crossing_llc([1.5]), "powers[0]"),
        (lambda: regular_llc(0), "d"),
    ],
)
def test_bad_arguments_name_the_field(call, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        call()
