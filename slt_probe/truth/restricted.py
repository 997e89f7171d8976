"""Closed-form weight-restricted learning coefficients of deep linear networks.

A bias-free DLN f(x) = W_L ⋯ W_1 x restricted to layer k (every other layer held at w*) is the
linear-Gaussian model W_k ↦ A·W_k·B, with A = W_L ⋯ W_{k+1} (the layers after k, the identity
for k = L) and B = W_{k−1} ⋯ W_1 (the layers before k, the identity for k = 1). The loss is
exactly quadratic in W_k, regular on the quotient by the kernel of W_k ↦ A W_k B, whose rank is
rank(A)·rank(B), so

    λ_V = rank(A)·rank(B) / 2;   restricted to the rows S of W_k:   rank(A[:, S])·rank(B) / 2.

:func:`restricted_dln_case` builds such a case with w* the *empirical* minimiser over the
sampled block (a least-squares solve in float64, the other weights as trained), so that w* is a
true minimiser of the restricted empirical loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce

import torch
from torch import nn

from slt_probe.truth.cases import TruthCase, _dln_truth, _gaussian_data, half_squared_error


@dataclass
class RestrictedCase:
    """A DLN case, the ``params`` of its restriction (by name, or by a row mask), and λ_V."""

    case: TruthCase
    params: object
    true_llc: float
    layer: int
    rows: list[int] | None
    description: str


def _product(mats: list[torch.Tensor], size: int) -> torch.Tensor:
    """W_j ⋯ W_i for the list [W_i, …, W_j] (the identity of ``size`` for an empty list)."""
    if not mats:
        return torch.eye(size, dtype=torch.float64)
    return reduce(lambda acc, w: w @ acc, mats[1:], mats[0])


def _rank(m: torch.Tensor) -> int:
    return int(torch.linalg.matrix_rank(m, rtol=1e-6))


def restricted_dln_case(
    widths,
    r: int,
    layer: int,
    *,
    rows: list[int] | None = None,
    by_mask: bool = False,
    n: int = 10_000,
    seed: int = 0,
) -> RestrictedCase:
    """The DLN ``widths`` at a teacher of end-to-end rank ``r`` (every layer rank r, as
    :func:`slt_probe.truth.cases.dln_case` builds it, in float32), restricted to layer ``layer``
    (1-based) — or to its ``rows`` — with that block refit to the exact least-squares minimiser
    of the float32 data. ``params`` is the layer's name (``["{k-1}.weight"]``) or, with ``rows``
    or ``by_mask``, a ``{name: bool mask}`` of those rows."""
    widths = [int(w) for w in widths]
    gen = torch.Generator().manual_seed(seed)
    mats = [m.float().double() for m in _dln_truth(widths, r, gen, most_singular=True)]
    f0 = _product(mats, widths[0])
    x, y = _gaussian_data(gen, n, widths[0], lambda x: x @ f0.T, widths[-1])
    x, y = x.float().double(), y.float().double()
    model = nn.Sequential(
        *(nn.Linear(a, b, bias=False) for a, b in zip(widths[:-1], widths[1:]))
    ).double()
    with torch.no_grad():
        for lin, w in zip(model, mats):
            lin.weight.copy_(w)
    k = layer - 1
    a = _product(mats[k + 1 :], mats[k].shape[0])
    b = _product(mats[:k], mats[k].shape[1])
    chosen = list(range(mats[k].shape[0])) if rows is None else sorted(rows)
    others = [i for i in range(mats[k].shape[0]) if i not in chosen]
    z = x @ b.T  # [n, H_{k-1}]: the layer's input
    target = y - z @ mats[k][others].T @ a[:, others].T  # what the chosen rows must explain
    # min ‖A_S W_S Zᵀ − Rᵀ‖: W_S = A_S⁺ Rᵀ Z (ZᵀZ)⁺ (the minimum-norm minimiser)
    a_s = a[:, chosen]
    w_s = torch.linalg.pinv(a_s, rtol=1e-6) @ target.T @ z @ torch.linalg.pinv(z.T @ z, rtol=1e-6)
    with torch.no_grad():
        model[k].weight[chosen] = w_s
    name = f"{k}.weight"
    mask = torch.zeros(mats[k].shape, dtype=torch.bool)
    mask[chosen] = True
    params = {name: mask} if (rows is not None or by_mask) else [name]
    true = _rank(a_s) * _rank(b) / 2
    model = model.float()
    case = TruthCase(
        name=f"dln_{'-'.join(map(str, widths))}_r{r}_layer{layer}"
        + ("" if rows is None else f"_rows{len(chosen)}"),
        model=model,
        loss_fn=half_squared_error,
        data=(x.float(), y.float()),
        true_llc=true,
        multiplicity=1,
        d=int(mask.sum()),
        description=(
            f"deep linear network {widths}, teacher rank {r}; restricted to layer {layer}"
            + ("" if rows is None else f" rows {chosen}")
            + f": λ_V = rank(A_S)·rank(B)/2 = {_rank(a_s)}·{_rank(b)}/2"
        ),
        seed=seed,
        info={"widths": list(widths), "r": r, "layer": layer, "rows": rows},
    )
    return RestrictedCase(case, params, true, layer, rows, case.description)


def random_restricted_cases(count: int, seed: int = 0, n: int = 10_000) -> list[RestrictedCase]:
    """``count`` randomised cases: widths, rank, layer, and (every other case) a random subset
    of the layer's rows given as a mask; the rest restrict a whole layer by name."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        depth = int(torch.randint(2, 4, (1,), generator=gen))  # 2 or 3 layers
        widths = [int(w) for w in torch.randint(3, 7, (depth + 1,), generator=gen)]
        r = int(torch.randint(1, min(widths) + 1, (1,), generator=gen))
        layer = int(torch.randint(1, depth + 1, (1,), generator=gen))
        rows = None
        if i % 2:
            height = widths[layer]
            size = int(torch.randint(1, height, (1,), generator=gen)) if height > 1 else 1
            rows = sorted(torch.randperm(height, generator=gen)[:size].tolist())
        out.append(
            restricted_dln_case(widths, r, layer, rows=rows, by_mask=i % 4 == 3, n=n, seed=i)
        )
    return out
