"""Closed-form (real log canonical threshold) learning coefficients λ of known models.

All values are dimensionless: λ is half an "effective parameter count"; a regular model with d
parameters has λ = d/2. Sources (restated in REFERENCE.md):

- regular / minimally singular: Watanabe, *Algebraic Geometry and Statistical Learning Theory*.
- normal crossing K(w) = Π w_i^{2k_i}: λ = min_i 1/(2k_i), multiplicity = #argmin.
- reduced-rank regression: Aoyagi & Watanabe (2005), Neural Networks 18(7):924–933.
- deep linear networks: Aoyagi (2024), Neural Networks 172:106132, Theorem 1.
- one-hidden-layer tanh network, one input and output, zero truth: Aoyagi & Watanabe (2005),
  restated in Watanabe (2009), §7.

These are *global* coefficients: the minimum over the set of true parameters. The local
coefficient at a generic true parameter may be larger; the most singular true parameters (every
layer of rank r) attain the global value.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction


def _check_int(name: str, value, low: int = 0) -> int:
    if isinstance(value, bool) or int(value) != value or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def regular_llc(d: int) -> float:
    """λ = d/2 for a regular model with d parameters (positive definite Fisher information)."""
    d = _check_int("d", d, 1)
    return d / 2


def minimally_singular_llc(d_eff: int) -> float:
    """λ = d'/2 when K(w) = Σ_{i≤d'} c_i w_i² (c_i > 0) locally: d' is the Hessian rank."""
    d_eff = _check_int("d_eff", d_eff, 0)
    return d_eff / 2


def normal_crossing_llc(powers: Sequence[int]) -> tuple[float, int]:
    """(λ, m) for K(w) = Π_i w_i^{2k_i}: λ = min_{k_i>0} 1/(2k_i), m = #{i : 1/(2k_i) = λ}.

    ``powers`` are the k_i (non-negative integers, at least one positive); a zero power means
    the coordinate does not enter K and only contributes a flat direction (no pole).
    """
    ks = [_check_int(f"powers[{i}]", k, 0) for i, k in enumerate(powers)]
    positive = [k for k in ks if k > 0]
    if not positive:
        raise ValueError(f"powers must contain at least one positive integer, got {list(powers)}")
    kmax = max(positive)
    return 1 / (2 * kmax), sum(1 for k in positive if k == kmax)


def _check_rank(r, dims: dict[str, int]) -> int:
    r = _check_int("r", r, 0)
    name, smallest = min(dims.items(), key=lambda kv: kv[1])
    if r > smallest:
        raise ValueError(f"r (true rank) = {r} exceeds {name} = {smallest}")
    return r


def _rrr_exact(M: int, H: int, N: int, r: int) -> tuple[Fraction, int]:
    if M + H < N + r:
        return Fraction(H * M - H * r + N * r, 2), 1
    if N + H < M + r:
        return Fraction(H * N - H * r + M * r, 2), 1
    if M + N < H + r:
        return Fraction(M * N, 2), 1
    core = 2 * (H + r) * (M + N) - (M - N) ** 2 - (H + r) ** 2
    if (M + H + N + r) % 2 == 0:
        return Fraction(core, 8), 1
    return Fraction(core + 1, 8), 2


def rrr_llc(M: int, H: int, N: int, r: int) -> float:
    """λ of reduced-rank regression y = B A x (A: H×M, B: N×H) at true rank r.

    Aoyagi & Watanabe (2005), with input M, hidden H, output N:
      M + H < N + r:  λ = (HM − Hr + Nr)/2
      N + H < M + r:  λ = (HN − Hr + Mr)/2
      M + N < H + r:  λ = MN/2
      otherwise:      λ = [2(H + r)(M + N) − (M − N)² − (H + r)²]/8  (+1/8 if M+H+N+r is odd,
                      where the multiplicity is 2).
    """
    M, H, N = (_check_int(k, v, 1) for k, v in (("M", M), ("H", H), ("N", N)))
    r = _check_rank(r, {"M": M, "H": H, "N": N})
    return float(_rrr_exact(M, H, N, r)[0])


def rrr_multiplicity(M: int, H: int, N: int, r: int) -> int:
    """The order m of the pole in reduced-rank regression (2 only in the odd balanced case)."""
    M, H, N = (_check_int(k, v, 1) for k, v in (("M", M), ("H", H), ("N", N)))
    r = _check_rank(r, {"M": M, "H": H, "N": N})
    return _rrr_exact(M, H, N, r)[1]


