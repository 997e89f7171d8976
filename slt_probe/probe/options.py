"""The options of a λ̂ estimate, checked before any work is done: one table shared by
:class:`~slt_probe.probe.LLCProbe` and the run spec's ``[probe]`` section.

Nothing here restates what another module owns: option names and defaults are the keyword
parameters of :func:`slt_probe.estimators.llc.estimate_llc` (read with :mod:`inspect`), sampler
names are the keys of the kernel registry :data:`slt_probe.sampling.kernels.KERNELS`, backends are
:data:`slt_probe.estimators.llc.BACKENDS`, a kernel's options are the keyword parameters of its
constructor (:func:`slt_probe.sampling.kernels.kernel_options`) and the Hessian options those of :func:`slt_probe.geometry.hessian.hessian_summary`.
What this module adds is the type and range of each option, so that a bad one fails when a probe or
a spec is made, naming the option, instead of at the first probe point after training has begun.

Wrong types raise ``TypeError``, values out of range ``ValueError``; the message starts with the
field name the caller passes (``probe.num_chains``, ``num_chains``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from slt_probe.estimators.arguments import (
    ESTIMATOR_CHECKS,
    check_bool,
    check_float,
    check_int,
    optional,
    table,
)
from slt_probe.estimators.llc import estimate_llc
from slt_probe.geometry.hessian import hessian_summary
from slt_probe.sampling.kernels import kernel_options

#: Parameters of estimate_llc that say what is measured rather than how.
_SUBJECT = ("model", "loss_fn", "data")

#: The probe's own defaults where they differ from estimate_llc's: a probe runs dozens of estimates
#: per training run and cares about λ̂ across training more than about each absolute value.
PROBE_DEFAULTS = {"num_chains": 4, "num_draws": 200, "num_burnin": 200}

#: 2 SLQ probes × 12 Lanczos steps = 24 Hessian-vector products per probe point.
HESSIAN_DEFAULTS = {"k": 10, "num_probes": 2, "iters": 12, "batch_size": 1000}


def _keyword_defaults(func: Callable, exclude: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for name, param in inspect.signature(func).parameters.items():
        if name in exclude or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        out[name] = None if param.default is param.empty else param.default
    return out


def estimator_defaults() -> dict[str, Any]:
    """``estimate_llc``'s options and their defaults, from its signature."""
    return _keyword_defaults(estimate_llc, _SUBJECT)


def probe_estimator_defaults() -> dict[str, Any]:
    """The options of one probe point: ``estimate_llc``'s defaults, then :data:`PROBE_DEFAULTS`."""
    return {**estimator_defaults(), **PROBE_DEFAULTS}


def hessian_options() -> dict[str, Any]:
    """``hessian_summary``'s options (the probe passes model, data and seed itself)."""
    return _keyword_defaults(hessian_summary, (*_SUBJECT, "seed"))


def _check_like(field: str, value: Any, default: Any) -> Any:
    """A kernel option against the type of its default (the constructor checks its range)."""
    if default is None:
        return value
    if isinstance(default, bool):
        return check_bool(field, value)
    if isinstance(default, (int, float)):
        return check_float(field, value)
    if isinstance(default, str) and not isinstance(value, str):
        raise TypeError(f"{field} must be a string, got {value!r}")
    return value


def check_sampler_options(sampler: str, options: Mapping | None, field: str) -> dict:
    """``options`` as keyword arguments of the ``sampler`` kernel's constructor (with
    ``sampler="auto"``, options make it SGLD: :func:`slt_probe.estimators.arguments.resolve_sampler`)."""
    if options is None:
        return {}
    options = table(field, options)
    kernel = "sgld" if sampler == "auto" else sampler
    known = kernel_options(kernel)
    for key, value in options.items():
        if key not in known:
            what = f"sampler {sampler!r}" + (
                " (SGLD once it has options)" if kernel != sampler else ""
            )
            raise ValueError(
                f"{field}: {key!r} is not an option of {what}; its options: {sorted(known)}"
            )
        _check_like(f"{field}.{key}", value, known[key])
    return options


def check_hessian_options(options: Mapping | None, field: str) -> dict:
    """``options`` as keyword arguments of ``hessian_summary``."""
    if options is None:
        return {}
    options = table(field, options)
    known = hessian_options()
    for key, value in options.items():
        if key not in known:
            raise ValueError(f"{field}: unknown option {key!r} (known: {sorted(known)})")
        if key in ("k", "num_probes", "iters"):
            check_int(f"{field}.{key}", value, 1)
        elif key == "batch_size":
            optional(lambda f, v: check_int(f, v, 1))(f"{field}.{key}", value)
        else:
            check_float(f"{field}.{key}", value, 0.0, strict=True)
    return options


def check_estimator_options(options: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every option in ``options`` checked (unknown names refused); returns the cleaned dict.

    ``prefix`` is put before each name in messages (``"probe."`` for a run spec). Options this
    module has no check for yet (a new estimate_llc keyword) pass through unchanged."""
    known = estimator_defaults()
    out = {}
    for name, value in options.items():
        if name not in known:
            raise TypeError(
                f"unknown estimate_llc option {prefix}{name!r} (known: {sorted(known)})"
            )
        check = ESTIMATOR_CHECKS.get(name)
        out[name] = check(prefix + name, value) if check is not None else value
    sampler = out.get("sampler", known["sampler"])
    if out.get("sampler_options"):
        check_sampler_options(sampler, out["sampler_options"], prefix + "sampler_options")
    if out.get("backend") == "devinterp" and out.get("compute_dtype") is not None:
        raise ValueError(
            f"{prefix}compute_dtype is an option of the vmap backend; {prefix}backend "
            "'devinterp' samples in the model's dtype"
        )
    return out
