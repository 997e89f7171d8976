"""The DLN ladder: deep linear networks of 10³ to 10⁶ parameters with known λ, at trained points.

Each rung holds several bias-free deep linear networks (depths L = 3 and 4, bottleneck and wide
shapes), every one with a teacher of rank r below its narrowest width in random, non-aligned
bases (:func:`slt_probe.truth.random_cases.rank_r_factors`), Gaussian inputs and unit noise:

    x ~ N(0, I),   y = W⁰_L ⋯ W⁰_1 x + ε,   L_n(w) = (1/n) Σ ½‖W_L ⋯ W_1 x_i − y_i‖²,

and λ with its multiplicity from Aoyagi (2024) (:func:`slt_probe.truth.formulas.dln_llc`).

w*: the point a user would probe — trained, not constructed. Every layer starts from a generic
small Gaussian initialisation (entries N(0, σ²/H_in), σ from :func:`init_scale_for`) and full-batch
gradient descent with heavy-ball momentum runs until the loss has fallen and the gradient has
vanished (‖∇L_n‖ ≤ ``grad_tol``). Why this lands where the formula applies: the formula is the
*global* λ, attained on the most singular stratum (every layer of rank r); a trained point on a
less singular stratum (a layer of rank > r) has a larger local λ. Gradient descent from a small
initialisation learns the end-to-end map one singular direction at a time, fastest for the
strongest (the teacher's r directions, singular values 0.5–2), while a direction whose signal
is the noise fit (singular value O(√(H/n))) grows like its own strength times the product of
the other layers' components along it, all at the initial scale when L ≥ 3: such directions
stay at the initialisation scale for far longer than the r teacher directions take to converge,
so training stops on (a point within the initialisation scale of) the rank-r stratum. That is
checked, not assumed: ``info`` records every layer's numerical rank (singular values above
``RANK_TOL`` of the layer's largest) and the largest remaining singular value relative to the
posterior's own scale, and :func:`ladder_case` raises if a layer's rank is not r.

Gradient descent runs on the exact full-batch loss through the data's second moments
(Σ_xx = XᵀX/n, Σ_xy = XᵀY/n, Σ_yy): L_n(P) = ½tr(PΣ_xxPᵀ) − tr(PΣ_xy) + ½tr(Σ_yy) with
P = W_L ⋯ W_1, so a step costs O(Σ_l H_l·H_{l−1}·max H) whatever n (its stable step length comes
from bounds on the layers' norms that are refreshed only now and then: :class:`_NormBounds`).
Most of the iterations are spent escaping the saddle at 0, one teacher direction after another,
so a deep, wide network with a rank-20 teacher takes tens of thousands of them: on the 10⁶ rung
building w* is slow work of its own (measured in docs/benchmarks/notes.md, the DLN ladder
section). Data: float32, generated in chunks (no float64 copy of X), n·(H_0 + H_L) numbers.

n: :data:`SAMPLE_SIZES` per rung. The ladder's n make nβ = n/log n ≥ 8·10³ so that the
posterior's scale in the singular directions, nβ^(−1/4) for products of two small blocks, is well
inside the localisation's (γ^(−1/2) = 1) and far above the initialisation's remainder. They are
*not* chosen to close the finite-n gap, because no affordable n does: at finite nβ the exact
posterior's λ̂ lies below λ, and the gap shrinks only logarithmically in nβ where the
multiplicity is above 1 (the leading term is E[nβ(L_n − L*)] = λ − (m − 1)/log nβ + …, and on
these networks the pre-asymptotic terms are far larger than that leading correction), so ten
times the data moves λ̂ by a small fraction of the gap. What an estimate at the ladder's n must
match is therefore the exact sampler's value on the same posterior,
:func:`slt_probe.truth.nuts.nuts_llc` (feasible at the 10³ rung: a DLN's L_n comes from the
data's second moments, so a NUTS gradient costs O(d) whatever n), and λ̂/λ − 1 reported by
``slt-probe bench scale`` is the sum of that gap and the sampler's error. Both, measured per n
with commands, are in docs/benchmarks/notes.md (the DLN ladder section). With minibatch SG-MCMC
the work to equilibrate grows like nβ²·d (see docs/truth.md), which is what makes large n
expensive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from slt_probe.truth.cases import TruthCase, half_squared_error
from slt_probe.truth.formulas import dln_llc, dln_num_params
from slt_probe.truth.random_cases import rank_r_factors

#: Singular values below this fraction of a layer's largest count as zero at the trained w*: the
#: teacher's per-layer singular values lie within a factor 3 of each other (end-to-end values in
#: [0.5, 2], split over L ≥ 3 layers with jitter), the untrained remainder stays near the
#: initialisation scale (:func:`init_scale_for`), far below this cut.
RANK_TOL = 0.1


def init_scale_for(depth: int) -> float:
    """σ of the small initialisation for L = ``depth`` layers. A direction escapes the saddle
    at 0 at a rate ∝ σ^(L−2), so deeper networks start larger to train in a few thousand
    steps; the remainder left at σ multiplies into the output only as an L-fold product."""
    return 1e-3 if depth <= 3 else 1e-2


@dataclass(frozen=True)
class LadderShape:
    """One network of a rung: widths (H_0 input … H_L output) and the teacher's rank r."""

    widths: tuple[int, ...]
    r: int

    @property
    def d(self) -> int:
        return dln_num_params(self.widths)

    @property
    def name(self) -> str:
        return f"dln_{'-'.join(map(str, self.widths))}_r{self.r}"


