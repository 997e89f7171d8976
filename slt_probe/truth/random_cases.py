"""Random known-λ cases: a validation set nobody built by hand.

``random_case(seed)`` draws, deterministically from ``seed``, a family and its sizes, builds the
model, the data (x ~ N(0, I), y = f_{w0}(x) + unit Gaussian noise, loss ½‖f − y‖²) and w*, and
attaches λ and its multiplicity from :mod:`slt_probe.truth.formulas`:

- ``dln``: bias-free deep linear network, 3–4 layers, widths 2–7, true rank 1 ≤ r < min width.
  Every layer has rank r but with random, non-aligned bases: W_l = A_l·C_l·A_{l−1}ᵀ with A_l
  (H_l × r) a random orthonormal basis per width and C_l a random invertible r × r core (end
  to end singular values in [0.5, 2]). λ: Aoyagi (2024).
- ``rrr``: the same with two layers (M→H→N, widths 2–9); λ: Aoyagi & Watanabe (2005).
- ``regular``: linear regression with bias, d ≤ 40; λ = d/2.
- ``normal_crossing``: f = (Π_i u_i^{k_i})·x, u = R·w, 2–3 coordinates with k_i ∈ {1, 2, 3},
  R a random rotation in half the cases (λ does not depend on R); truth and w* = 0.
- ``tanh``: y = Σ_{h≤H} a_h·tanh(b_h·x), one input and output, H = 1–6, truth and w* = 0;
  λ = (H + i² + i)/(4i + 2) (:func:`slt_probe.truth.formulas.tanh_llc`).

w*: full-batch L-BFGS in float64 from the truth for the linear networks (the gradient of layer l
lies in the span of A_l and A_{l−1}, so the optimiser stays on the rank-r stratum whose λ is the
formula's; the layer ranks are measured and recorded in ``info``), the exact least-squares fit
for regressions, and w0 = 0 for the zero-truth models (a critical point by symmetry, which any
optimiser started there keeps). n is 1,000 or 10,000; d ≤ 100 so that NUTS is quick.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from slt_probe.truth.cases import (
    MonomialRegression,
    TruthCase,
    _finish,
    _gaussian_data,
    _lbfgs_refine,
    _orthonormal,
    regular_case,
)
from slt_probe.truth.formulas import (
    dln_llc,
    dln_num_params,
    normal_crossing_llc,
    rrr_llc,
    rrr_multiplicity,
    tanh_llc,
)

FAMILIES = ("dln", "rrr", "regular", "normal_crossing", "tanh")
#: Chance of each family (DLNs and RRRs, the issue's failing kind, get half the draws).
FAMILY_WEIGHTS = (0.3, 0.2, 0.15, 0.15, 0.2)
SAMPLE_SIZES = (1_000, 10_000)
MAX_D = 100
#: Singular values below this fraction of a layer's largest count as zero (float64 L-BFGS).
RANK_TOL = 1e-6


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def numerical_rank(matrix: torch.Tensor, tol: float = RANK_TOL) -> int:
    """Number of singular values above ``tol`` times the largest (0 for a zero matrix)."""
    s = torch.linalg.svdvals(matrix.detach().double())
    return int((s > tol * s.max()).sum()) if s.numel() and s.max() > 0 else 0


def rank_r_factors(widths: list[int], r: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Layer matrices W_l = A_l·C_l·A_{l−1}ᵀ (H_l × H_{l−1}) of rank exactly r each.

    A_l: a random H_l × r orthonormal basis per width (no zero rows or columns: nothing is
    aligned with the coordinate axes); C_l: a random r × r core Pᵀ·diag(s^{1/L}·jitter)·Q with
    P, Q random orthogonal, s ∈ [0.5, 2] the end-to-end singular values and jitter ∈ [0.8, 1.25]
    per layer (so the layers are not balanced).
    """
    L = len(widths) - 1
    bases = [_orthonormal(gen, h, r) for h in widths]
    sing = 0.5 + 1.5 * torch.rand(r, generator=gen, dtype=torch.float64)
    mats = []
    for layer in range(1, L + 1):
        jitter = 0.8 * 1.5625 ** torch.rand(r, generator=gen, dtype=torch.float64)
        core = _orthonormal(gen, r, r) @ torch.diag(sing ** (1.0 / L) * jitter)
        core = core @ _orthonormal(gen, r, r).T
        mats.append(bases[layer] @ core @ bases[layer - 1].T)
    return mats


