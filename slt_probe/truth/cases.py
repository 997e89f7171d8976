"""Models whose learning coefficient is known in closed form, packaged with data and w*.

Every case is a regression with Gaussian inputs and unit Gaussian noise,

    x ~ N(0, I),   y = f_{w0}(x) + ε,   ε ~ N(0, I),   L_n(w) = (1/n) Σ_i ½‖f_w(x_i) − y_i‖²,

so the population excess loss is K(w) = ½·E‖f_w(x) − f_{w0}(x)‖² and λ is the learning
coefficient of K (see :mod:`slt_probe.truth.formulas`).

w* (the point where λ̂ is estimated) is a critical point of the *empirical* loss reached from the
truth w0: the exact least-squares fit for linear regression, w0 = 0 for the normal-crossing model
(a critical point by symmetry), and full-batch L-BFGS in float64 from w0 for the linear
networks. Why not w0 itself: ∇L_n(w0) = O(1/√n) and a tempered posterior centred at a point with
a gradient lowers λ̂ by ≈ β·λ (≈ 11 % at n = 10⁴), which would hide the estimator's own bias.
For the linear networks the truth has exactly aligned zero rows/columns (every layer has rank
r); gradients in those directions are exactly zero, so L-BFGS stays on the most singular stratum
and converges to the best rank-r fit there, a critical point of L_n whose global λ is known.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from slt_probe.truth.formulas import (
    dln_llc,
    dln_num_params,
    normal_crossing_llc,
    regular_llc,
    rrr_llc,
    rrr_multiplicity,
)


def half_squared_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """½‖output − target‖² summed over output dimensions, averaged over samples (a scalar)."""
    diff = output - target
    if diff.dim() == 1:
        return 0.5 * (diff**2).mean()
    return 0.5 * (diff**2).sum(dim=-1).mean()


@dataclass
class TruthCase:
    """A model at w* with data and its known learning coefficient.

    true_llc: λ (dimensionless). When ``exact`` is False it is only a lower bound on the local λ
    at w* (the global coefficient, a minimum over the true set).
    multiplicity: order of the pole m (log-log n correction), 1 for regular models.
    d: number of trainable parameters. grad_norm: ‖∇L_n(w*)‖ in the model's dtype.
    loss_name: the loss as the JAX bridge/NUTS names it ("half_sq" = :func:`half_squared_error`).
    """

    name: str
    model: nn.Module
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    data: tuple[torch.Tensor, torch.Tensor]
    true_llc: float
    multiplicity: int
    d: int
    description: str
    exact: bool = True
    grad_norm: float = float("nan")
    loss_name: str = "half_sq"
    seed: int = 0
    info: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.data[0].shape[0])

    def loss_at_wstar(self) -> float:
        with torch.no_grad():
            return float(self.loss_fn(self.model(self.data[0]), self.data[1]))


class MonomialRegression(nn.Module):
    """f_w(x) = (Π_i u_i^{k_i}) · x for scalar x, u = R·w: K(w) = ½·Π_i u_i^{2k_i} at truth w0 = 0.

    rotation: an orthogonal matrix R (default the identity). K in rotated coordinates is the same
    normal crossing turned by R, and λ is invariant under a linear change of coordinates with
    constant Jacobian, so λ stays min_i 1/(2k_i); only the sampler sees the stiff and flat
    directions off the coordinate axes.
    """

    def __init__(
        self,
        powers: Sequence[int],
        init: torch.Tensor | None = None,
        rotation: torch.Tensor | None = None,
    ):
        super().__init__()
        self.powers = tuple(int(k) for k in powers)
        w = torch.zeros(len(self.powers)) if init is None else init.clone()
        self.w = nn.Parameter(w)
        if rotation is not None and tuple(rotation.shape) != (len(self.powers),) * 2:
            raise ValueError(
                f"rotation must be a {len(self.powers)}×{len(self.powers)} matrix, "
                f"got shape {tuple(rotation.shape)}"
            )
        self.register_buffer("rotation", None if rotation is None else rotation.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.w if self.rotation is None else self.rotation.to(self.w.dtype) @ self.w
        coef = torch.ones((), dtype=self.w.dtype, device=self.w.device)
        for i, k in enumerate(self.powers):
            coef = coef * u[i] ** k
        return coef * x

    def extra_repr(self) -> str:
        return f"powers={self.powers}"


def _check_n(n: int) -> int:
    if isinstance(n, bool) or int(n) != n or n < 10:
        raise ValueError(f"n (number of samples) must be an integer >= 10, got {n!r}")
    return int(n)


def _grad_norm(model: nn.Module, loss_fn, data) -> float:
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model(data[0]), data[1])
    grads = torch.autograd.grad(loss, [p for p in model.parameters()])
    return float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))


def _lbfgs_refine(model: nn.Module, x: torch.Tensor, y: torch.Tensor, tol: float = 1e-7) -> int:
    """Full-batch L-BFGS (strong Wolfe) until ‖∇L_n‖ < tol; returns the rounds used.

    1e-7 in float64 is below what float32 (the estimators' precision) resolves, and far below
    what matters: the bias a gradient g puts on λ̂ is ≈ (nβ‖g‖)²/γ ≈ 1e-8 at n = 10⁴, γ = 1.
    """
    opt = torch.optim.LBFGS(
        model.parameters(),
        lr=1.0,
        max_iter=200,
        tolerance_grad=tol,
        tolerance_change=0.0,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = half_squared_error(model(x), y)
        loss.backward()
        return loss

    for rounds in range(1, 21):
        opt.step(closure)
        if _grad_norm(model, half_squared_error, (x, y)) < tol:
            return rounds
    return rounds


def _gaussian_data(gen: torch.Generator, n: int, dim_in: int, f0, dim_out: int):
    x = torch.randn(n, dim_in, generator=gen, dtype=torch.float64)
    y = f0(x) + torch.randn(n, dim_out, generator=gen, dtype=torch.float64)
    return x, y


def _finish(name, model64, x, y, true_llc, mult, description, *, exact=True, seed=0, info=None):
    """Cast to float32 (the estimators' working precision) and record ‖∇L_n(w*)‖."""
    model = model64.float()
    data = (x.float(), y.float())
    d = sum(p.numel() for p in model.parameters())
    return TruthCase(
        name=name,
        model=model,
        loss_fn=half_squared_error,
        data=data,
        true_llc=float(true_llc),
        multiplicity=int(mult),
        d=d,
        description=description,
        exact=exact,
        grad_norm=_grad_norm(model, half_squared_error, data),
        seed=seed,
        info=info or {},
    )


def regular_case(dim_in: int = 3, dim_out: int = 1, *, n: int = 10_000, seed: int = 0) -> TruthCase:
    """Linear regression y = W x + b + ε WITH bias: d = dim_out·(dim_in + 1), λ = d/2.

    w* is the exact ordinary-least-squares fit (float64 normal equations).
    """
    for k, v in (("dim_in", dim_in), ("dim_out", dim_out)):
        if isinstance(v, bool) or int(v) != v or v < 1:
            raise ValueError(f"{k} must be a positive integer, got {v!r}")
    n = _check_n(n)
    gen = torch.Generator().manual_seed(seed)
    w0 = torch.randn(dim_out, dim_in, generator=gen, dtype=torch.float64)
    b0 = torch.randn(dim_out, generator=gen, dtype=torch.float64)
    x, y = _gaussian_data(gen, n, dim_in, lambda x: x @ w0.T + b0, dim_out)
    design = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], dim=1)
    coef = torch.linalg.lstsq(design, y).solution  # (dim_in + 1, dim_out)
    model = nn.Linear(dim_in, dim_out, bias=True).double()
    with torch.no_grad():
        model.weight.copy_(coef[:dim_in].T)
        model.bias.copy_(coef[dim_in])
    d = dim_out * (dim_in + 1)
    return _finish(
        f"regular_linear_{dim_in}x{dim_out}",
        model,
        x,
        y,
        regular_llc(d),
        1,
        f"linear regression {dim_in}→{dim_out} with bias at the OLS fit; regular, λ = d/2 = {d / 2:g}",
        seed=seed,
    )