def _shape(widths, r) -> LadderShape:
    return LadderShape(tuple(widths), r)


#: Rung (nominal parameter count) → networks: depths 3 and 4, bottleneck and wide shapes.
RUNGS: dict[int, tuple[LadderShape, ...]] = {
    1_000: (
        _shape((20, 20, 20, 20), 3),
        _shape((30, 12, 30, 12), 2),
        _shape((16, 16, 16, 16, 16), 2),
    ),
    10_000: (
        _shape((60, 60, 60, 60), 5),
        _shape((100, 30, 100, 30), 4),
        _shape((50, 50, 50, 50, 50), 4),
    ),
    100_000: (
        _shape((180, 180, 180, 180), 10),
        _shape((320, 100, 320, 100), 8),
        _shape((150, 150, 150, 150, 150), 8),
    ),
    1_000_000: (
        _shape((500, 500, 500, 500, 500), 20),
        _shape((250, 800, 800, 250), 16),
    ),
}

#: n per rung (see module docstring): nβ = n/log n ≥ 10⁴ everywhere.
SAMPLE_SIZES = {1_000: 200_000, 10_000: 200_000, 100_000: 200_000, 1_000_000: 100_000}


def _check_rung(rung) -> int:
    if rung not in RUNGS:
        raise ValueError(f"rung must be one of {sorted(RUNGS)}, got {rung!r}")
    return int(rung)


def gaussian_teacher_data(
    teacher: torch.Tensor, n: int, gen: torch.Generator, chunk: int = 65_536
) -> tuple[torch.Tensor, torch.Tensor]:
    """(X, Y) in float32 with x ~ N(0, I), y = teacher·x + N(0, I), drawn in chunks of rows so
    that no float64 copy of the data is ever held."""
    dim_out, dim_in = teacher.shape
    x = torch.empty(n, dim_in)
    y = torch.empty(n, dim_out)
    t32 = teacher.float()
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        xb = torch.randn(stop - start, dim_in, generator=gen)
        x[start:stop] = xb
        y[start:stop] = xb @ t32.T + torch.randn(stop - start, dim_out, generator=gen)
    return x, y


def second_moments(x: torch.Tensor, y: torch.Tensor, chunk: int = 65_536) -> dict:
    """Σ_xx, Σ_xy, tr Σ_yy of the data in float64 (accumulated over row chunks)."""
    n = x.shape[0]
    sxx = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
    sxy = torch.zeros(x.shape[1], y.shape[1], dtype=torch.float64)
    syy = 0.0
    for start in range(0, n, chunk):
        xb, yb = x[start : start + chunk].double(), y[start : start + chunk].double()
        sxx += xb.T @ xb
        sxy += xb.T @ yb
        syy += float((yb**2).sum())
    return {"xx": sxx / n, "xy": sxy / n, "yy": syy / n}


def moment_loss(mats: list[torch.Tensor], moments: dict) -> torch.Tensor:
    """The exact full-batch ½-squared-error L_n of the network W_L ⋯ W_1 from second moments."""
    p = mats[0]
    for w in mats[1:]:
        p = w @ p
    return (
        0.5 * torch.trace(p @ moments["xx"] @ p.T)
        - torch.trace(p @ moments["xy"])
        + 0.5 * moments["yy"]
    )


def least_squares_loss(moments: dict) -> float:
    """min over all H_L × H_0 matrices P of the moment loss (the unrestricted regression)."""
    coef = torch.linalg.solve(moments["xx"], moments["xy"])
    return float(0.5 * moments["yy"] - 0.5 * torch.trace(moments["xy"].T @ coef))