def linear_network_case(widths, r: int, *, n: int, seed: int, name: str) -> TruthCase:
    """A bias-free linear network at the L-BFGS refit of a rank-r truth with random bases.

    ``info``: widths, r, L-BFGS rounds, the measured rank of every layer and of the product.
    """
    widths = [int(w) for w in widths]
    gen = torch.Generator().manual_seed(seed)
    mats = rank_r_factors(widths, r, gen)
    layers = [nn.Linear(a, b, bias=False) for a, b in zip(widths[:-1], widths[1:])]
    model = nn.Sequential(*layers).double()
    with torch.no_grad():
        for layer, w in zip(layers, mats):
            layer.weight.copy_(w)
    f0 = torch.linalg.multi_dot(mats[::-1])
    x, y = _gaussian_data(gen, n, widths[0], lambda x: x @ f0.T, widths[-1])
    rounds = _lbfgs_refine(model, x, y)
    weights = [layer.weight.detach() for layer in layers]
    product = torch.linalg.multi_dot(weights[::-1])
    if len(widths) == 3:
        lam, mult, source = (
            rrr_llc(*widths, r),
            rrr_multiplicity(*widths, r),
            "Aoyagi & Watanabe 2005",
        )
    else:
        (lam, mult), source = dln_llc(widths, r), "Aoyagi 2024"
    shape = "-".join(map(str, widths))
    return _finish(
        name,
        model,
        x,
        y,
        lam,
        mult,
        f"linear network {shape}, true rank {r} with random non-aligned bases, w* = L-BFGS "
        f"refit from the truth; d = {dln_num_params(widths)}, λ = {lam:g} ({source})",
        seed=seed,
        info={
            "widths": widths,
            "r": r,
            "lbfgs_rounds": rounds,
            "layer_ranks": [numerical_rank(w) for w in weights],
            "product_rank": numerical_rank(product),
            "optimiser": "L-BFGS (float64, strong Wolfe) from the truth",
        },
    )


def _draw_widths(rng: np.random.Generator, layers: int, low: int, high: int) -> list[int]:
    while True:  # rejection keeps d ≤ MAX_D; terminates fast (all-low widths always fit)
        widths = [int(w) for w in rng.integers(low, high + 1, size=layers + 1)]
        if dln_num_params(widths) <= MAX_D:
            return widths


def _dln(rng, n, data_seed, tag):
    widths = _draw_widths(rng, int(rng.integers(3, 5)), 2, 7)
    r = int(rng.integers(1, min(widths)))
    name = f"{tag}_dln_{'-'.join(map(str, widths))}_r{r}"
    return linear_network_case(widths, r, n=n, seed=data_seed, name=name)


def _rrr(rng, n, data_seed, tag):
    widths = _draw_widths(rng, 2, 2, 9)
    r = int(rng.integers(1, min(widths)))
    name = f"{tag}_rrr_{'-'.join(map(str, widths))}_r{r}"
    return linear_network_case(widths, r, n=n, seed=data_seed, name=name)


def _regular(rng, n, data_seed, tag):
    while True:
        dim_in, dim_out = int(rng.integers(1, 9)), int(rng.integers(1, 5))
        if dim_out * (dim_in + 1) <= 40:
            break
    case = regular_case(dim_in, dim_out, n=n, seed=data_seed)
    case.name = f"{tag}_{case.name}"
    case.info.update(optimiser="exact least squares (normal equations, float64)")
    return case