def normal_crossing_case(
    powers: Sequence[int] = (1, 2), *, n: int = 10_000, seed: int = 0
) -> TruthCase:
    """f_w(x) = (Π w_i^{k_i})·x with truth 0 (y is pure noise), w* = w0 = 0.

    K(w) = ½·Π w_i^{2k_i}: a normal crossing, λ = min_i 1/(2k_i) (tiny d, λ ≤ ½). w = 0 is a
    critical point of L_n whenever Σ k_i ≥ 2 (every partial derivative keeps a factor w_j).
    """
    powers = tuple(powers)
    lam, mult = normal_crossing_llc(powers)
    if sum(powers) < 2:
        raise ValueError(f"powers must sum to >= 2 so that w = 0 is a critical point, got {powers}")
    n = _check_n(n)
    gen = torch.Generator().manual_seed(seed)
    x, y = _gaussian_data(gen, n, 1, lambda x: torch.zeros_like(x), 1)
    model = MonomialRegression(powers).double()
    label = "".join(f"w{i + 1}^{k}" if k != 1 else f"w{i + 1}" for i, k in enumerate(powers))
    return _finish(
        "normal_crossing_" + "_".join(map(str, powers)),
        model,
        x,
        y,
        lam,
        mult,
        f"f(x) = {label}·x at w* = 0, K = ½·Π w_i^(2k_i): λ = {lam:g}, m = {mult}",
        seed=seed,
    )


