"""The arguments of :func:`slt_probe.estimate_llc`, checked before any work: every bad value is
a ``ValueError`` or ``TypeError`` raised here that names the argument, never a traceback from
deep inside torch or a silently wrong number."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from slt_probe.estimators.inputs import check_model_for_vmap
from slt_probe.estimators.posterior import Budget
from slt_probe.estimators.recipes import AUTO_RETRIES, Precision
from slt_probe.sampling.functional import resolve_dtype
from slt_probe.sampling.kernel import Kernel
from slt_probe.sampling.kernels import KERNELS, kernel_options, make_kernel

#: The estimation backends: all chains as one batched computation, or devinterp's estimator.
BACKENDS = ("vmap", "devinterp")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_integer(name: str, value: Any, low: int) -> int:
    """``value`` as an int if it is an integer (not a bool) ≥ ``low``."""
    if not _is_number(value) or not math.isfinite(value) or int(value) != value or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def check_real(name: str, value: Any, *, positive: bool = False, allow_zero: bool = True) -> float:
    """``value`` as a float if it is a finite real number (not a bool), > 0 with ``positive``,
    ≥ 0 otherwise unless ``allow_zero`` is False and the sign is free."""
    if not _is_number(value) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if positive and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if not positive and allow_zero and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return float(value)


def check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def extrapolation_factors(extrapolate) -> tuple[float, ...]:
    """The step-size factors of ``extrapolate``: (1,) for False, (1, ½) for True, else the
    list given (≥ 2 positive finite factors)."""
    if extrapolate is False or extrapolate is None:
        return (1.0,)
    if extrapolate is True:
        return (1.0, 0.5)
    try:
        factors = tuple(float(f) for f in extrapolate)
    except (TypeError, ValueError):
        factors = ()
    if len(factors) < 2 or not all(math.isfinite(f) and f > 0 for f in factors):
        raise ValueError(
            f"extrapolate must be True or a list of >= 2 positive step-size factors, got {extrapolate}"
        )
    return factors


def kernel_for(sampler: str, sampler_options: dict | None, minibatch_correction: bool) -> Kernel:
    """The kernel ``sampler`` with ``sampler_options``; ``minibatch_correction`` is passed on to
    the kernels that have that option (an explicit, different value in ``sampler_options`` is
    a conflict, not an override)."""
    options = dict(sampler_options or {})
    if "minibatch_correction" in kernel_options(sampler):
        given = options.setdefault("minibatch_correction", minibatch_correction)
        if given != minibatch_correction:
            raise ValueError(
                "minibatch_correction is given twice with different values (as an argument and "
                "in sampler_options); give it once"
            )
    return make_kernel(sampler, **options)


def check_model(model: Any) -> None:
    """A module with trainable, finite parameters."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(
            "model has no trainable parameters (requires_grad=True): nothing to sample"
        )
    for name, p in trainable:
        if not p.is_floating_point():
            raise TypeError(f"model parameter {name!r} has dtype {p.dtype}; it must be floating")
        if not bool(torch.isfinite(p.detach()).all()):
            raise ValueError(f"model parameter {name!r} contains NaN or inf: w* must be finite")


def check_arguments(args: dict[str, Any]) -> dict[str, Any]:
    """Check the keyword arguments of ``estimate_llc`` (its ``locals()`` on entry) and group
    them by the layer they configure: ``posterior`` (the keywords of
    :meth:`LocalPosterior.build`), ``budget``, ``kernel`` (``None`` for the devinterp backend),
    ``factors`` (extrapolation), ``retries`` (divergence retries of ``step_size="auto"``) and
    ``precision`` (the stopping rule of ``target_rse``, or ``None``). Checks that need the data run when the posterior is
    built (:mod:`slt_probe.estimators.posterior`)."""
    check_model(args["model"])
    if not callable(args["loss_fn"]):
        raise TypeError(f"loss_fn must be callable, got {type(args['loss_fn']).__name__}")
    if args["sampler"] not in KERNELS:
        raise ValueError(f"sampler must be one of {sorted(KERNELS)}, got {args['sampler']!r}")
    if args["backend"] not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {args['backend']!r}")
    check_integer("num_chains", args["num_chains"], 1)
    check_integer("num_draws", args["num_draws"], 1)
    check_integer("num_burnin", args["num_burnin"], 0)
    check_integer("seed", args["seed"], 0)
    if args["batch_size"] is not None:
        check_integer("batch_size", args["batch_size"], 1)
    step_size = args["step_size"]
    if isinstance(step_size, str):
        if step_size != "auto":
            raise ValueError(f"step_size must be a positive number or 'auto', got {step_size!r}")
    elif not (_is_number(step_size) and math.isfinite(step_size) and step_size > 0):
        raise ValueError(
            f"step_size must be a positive finite number, got {step_size!r}; "
            "or pass step_size='auto' to calibrate it from the local curvature."
        )
    check_real("localization", args["localization"])
    if args["nbeta"] is not None:
        check_real("nbeta", args["nbeta"], positive=True)
    check_real("accuracy", args["accuracy"], positive=True)
    for flag in ("shared_batch", "paired", "fast_path", "minibatch_correction"):
        check_flag(flag, args[flag])
    extrapolation_factors(args["extrapolate"])
    if args["sampler_options"] is not None and not isinstance(args["sampler_options"], dict):
        raise TypeError(f"sampler_options must be a dict, got {args['sampler_options']!r}")
    if resolve_dtype(args["compute_dtype"]) is not None and args["backend"] == "devinterp":
        raise ValueError(
            "compute_dtype is an option of the vmap backend; devinterp samples in the model's dtype"
        )
    kernel = None
    if args["backend"] == "vmap":
        kernel = kernel_for(args["sampler"], args["sampler_options"], args["minibatch_correction"])
        check_model_for_vmap(args["model"])
    return {
        "posterior": {
            key: args[key]
            for key in (
                "localization",
                "nbeta",
                "batch_size",
                "seed",
                "device",
                "shared_batch",
                "paired",
                "fast_path",
            )
        }
        | {"compute_dtype": resolve_dtype(args["compute_dtype"])},
        "budget": Budget(args["num_chains"], args["num_burnin"], args["num_draws"], args["seed"]),
        "kernel": kernel,
        "factors": extrapolation_factors(args["extrapolate"]),
        "retries": AUTO_RETRIES if step_size == "auto" else 0,
        "precision": _precision(args),
    }


def _precision(args: dict[str, Any]) -> Precision | None:
    """The stopping rule of ``target_rse``/``max_steps`` (``None`` without a target)."""
    if args["target_rse"] is None:
        if args["max_steps"] is not None:
            raise ValueError("max_steps is the budget of target_rse; give target_rse too")
        return None
    target = check_real("target_rse", args["target_rse"], positive=True)
    if extrapolation_factors(args["extrapolate"]) != (1.0,) or args["backend"] != "vmap":
        raise ValueError("target_rse runs one step size on the vmap backend: no extrapolate")
    first = args["num_burnin"] + args["num_draws"]
    max_steps = args["max_steps"]
    max_steps = args["num_burnin"] + 8 * args["num_draws"] if max_steps is None else max_steps
    max_steps = check_integer("max_steps", max_steps, first)
    return Precision(target_rse=target, max_steps=max_steps)
