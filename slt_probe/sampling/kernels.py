"""The registry of SG-MCMC kernels by name (``estimate_llc(sampler=...)``).

A kernel's options are the keyword parameters of its class's constructor; ``make_kernel``
checks them and names the unknown ones.
"""

from __future__ import annotations

import inspect

from slt_probe.sampling.baoab import BAOAB
from slt_probe.sampling.kernel import Kernel
from slt_probe.sampling.rmsprop_sgld import RMSPropSGLD
from slt_probe.sampling.sgld import SGLD
from slt_probe.sampling.sgnht import SGNHT

KERNELS: dict[str, type[Kernel]] = {k.name: k for k in (SGLD, SGNHT, RMSPropSGLD, BAOAB)}


def kernel_options(name: str) -> dict[str, object]:
    """The options kernel ``name`` accepts, with their defaults."""
    params = inspect.signature(kernel_class(name)).parameters
    return {p.name: p.default for p in params.values()}


def kernel_class(name: str) -> type[Kernel]:
    """The kernel class registered as ``name`` (a ``ValueError`` listing the choices if none)."""
    try:
        return KERNELS[name]
    except (KeyError, TypeError):
        raise ValueError(f"sampler must be one of {sorted(KERNELS)}, got {name!r}") from None


def make_kernel(name: str, **options) -> Kernel:
    """Kernel ``name`` built with ``options`` (unknown options are a ``ValueError`` naming them
    and the accepted ones)."""
    accepted = kernel_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"sampler_options {unknown} are not options of {name!r}; it accepts {sorted(accepted)}"
        )
    return kernel_class(name)(**options)