def _orthonormal(gen: torch.Generator, rows: int, cols: int) -> torch.Tensor:
    """A rows×cols matrix with orthonormal columns (rows >= cols), Haar-ish via QR."""
    q, rr = torch.linalg.qr(torch.randn(rows, cols, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(rr))


def _dln_truth(widths, r, gen, most_singular):
    """Layer matrices W_1..W_L (W_l: H_l × H_{l−1}) with product U·S·Vᵀ of rank r.

    most_singular: layer l maps through an r-dimensional block only (rank r everywhere), mixed
    by random orthogonal matrices O_l at the hidden layers (which keeps every layer rank r).
    Otherwise only the first layer has rank r; the others are random full-rank matrices.
    """
    L = len(widths) - 1
    sing = torch.linspace(1.0, 2.0, r, dtype=torch.float64) if r > 0 else torch.zeros(0)
    u = _orthonormal(gen, widths[-1], r) if r else torch.zeros(widths[-1], 0)
    v = _orthonormal(gen, widths[0], r) if r else torch.zeros(widths[0], 0)
    root = torch.diag(sing ** (1.0 / L)) if r else torch.zeros(0, 0)
    mixers = [_orthonormal(gen, h, h) for h in widths[1:-1]]
    mats = []
    for layer in range(1, L + 1):
        h_out, h_in = widths[layer], widths[layer - 1]
        if not most_singular and layer > 1:
            w = torch.randn(h_out, h_in, generator=gen, dtype=torch.float64) / math.sqrt(h_in)
            mats.append(w)
            continue
        block = torch.zeros(h_out, h_in, dtype=torch.float64)
        if layer == 1:
            block[:r, :] = root @ v.T
        elif layer == L:
            block[:, :r] = u @ root
        else:
            block[:r, :r] = root
        if layer < L:
            block = mixers[layer - 1] @ block
        if layer > 1:
            block = block @ mixers[layer - 2].T
        mats.append(block)
    return mats


def dln_case(
    widths: Sequence[int],
    r: int,
    *,
    most_singular: bool = True,
    n: int = 10_000,
    seed: int = 0,
    name: str | None = None,
) -> TruthCase:
    """Bias-free deep linear network nn.Sequential(Linear(H_0,H_1), …, Linear(H_{L−1},H_L)).

    most_singular=True: every layer has rank r, w* = L-BFGS refit on that stratum (critical point
    of L_n); true_llc = Aoyagi's global λ, attained there (``exact=True``).
    most_singular=False: a generic true parameter (only the first layer rank r); w* = w0 (not
    refit: a refit would leave the true set); true_llc is the global λ, only a lower bound on the
    local λ there (``exact=False``).
    """
    widths = [int(w) for w in widths]
    lam, mult = dln_llc(widths, r)
    if len(widths) < 3:
        raise ValueError(f"dln_case needs at least two layers (3 widths), got widths={widths}")
    n = _check_n(n)
    gen = torch.Generator().manual_seed(seed)
    mats = _dln_truth(widths, r, gen, most_singular)
    layers = [nn.Linear(a, b, bias=False) for a, b in zip(widths[:-1], widths[1:])]
    model = nn.Sequential(*layers).double()
    with torch.no_grad():
        for layer, w in zip(layers, mats):
            layer.weight.copy_(w)
    f0 = torch.linalg.multi_dot(mats[::-1]) if len(mats) > 1 else mats[0]
    x, y = _gaussian_data(gen, n, widths[0], lambda x: x @ f0.T, widths[-1])
    rounds = _lbfgs_refine(model, x, y) if most_singular else 0
    shape = "-".join(map(str, widths))
    where = "most singular point (every layer rank r)" if most_singular else "generic true point"
    d = dln_num_params(widths)
    return _finish(
        name or f"dln_{shape}_r{r}" + ("" if most_singular else "_generic"),
        model,
        x,
        y,
        lam,
        mult,
        f"deep linear network {shape}, true rank {r}, {where}; d = {d}, "
        f"λ = {lam:g} (Aoyagi 2024){'' if most_singular else ', a lower bound here'}",
        exact=most_singular,
        seed=seed,
        info={"widths": widths, "r": r, "lbfgs_rounds": rounds},
    )


def rrr_case(M: int, H: int, N: int, r: int, *, n: int = 10_000, seed: int = 0) -> TruthCase:
    """Reduced-rank regression y = B A x (Sequential of two bias-free Linear: M→H→N), true rank r,
    at the most singular point; λ by Aoyagi & Watanabe (2005)."""
    lam = rrr_llc(M, H, N, r)
    case = dln_case([M, H, N], r, n=n, seed=seed, name=f"rrr_{M}-{H}-{N}_r{r}")
    case.true_llc, case.multiplicity = lam, rrr_multiplicity(M, H, N, r)
    case.description = (
        f"reduced-rank regression {M}→{H}→{N}, true rank {r}, both layers rank r; "
        f"d = {case.d}, λ = {lam:g} (Aoyagi & Watanabe 2005)"
    )
    return case


CASES: dict[str, Callable[..., TruthCase]] = {
    "regular": regular_case,
    "normal_crossing": normal_crossing_case,
    "rrr": rrr_case,
    "dln": dln_case,
}


def standard_cases(quick: bool = False, *, n: int = 10_000, seed: int = 0) -> list[TruthCase]:
    """The validation suite, ordered by true λ.

    quick: three small cases (d ≤ 30). Full: 9 cases, d from 2 to 192, with 2 RRR and 3
    rank-deficient deep linear networks at their most singular points.
    """
    if quick:
        cases = [
            normal_crossing_case((1, 2), n=n, seed=seed),
            regular_case(3, 1, n=n, seed=seed),
            rrr_case(4, 3, 4, 1, n=n, seed=seed),
        ]
    else:
        cases = [
            normal_crossing_case((1, 2), n=n, seed=seed),
            normal_crossing_case((1, 1), n=n, seed=seed),
            regular_case(3, 1, n=n, seed=seed),
            rrr_case(4, 3, 4, 1, n=n, seed=seed),
            dln_case([5, 4, 3, 4], 1, n=n, seed=seed),
            rrr_case(8, 6, 6, 2, n=n, seed=seed),
            dln_case([10, 8, 6, 4], 2, n=n, seed=seed),
            regular_case(8, 4, n=n, seed=seed),
            dln_case([8, 8, 8, 8], 2, n=n, seed=seed),
        ]
    return sorted(cases, key=lambda c: c.true_llc)
