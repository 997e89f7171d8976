"""Float32 matrix products through oneDNN where they beat torch's BLAS.

torch multiplies float32 matrices on CPU with MKL. On AMD processors MKL runs its AVX2 kernels
even where the CPU has AVX-512, about half of what the core does. oneDNN, which torch also
ships (its bf16 matmuls and inductor's fused linears run on it), picks kernels by instruction
set, not vendor, in the same float32 arithmetic (results agree to rounding). ``slt-probe bench
speed`` reports both rates on the machine at hand.

Its entry point, ``torch.ops.mkldnn._linear_pointwise``, is private. So it is used only where
it exists, agrees with ``torch.mm`` on a test product, and is measured once per process to be
faster than ``torch.mm`` by ``SPEEDUP_REQUIRED``: where the BLAS is as fast (MKL on Intel
CPUs uses AVX-512) the BLAS stays. The choice is made by measurement on the machine, never by
vendor. ``SLT_PROBE_ONEDNN=0``
switches it off, ``=1`` skips the timing.
"""

from __future__ import annotations

import functools
import os
import time

import torch

#: oneDNN must beat torch.mm by this factor on the timing product to be used.
SPEEDUP_REQUIRED = 1.25


def _op():
    ops = getattr(torch.ops, "mkldnn", None)
    try:
        return None if ops is None else ops._linear_pointwise
    except (AttributeError, RuntimeError):
        return None


def product(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """a @ bᵀ (+ bias) by oneDNN: a ``[M, K]``, b ``[N, K]``, any strides."""
    return torch.ops.mkldnn._linear_pointwise(a, b, bias, "none", [], "")


def best_of(fn, repeats: int = 5) -> float:
    """Seconds of ``fn()``: the best of ``repeats`` timed calls after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@functools.cache
def _verdict() -> tuple[bool, str]:
    setting = os.environ.get("SLT_PROBE_ONEDNN", "").strip()
    if setting == "0":
        return False, "switched off (SLT_PROBE_ONEDNN=0)"
    if _op() is None or not torch.backends.mkldnn.is_available():
        return False, "this torch build has no oneDNN linear"
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(256, 512, generator=gen), torch.randn(384, 512, generator=gen)
    bias = torch.randn(384, generator=gen)
    p, q = torch.randn(64, 256, generator=gen), torch.randn(64, 384, generator=gen)
    try:
        # plain operands as in the forward pass, transposed views as in the backward pass
        checks = [(product(a, b, bias), torch.addmm(bias, a, b.T)), (product(p.T, q.T), p.T @ q)]
    except RuntimeError as err:
        return False, f"oneDNN linear failed: {err}"
    for got, want in checks:
        if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-3):
            return False, "oneDNN linear disagreed with torch.mm"
    if setting == "1":
        return True, "forced (SLT_PROBE_ONEDNN=1)"
    onednn = best_of(lambda: product(a, b))
    blas = best_of(lambda: torch.mm(a, b.T))
    speedup = blas / onednn
    if speedup < SPEEDUP_REQUIRED:
        return False, f"not faster than the BLAS here ({speedup:.2f}×)"
    return True, f"{speedup:.2f}× torch.mm on a 256×512×384 product"


def enabled() -> bool:
    """Whether float32 products on CPU go through oneDNN in this process (decided once)."""
    return _verdict()[0]


def reason() -> str:
    """Why :func:`enabled` says what it says."""
    return _verdict()[1]


class Linear(torch.autograd.Function):
    """``h @ wᵀ + b`` for 2-D ``h`` ``[B, in]``, ``w`` ``[out, in]``, with every product of the
    forward and backward pass through oneDNN (the input gradient only when ``h`` needs one)."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None):
        ctx.save_for_backward(h, w)
        ctx.has_bias = b is not None
        return product(h, w, b)

    @staticmethod
    def backward(ctx, dz: torch.Tensor):
        h, w = ctx.saved_tensors
        dh = product(dz, w.T) if ctx.needs_input_grad[0] else None
        dw = product(dz.T, h.T)
        db = dz.sum(0) if ctx.has_bias else None
        return dh, dw, db


def linear(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    return Linear.apply(h, w, b)