def _curvature_bound(norms: list[float], sxx_norm: float) -> float:
    """An upper bound on the loss Hessian's norm from upper bounds on the layers' spectral norms
    ``norms``: Σ_l ‖Σ_xx‖·Π_{k≠l}‖W_k‖², plus the cross-layer terms bounded alike (a factor 2),
    so that a step 1/bound is stable with heavy-ball momentum ≤ 0.9."""
    squares = [v * v for v in norms]
    total = sum(math.prod(squares[:i] + squares[i + 1 :]) for i in range(len(squares)))
    return 2.0 * sxx_norm * total + 1e-12


class _NormBounds:
    """Upper bounds on every layer's spectral norm, kept cheap: ‖W‖₂ ≤ ‖W₀‖₂ + ‖W − W₀‖_F, with
    W₀ the layer when its exact norm was last computed. That exact norm (an SVD's worth of work,
    as much as a whole training step on the 10⁶ rung) is recomputed only when the displacement has
    grown past ``slack`` of it. Each bound is then within (1 + slack)/(1 − slack) of the exact
    norm, and the curvature bound within that to the power 2(L − 1) of the one from exact norms
    (worst case 1.43 at slack 0.03 and L = 4; while the weights grow, as in training, the
    displacement mostly adds to the norm and the bound stays near exact): the step stays stable
    (an upper bound is all stability needs), only shorter. The displacement, not the path
    length, is what counts: heavy-ball iterates oscillate, and their summed step lengths would
    force a refresh every few steps."""

    def __init__(self, mats: list[torch.Tensor], slack: float = 0.03):
        self.mats, self.slack = mats, slack
        self.exact = [0.0] * len(mats)
        self.anchor = [None] * len(mats)
        self.refreshes = 0

    def current(self) -> list[float]:
        out = []
        for i, w in enumerate(self.mats):
            w = w.detach()
            moved = math.inf if self.anchor[i] is None else float((w - self.anchor[i]).norm())
            if moved > self.slack * self.exact[i]:
                self.exact[i] = float(torch.linalg.matrix_norm(w, 2))
                self.anchor[i], moved = w.clone(), 0.0
                self.refreshes += 1
            out.append(self.exact[i] + moved)
        return out


def train_from_small_init(
    widths,
    moments: dict,
    gen: torch.Generator,
    *,
    init_scale: float | None = None,
    lr: float = 0.2,
    momentum: float = 0.9,
    grad_tol: float = 1e-6,
    max_iters: int = 100_000,
) -> tuple[list[torch.Tensor], dict]:
    """Full-batch heavy-ball gradient descent (float64; step ``lr``, capped at the inverse of a
    curvature bound as the weights grow) from W_l ~ N(0, (init_scale²/H_{l−1}))
    until L_n has fallen half the way from its initial value to the least-squares loss and
    ‖∇L_n‖ ≤ ``grad_tol``. The default tolerance puts the bias a gradient g leaves on λ̂,
    ≈ (nβ‖g‖)²/γ, far below λ̂'s own error at the ladder's n.

    Returns the layer matrices and a record (iterations, initial and final loss and gradient
    norm). Raises if ``max_iters`` pass first: a ladder case is only built at a critical point.
    """
    init_scale = init_scale_for(len(widths) - 1) if init_scale is None else init_scale
    mats = [
        (
            torch.randn(b, a, generator=gen, dtype=torch.float64) * init_scale / math.sqrt(a)
        ).requires_grad_()
        for a, b in zip(widths[:-1], widths[1:])
    ]
    velocity = [torch.zeros_like(w) for w in mats]
    with torch.no_grad():
        initial = float(moment_loss(mats, moments))
    # "the loss has fallen": half the way from the initial loss to the least-squares loss
    fallen = 0.5 * (initial + least_squares_loss(moments))
    sxx_norm = float(torch.linalg.matrix_norm(moments["xx"], 2))
    bounds = _NormBounds(mats)
    step = lr
    for it in range(1, max_iters + 1):
        loss = moment_loss(mats, moments)
        if not math.isfinite(float(loss.detach())):
            raise RuntimeError(
                f"training of {list(widths)} diverged at iteration {it} (step {step:.3g}): the "
                "weights grew faster than the curvature bound was refreshed"
            )
        # bounded every step: near the escape from the saddle at 0 the weights grow by orders
        # of magnitude within a few steps (and the bound then refreshes every step)
        step = min(lr, 1.0 / _curvature_bound(bounds.current(), sxx_norm))
        grads = torch.autograd.grad(loss, mats)
        gnorm = math.sqrt(sum(float((g**2).sum()) for g in grads))
        if float(loss.detach()) < fallen and gnorm <= grad_tol:
            break
        with torch.no_grad():
            for w, v, g in zip(mats, velocity, grads):
                v.mul_(momentum).add_(g)
                w.sub_(step * v)
    else:
        raise RuntimeError(
            f"training of {list(widths)} did not reach ‖∇L_n‖ ≤ {grad_tol:g} in {max_iters} "
            f"iterations (last ‖∇L_n‖ = {gnorm:.3g})"
        )
    record = {
        "iterations": it,
        "norm_refreshes": bounds.refreshes,
        "initial_loss": initial,
        "final_loss": float(loss.detach()),
        "final_grad_norm": gnorm,
        "init_scale": init_scale,
        "lr": lr,
        "momentum": momentum,
        "optimiser": "full-batch gradient descent, heavy-ball momentum, float64, from a small "
        "generic Gaussian initialisation",
    }
    return [w.detach() for w in mats], record


