"""The options of a λ̂ estimate, checked before any work is done: one table shared by
:class:`~slt_probe.probe.LLCProbe` and the run spec's ``[probe]`` section.

Nothing here restates what another module owns: option names and defaults are the keyword
parameters of :func:`slt_probe.estimators.llc.estimate_llc` (read with :mod:`inspect`), sampler
names are the keys of the kernel registry :data:`slt_probe.sampling.kernels.KERNELS`, backends are
:data:`slt_probe.estimators.llc.BACKENDS`, a kernel's options are the keyword parameters of its
constructor and the Hessian options those of :func:`slt_probe.geometry.hessian.hessian_summary`.
What this module adds is the type and range of each option, so that a bad one fails when a probe or
a spec is made, naming the option, instead of at the first probe point after training has begun.

Wrong types raise ``TypeError``, values out of range ``ValueError``; the message starts with the
field name the caller passes (``probe.num_chains``, ``num_chains``).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from slt_probe.estimators.llc import BACKENDS, estimate_llc
from slt_probe.geometry.hessian import hessian_summary
from slt_probe.sampling.functional import resolve_dtype
from slt_probe.sampling.kernels import KERNELS

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


def kernel_options(sampler: str) -> dict[str, Any]:
    """A kernel's options (its constructor's keyword parameters but ``config``) and defaults."""
    return _keyword_defaults(KERNELS[sampler], ("self", "config"))


def hessian_options() -> dict[str, Any]:
    """``hessian_summary``'s options (the probe passes model, data and seed itself)."""
    return _keyword_defaults(hessian_summary, (*_SUBJECT, "seed"))


# --- checkers: (field, value) -> cleaned value, or TypeError/ValueError naming the field -------


def check_int(field: str, value: Any, low: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{field} must be an integer, got {value!r}")
    if not math.isfinite(value) or int(value) != value:
        raise ValueError(f"{field} must be an integer, got {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{field} must be >= {low}, got {value!r}")
    return int(value)


def check_float(field: str, value: Any, low: float | None = None, *, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{field} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{field} must be a finite number, got {value!r}")
    if low is not None and (value <= low if strict else value < low):
        raise ValueError(f"{field} must be {'>' if strict else '>='} {low:g}, got {value!r}")
    return float(value)


def check_bool(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{field} must be true or false, got {value!r}")
    return value


def check_choice(field: str, value: Any, options) -> Any:
    options = list(options)
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{field} must be one of {options}, got {value!r}")
    return value


def _optional(check: Callable) -> Callable:
    def inner(field, value):
        return None if value is None else check(field, value)

    return inner


def _step_size(field, value):
    if isinstance(value, str):
        if value != "auto":
            raise ValueError(f"{field} must be a positive number or 'auto', got {value!r}")
        return value
    return check_float(field, value, 0.0, strict=True)


def _extrapolate(field, value):
    if isinstance(value, bool):
        return value
    if not isinstance(value, (list, tuple)) or len(value) < 2:
        raise ValueError(
            f"{field} must be true, false or a list of >= 2 step-size factors, got {value!r}"
        )
    return [check_float(f"{field}[{i}]", f, 0.0, strict=True) for i, f in enumerate(value)]


def _device(field, value):
    if value is None or isinstance(value, torch.device):
        return value
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a device name such as 'cpu', got {value!r}")
    try:
        torch.device(value)
    except RuntimeError as exc:
        raise ValueError(f"{field}: {exc}") from None
    return value


def _compute_dtype(field, value):
    try:
        resolve_dtype(value)
    except ValueError as exc:
        raise ValueError(f"{field}: {exc}") from None
    return value


def _table(field, value):
    if not isinstance(value, Mapping):
        raise TypeError(f"{field} must be a table (dict), got {value!r}")
    return dict(value)


#: Type and range of every estimate_llc option (tests/test_probe.py holds that none is missing).
ESTIMATOR_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "sampler": lambda f, v: check_choice(f, v, sorted(KERNELS)),
    "step_size": _step_size,
    "localization": lambda f, v: check_float(f, v, 0.0),
    "nbeta": _optional(lambda f, v: check_float(f, v, 0.0, strict=True)),
    "num_chains": lambda f, v: check_int(f, v, 1),
    "num_draws": lambda f, v: check_int(f, v, 1),
    "num_burnin": lambda f, v: check_int(f, v, 0),
    "batch_size": _optional(lambda f, v: check_int(f, v, 1)),
    "seed": lambda f, v: check_int(f, v, 0),
    "backend": lambda f, v: check_choice(f, v, BACKENDS),
    "device": _device,
    "extrapolate": _extrapolate,
    "shared_batch": check_bool,
    "paired": check_bool,
    "accuracy": lambda f, v: check_float(f, v, 0.0, strict=True),
    "sampler_options": _optional(_table),
    "fast_path": check_bool,
    "compute_dtype": _compute_dtype,
    "minibatch_correction": check_bool,
}


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
    """``options`` as keyword arguments of the ``sampler`` kernel's constructor."""
    if options is None:
        return {}
    options = _table(field, options)
    known = kernel_options(sampler)
    for key, value in options.items():
        if key not in known:
            raise ValueError(
                f"{field}: {key!r} is not an option of sampler {sampler!r} "
                f"(its options: {sorted(known)})"
            )
        _check_like(f"{field}.{key}", value, known[key])
    return options


def check_hessian_options(options: Mapping | None, field: str) -> dict:
    """``options`` as keyword arguments of ``hessian_summary``."""
    if options is None:
        return {}
    options = _table(field, options)
    known = hessian_options()
    for key, value in options.items():
        if key not in known:
            raise ValueError(f"{field}: unknown option {key!r} (known: {sorted(known)})")
        if key in ("k", "num_probes", "iters"):
            check_int(f"{field}.{key}", value, 1)
        elif key == "batch_size":
            _optional(lambda f, v: check_int(f, v, 1))(f"{field}.{key}", value)
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