def _normal_crossing(rng, n, data_seed, tag):
    powers = [int(k) for k in rng.integers(1, 4, size=int(rng.integers(2, 4)))]
    rotate = bool(rng.random() < 0.5)
    gen = torch.Generator().manual_seed(data_seed)
    rotation = _orthonormal(gen, len(powers), len(powers)) if rotate else None
    x, y = _gaussian_data(gen, n, 1, torch.zeros_like, 1)
    model = MonomialRegression(powers, rotation=rotation).double()
    lam, mult = normal_crossing_llc(powers)
    label = "_".join(map(str, powers)) + ("_rot" if rotate else "")
    return _finish(
        f"{tag}_normal_crossing_{label}",
        model,
        x,
        y,
        lam,
        mult,
        f"f(x) = Π (Rw)_i^k_i·x, k = {powers}, {'random' if rotate else 'no'} rotation R, "
        f"w* = 0: λ = {lam:g}, m = {mult}",
        seed=data_seed,
        info={"powers": powers, "rotated": rotate, "optimiser": "none: w0 = 0 is critical"},
    )


def _tanh(rng, n, data_seed, tag):
    hidden = int(rng.integers(1, 7))
    gen = torch.Generator().manual_seed(data_seed)
    x, y = _gaussian_data(gen, n, 1, torch.zeros_like, 1)
    model = nn.Sequential(
        nn.Linear(1, hidden, bias=False), nn.Tanh(), nn.Linear(hidden, 1, bias=False)
    ).double()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    lam, mult = tanh_llc(hidden)
    return _finish(
        f"{tag}_tanh_H{hidden}",
        model,
        x,
        y,
        lam,
        mult,
        f"y = Σ_h a_h·tanh(b_h·x), H = {hidden}, zero truth, w* = 0: λ = {lam:g}, m = {mult} "
        "(Aoyagi & Watanabe)",
        seed=data_seed,
        info={"hidden": hidden, "optimiser": "none: w0 = 0 is critical"},
    )


_BUILDERS = {
    "dln": _dln,
    "rrr": _rrr,
    "regular": _regular,
    "normal_crossing": _normal_crossing,
    "tanh": _tanh,
}


def random_case(seed: int, family: str | None = None) -> TruthCase:
    """The random known-λ case number ``seed`` (same seed, same case, bit for bit).

    family: force one of :data:`FAMILIES` (default: drawn with :data:`FAMILY_WEIGHTS`); the
    sizes and data are still drawn from ``seed``. ``info`` records the family, the case seed
    and how w* was reached; ``seed`` on the case is the seed of its data.
    """
    seed = _check_seed(seed)
    if family is not None and family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    rng = np.random.default_rng([seed, 18])
    drawn = str(rng.choice(FAMILIES, p=FAMILY_WEIGHTS))
    family = family or drawn
    n = int(rng.choice(SAMPLE_SIZES))
    data_seed = int(rng.integers(2**31))
    case = _BUILDERS[family](rng, n, data_seed, f"r{seed}")
    case.info.update(family=family, case_seed=seed)
    return case


def random_seeds(count: int, start: int = 0) -> list[int]:
    """The fixed seed list: ``start, start + 1, …`` (``count`` of them)."""
    if isinstance(count, bool) or int(count) != count or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")
    return list(range(_check_seed(start), _check_seed(start) + int(count)))


def random_cases(count: int, seed: int = 0) -> list[TruthCase]:
    """``count`` random cases, :func:`random_case` of each of :func:`random_seeds`."""
    return [random_case(s) for s in random_seeds(count, seed)]


def relative_gap(estimate: float, reference: float) -> float:
    """|estimate − reference| / |reference| (inf when the reference is 0)."""
    return abs(estimate - reference) / abs(reference) if reference else math.inf