def layer_spectra(mats: list[torch.Tensor], tol: float = RANK_TOL) -> dict:
    """Numerical rank of every layer (singular values above ``tol`` times its largest) and the
    largest singular value below that cut, over all layers (the residual of the init)."""
    ranks, residual = [], 0.0
    for w in mats:
        s = torch.linalg.svdvals(w.double())
        keep = s > tol * s.max()
        ranks.append(int(keep.sum()))
        if (~keep).any():
            residual = max(residual, float(s[~keep].max()))
    return {"layer_ranks": ranks, "residual_singular_value": residual}


def ladder_case(
    shape: LadderShape, *, n: int, seed: int = 0, init_scale: float | None = None
) -> TruthCase:
    """The ladder network ``shape`` trained on n examples from its rank-r teacher (see module
    docstring); float32 model and data. Raises if a trained layer's numerical rank is not r."""
    widths, r = list(shape.widths), shape.r
    if len(widths) < 4:
        raise ValueError(f"ladder networks have L >= 3 layers (4+ widths), got {widths}")
    if isinstance(n, bool) or int(n) != n or n < 10:
        raise ValueError(f"n (number of samples) must be an integer >= 10, got {n!r}")
    gen = torch.Generator().manual_seed(seed)
    teacher = torch.linalg.multi_dot(rank_r_factors(widths, r, gen)[::-1])
    x, y = gaussian_teacher_data(teacher, int(n), gen)
    moments = second_moments(x, y)
    mats, record = train_from_small_init(widths, moments, gen, init_scale=init_scale)
    spectra = layer_spectra(mats)
    if any(k != r for k in spectra["layer_ranks"]):
        raise RuntimeError(
            f"trained {shape.name} has layer ranks {spectra['layer_ranks']}, not {r}: w* left the "
            "most singular stratum and the formula's λ would not apply there"
        )
    layers = [nn.Linear(a, b, bias=False) for a, b in zip(widths[:-1], widths[1:])]
    with torch.no_grad():
        for layer, w in zip(layers, mats):
            layer.weight.copy_(w.float())
    model = nn.Sequential(*layers)
    lam, mult = dln_llc(widths, r)
    nbeta = n / math.log(n)
    info = {
        "widths": widths,
        "r": r,
        **record,
        **spectra,
        # the posterior spreads the singular directions over ~ nβ^(-1/4): residual init
        # components far below that scale are invisible to the sampler
        "posterior_scale": nbeta**-0.25,
    }
    model.zero_grad(set_to_none=True)
    loss = half_squared_error(model(x), y)
    gnorm = math.sqrt(
        sum(
            float((g.double() ** 2).sum())
            for g in torch.autograd.grad(loss, list(model.parameters()))
        )
    )
    return TruthCase(
        name=shape.name,
        model=model,
        loss_fn=half_squared_error,
        data=(x, y),
        true_llc=float(lam),
        multiplicity=int(mult),
        d=shape.d,
        description=(
            f"deep linear network {'-'.join(map(str, widths))}, teacher rank {r} in random "
            f"bases, w* trained by gradient descent from a small init; d = {shape.d}, "
            f"λ = {lam:g} (Aoyagi 2024), m = {mult}"
        ),
        grad_norm=gnorm,
        seed=seed,
        info=info,
    )


def ladder_cases(rung: int, *, n: int | None = None, seed: int = 0, limit: int | None = None):
    """Yield the cases of ``rung`` one at a time (only one rung case's data is held at once
    when the caller drops each before the next). n: default :data:`SAMPLE_SIZES`."""
    rung = _check_rung(rung)
    shapes = RUNGS[rung][: limit or None]
    for i, shape in enumerate(shapes):
        yield ladder_case(shape, n=n or SAMPLE_SIZES[rung], seed=seed + i)
