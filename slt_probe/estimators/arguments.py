"""The arguments of :func:`slt_probe.estimate_llc`, checked before any work: every bad value is
a ``TypeError`` (wrong type) or ``ValueError`` (out of range) raised here whose message starts
with the argument's name, never a traceback from deep inside torch or a silently wrong number.

:data:`ESTIMATOR_CHECKS` is the one table of each option's type and range; ``LLCProbe`` and the
run spec's ``[probe]`` section check against it too (:mod:`slt_probe.probe.options`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from slt_probe.estimators.burnin import default_max_burnin
from slt_probe.estimators.inputs import check_model_for_vmap
from slt_probe.estimators.posterior import Budget
from slt_probe.estimators.recipes import AUTO_RETRIES, Precision
from slt_probe.estimators.selection import check_params_type, resolve_params
from slt_probe.sampling.data import num_examples
from slt_probe.sampling.functional import resolve_dtype
from slt_probe.sampling.kernel import Kernel, check_choice, check_step_size
from slt_probe.sampling.kernels import KERNELS, kernel_options, make_kernel

#: The estimation backends: all chains as one batched computation, or devinterp's estimator.
BACKENDS = ("vmap", "devinterp")

#: ``sampler="auto"`` takes BAOAB on full-batch gradients while a full-batch step costs at most
#: this many example × parameter products (n·d), else SGLD on minibatches: see
#: :func:`resolve_sampler`.
FULL_BATCH_WORK = 3 * 10**7

#: What ``sampler=`` accepts besides a kernel's registry name.
AUTO = "auto"


def samplers() -> tuple[str, ...]:
    """What ``sampler=`` accepts: ``"auto"`` or a name in the kernel registry (read now, so a
    kernel registered later counts)."""
    return (AUTO, *sorted(KERNELS))


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


def optional(check: Callable) -> Callable:
    def inner(field, value):
        return None if value is None else check(field, value)

    return inner


def _step_size(field, value):
    if isinstance(value, str):
        if value != "auto":
            raise ValueError(f"{field} must be a positive number or 'auto', got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{field} must be a number or 'auto', got {value!r}")
    return check_step_size(value, field)


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


def table(field, value):
    if not isinstance(value, Mapping):
        raise TypeError(f"{field} must be a table (dict), got {value!r}")
    return dict(value)


#: Type and range of every estimate_llc option (tests/test_probe.py holds that none is missing):
#: the one table estimate_llc, LLCProbe and the run spec's [probe] section check against.
ESTIMATOR_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "sampler": lambda f, v: check_choice(f, v, samplers()),
    "step_size": _step_size,
    "localization": lambda f, v: check_float(f, v, 0.0),
    "nbeta": optional(lambda f, v: check_float(f, v, 0.0, strict=True)),
    "num_chains": lambda f, v: check_int(f, v, 1),
    "num_draws": lambda f, v: check_int(f, v, 1),
    "num_burnin": lambda f, v: check_int(f, v, 0),
    "batch_size": optional(lambda f, v: check_int(f, v, 1)),
    "seed": lambda f, v: check_int(f, v, 0),
    "backend": lambda f, v: check_choice(f, v, BACKENDS),
    "device": _device,
    "extrapolate": _extrapolate,
    "shared_batch": check_bool,
    "paired": check_bool,
    "accuracy": lambda f, v: check_float(f, v, 0.0, strict=True),
    "sampler_options": optional(table),
    "fast_path": check_bool,
    "compute_dtype": _compute_dtype,
    "minibatch_correction": check_bool,
    "target_rse": optional(lambda f, v: check_float(f, v, 0.0, strict=True)),
    "max_steps": optional(lambda f, v: check_int(f, v, 1)),
    "params": check_params_type,
    "max_burnin": optional(lambda f, v: check_int(f, v, 0)),
}


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


def resolve_sampler(args: Mapping[str, Any]) -> tuple[str, int | None]:
    """The kernel ``sampler="auto"`` stands for, and the batch size that goes with it.

    At a singular w* the localised posterior has directions as flat as the localisation γ beside
    directions of curvature a_max ≈ nβ·λ_max: SGLD needs ~a_max/γ steps to cross the flat ones,
    underdamped Langevin (BAOAB) ~√(a_max/γ), but only on gradients without minibatch noise,
    which heats momentum methods (:mod:`slt_probe.sampling.baoab`). So ``"auto"`` is BAOAB on
    full-batch gradients when that is cheap — n·d ≤ :data:`FULL_BATCH_WORK`, the vmap backend,
    ``step_size="auto"`` (an explicit ε is SGLD's ε, as it always was), no ``sampler_options``
    (those are SGLD's) and no ``batch_size`` below n — and SGLD on minibatches otherwise.
    ``sampler="baoab"`` without a ``batch_size`` is full-batch too.
    """
    sampler, batch = args["sampler"], args["batch_size"]
    # callers without the data at hand (the batched groups) get what they asked for, or SGLD
    n = num_examples(args["data"]) if "data" in args else None
    if sampler == "baoab" and batch is None:
        return sampler, n  # its default: minibatch noise heats it
    if sampler != "auto" or n is None:
        return ("sgld" if sampler == "auto" else sampler), batch
    d = sum(p.numel() for p in args["model"].parameters() if p.requires_grad)
    full_batch_fits = (
        n is not None
        and n * d <= FULL_BATCH_WORK
        and (batch is None or batch >= n)
        and args["backend"] == "vmap"
        and args["step_size"] == "auto"
        and not args["sampler_options"]
    )
    return ("baoab", n) if full_batch_fits else ("sgld", batch)


def check_model(model: Any, restricted: bool = False) -> None:
    """A module with trainable, finite parameters (any module when ``restricted``: the
    selection of ``params`` is checked on its own)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if restricted:
        return
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
    """Check the keyword arguments of ``estimate_llc`` (its ``locals()`` on entry) against
    :data:`ESTIMATOR_CHECKS` and group them by the layer they configure: ``sampler`` (the kernel's
    name, ``"auto"`` resolved by :func:`resolve_sampler`), ``posterior`` (the
    keywords of :meth:`LocalPosterior.build`), ``budget``, ``kernel`` (``None`` for the devinterp
    backend), ``factors`` (extrapolation), ``retries`` (divergence retries of
    ``step_size="auto"``) and ``precision`` (the stopping rule of ``target_rse``, or ``None``).
    ``params`` becomes the posterior's ``selection``
    (:func:`slt_probe.estimators.selection.resolve_params`). Checks that need the data run when
    the posterior is built (:func:`slt_probe.estimators.inputs.check_data`)."""
    check_model(args["model"], restricted=args["params"] is not None)
    if not callable(args["loss_fn"]):
        raise TypeError(f"loss_fn must be callable, got {type(args['loss_fn']).__name__}")
    for name, check in ESTIMATOR_CHECKS.items():
        check(name, args[name])
    if resolve_dtype(args["compute_dtype"]) is not None and args["backend"] == "devinterp":
        raise ValueError(
            "compute_dtype is an option of the vmap backend; devinterp samples in the model's dtype"
        )
    selection = resolve_params(args["model"], args["params"])
    if selection is not None and args["backend"] != "vmap":
        raise ValueError("params (a weight-restricted LLC) is an option of the vmap backend")
    step_size = args["step_size"]
    sampler, batch_size = resolve_sampler(args)
    kernel = None
    if args["backend"] == "vmap":
        kernel = kernel_for(sampler, args["sampler_options"], args["minibatch_correction"])
        check_model_for_vmap(args["model"])
    return {
        "sampler": sampler,
        "posterior": {"batch_size": batch_size}
        | {
            key: args[key]
            for key in (
                "localization",
                "nbeta",
                "seed",
                "device",
                "shared_batch",
                "paired",
                "fast_path",
            )
        }
        | {"compute_dtype": resolve_dtype(args["compute_dtype"]), "selection": selection},
        "accuracy": args["accuracy"],
        "budget": Budget(args["num_chains"], args["num_burnin"], args["num_draws"], args["seed"]),
        "kernel": kernel,
        "factors": extrapolation_factors(args["extrapolate"]),
        "retries": AUTO_RETRIES if step_size == "auto" else 0,
        "precision": _precision(args),
        "max_burnin": _max_burnin(args),
    }


def _max_burnin(args: dict[str, Any]) -> int:
    """The burn-in's ceiling (:mod:`slt_probe.estimators.burnin`): ``max_burnin``, or its
    default; with ``target_rse`` no more than ``max_steps`` leaves room for one window."""
    burnin, draws, ceiling = args["num_burnin"], args["num_draws"], args["max_burnin"]
    max_steps = None
    if args["target_rse"] is not None:
        max_steps = args["max_steps"] or burnin + 8 * draws
    if ceiling is None:
        ceiling = default_max_burnin(burnin, draws)
        return int(ceiling if max_steps is None else max(burnin, min(ceiling, max_steps - draws)))
    if ceiling < burnin:
        raise ValueError(f"max_burnin must be >= num_burnin = {burnin}, got {ceiling}")
    if ceiling > burnin and (args["backend"] != "vmap" or args["extrapolate"] not in (False, None)):
        raise ValueError(
            "max_burnin extends one step size's chains: the vmap backend, no extrapolate"
        )
    if max_steps is not None and ceiling + draws > max_steps:
        raise ValueError(
            f"max_burnin + num_draws must be <= max_steps = {max_steps}, got {ceiling} + {draws}"
        )
    return int(ceiling)


def _precision(args: dict[str, Any]) -> Precision | None:
    """The stopping rule of ``target_rse``/``max_steps`` (``None`` without a target)."""
    if args["target_rse"] is None:
        if args["max_steps"] is not None:
            raise ValueError("max_steps is the budget of target_rse; give target_rse too")
        return None
    target = float(args["target_rse"])
    if extrapolation_factors(args["extrapolate"]) != (1.0,) or args["backend"] != "vmap":
        raise ValueError("target_rse runs one step size on the vmap backend: no extrapolate")
    first = args["num_burnin"] + args["num_draws"]
    max_steps = args["max_steps"]
    max_steps = args["num_burnin"] + 8 * args["num_draws"] if max_steps is None else max_steps
    if max_steps < first:
        raise ValueError(f"max_steps must be >= num_burnin + num_draws = {first}, got {max_steps}")
    return Precision(target_rse=target, max_steps=int(max_steps))