def dln_llc(widths: Sequence[int], r: int) -> tuple[float, int]:
    """(λ, multiplicity) of a bias-free deep linear network, Aoyagi (2024) Theorem 1.

    widths = (H_0 input, H_1, …, H_L output), true end-to-end rank r. With M_s = H_s − r (all
    L + 1 widths), S is the smallest prefix (k = 2, 3, … elements) of the M_s sorted ascending
    such that, with ℓ = |S| − 1,  max S < min(rest),  ΣS ≥ ℓ·max S  and  ΣS < ℓ·min(rest)
    (conditions on ``rest`` only when it is non-empty). With M̄ = ⌈ΣS/ℓ⌉, a = ΣS − (M̄ − 1)ℓ:

      λ = (−r² + r(H_0 + H_L))/2 + a(ℓ − a)/(4ℓ) − ℓ(ℓ − 1)/4·(ΣS/ℓ)² + ½·Σ_{i<j∈S} M_i M_j,
      multiplicity = a(ℓ − a) + 1.

    A single layer (L = 1) is a regular model when r = min(H_0, H_1): λ = H_0·H_1/2; the
    theorem is stated for L ≥ 2, and a one-layer network with r < min is rejected (it cannot
    represent a rank-deficient truth as a "most singular" point of a product).
    """
    widths = [_check_int(f"widths[{i}]", w, 1) for i, w in enumerate(widths)]
    if len(widths) < 2:
        raise ValueError(f"widths needs at least an input and an output width, got {widths}")
    r = _check_rank(r, {f"widths[{i}]": w for i, w in enumerate(widths)})
    if len(widths) == 2:
        if r != min(widths):
            raise ValueError(
                f"a one-layer linear network is regular: r must equal min(widths) = {min(widths)}, got {r}"
            )
        return widths[0] * widths[1] / 2, 1
    ms = sorted(w - r for w in widths)
    for k in range(2, len(ms) + 1):
        s, rest = ms[:k], ms[k:]
        ell, total = k - 1, sum(s)
        if total < ell * max(s):
            continue
        if rest and not (max(s) < min(rest) and total < ell * min(rest)):
            continue
        mbar = -(-total // ell)  # ceil
        a = total - (mbar - 1) * ell
        pairs = sum(s[i] * s[j] for i in range(k) for j in range(i + 1, k))
        lam = (
            Fraction(-(r**2) + r * (widths[0] + widths[-1]), 2)
            + Fraction(a * (ell - a), 4 * ell)
            - Fraction(ell * (ell - 1), 4) * Fraction(total, ell) ** 2
            + Fraction(pairs, 2)
        )
        return float(lam), a * (ell - a) + 1
    # Aoyagi proves such a prefix always exists; reaching here is a bug, not bad input.
    raise RuntimeError(f"no admissible set S for widths={widths}, r={r}")  # pragma: no cover


def tanh_llc(hidden: int) -> tuple[float, int]:
    """(λ, multiplicity) of y = Σ_{h≤H} a_h·tanh(b_h·x) (one input, one output, no biases) at
    the zero truth, Aoyagi & Watanabe (2005; Watanabe 2009, §7): with i = max{j : j² ≤ H},

      λ = (H + i² + i) / (4i + 2),   multiplicity = 2 if i² = H else 1.

    H = 1 gives K ∝ a²b², the normal crossing λ = ½ with m = 2.
    """
    hidden = _check_int("hidden", hidden, 1)
    i = int(hidden**0.5)
    while (i + 1) ** 2 <= hidden:
        i += 1
    while i * i > hidden:
        i -= 1
    return float(Fraction(hidden + i * i + i, 4 * i + 2)), 2 if i * i == hidden else 1


def dln_num_params(widths: Sequence[int]) -> int:
    """d = Σ_l H_l·H_{l−1} for bias-free layers."""
    return sum(a * b for a, b in zip(widths[:-1], widths[1:]))


__all__ = [
    "dln_llc",
    "dln_num_params",
    "minimally_singular_llc",
    "normal_crossing_llc",
    "regular_llc",
    "rrr_llc",
    "rrr_multiplicity",
    "tanh_llc",
]
