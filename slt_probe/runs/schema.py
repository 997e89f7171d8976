"""The fields of a run spec: for each section, each key's checker and default.

A checker is ``check(field, value) -> cleaned value`` and raises an error naming ``field``
(:class:`SpecError`, or the TypeError/ValueError of the shared checkers in
:mod:`slt_probe.probe.options`, which :mod:`slt_probe.runs.spec` turns into a SpecError).
The ``[probe]`` section's estimate_llc options are not listed here: they are read from
:mod:`slt_probe.probe.options` (see :func:`probe_keys`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from slt_probe.estimators.arguments import check_bool, check_float, check_int
from slt_probe.files import check_safe_name
from slt_probe.probe.options import check_hessian_options, probe_estimator_defaults
from slt_probe.sampling.kernel import check_choice


class SpecError(ValueError):
    """A run spec field is missing, unknown or out of range (the message names it)."""


DATA_KINDS = ("mnist", "mnist_idx", "modular", "teacher_linear")
MODULAR_OPS = ("add", "sub", "mul", "div", "x2y2")
OPTIMIZERS = ("adamw", "adam", "sgd")
LOSSES = ("mse_onehot", "cross_entropy", "half_sq")
DTYPES = ("float32", "float64")


# --- field checkers: each returns the cleaned value or raises SpecError naming the field ------


def _fail(field: str, problem: str) -> SpecError:
    return SpecError(f"{field} {problem}")


def _int(low: int | None = None) -> Callable[[str, Any], int]:
    return lambda field, v: check_int(field, v, low)


def _float(low: float | None = None, *, strict: bool = False, high: float | None = None):
    def check(field, v):
        v = check_float(field, v, low, strict=strict)
        if high is not None and v > high:
            raise _fail(field, f"must be <= {high:g}, got {v!r}")
        return v

    return check


def choice(options: Iterable[str]):
    options = tuple(options)
    return lambda field, v: check_choice(field, v, options)


_bool = check_bool


def _str(field, v):
    if not isinstance(v, str) or not v:
        raise _fail(field, f"must be a non-empty string, got {v!r}")
    return v


def table(field, v):
    if not isinstance(v, Mapping):
        raise _fail(field, f"must be a table, got {v!r}")
    return dict(v)


def _fraction(field, v):
    v = _float()(field, v)
    if not 0.0 < v < 1.0:
        raise _fail(field, f"must be in (0, 1), got {v!r}")
    return v


def _betas(field, v):
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise _fail(field, f"must be a list of two numbers in [0, 1), got {v!r}")
    out = [_float(0.0)(f"{field}[{i}]", b) for i, b in enumerate(v)]
    if max(out) >= 1.0:
        raise _fail(field, f"entries must be < 1, got {v!r}")
    return out


def _name(field, v):
    return None if v is None else check_safe_name(v, field)


def _schedule(field, v):
    """ "log", "linear" or an explicit list of steps."""
    if isinstance(v, str):
        return choice(("log", "linear"))(field, v)
    if isinstance(v, list) and v:
        return sorted({_int(0)(f"{field}[{i}]", s) for i, s in enumerate(v)})
    raise _fail(field, f"must be 'log', 'linear' or a non-empty list of steps, got {v!r}")


def _probe_groups(field, v):
    """[probe.groups]: ``heads`` and ``layers`` (true/false), ``neurons`` ({module: blocks})."""
    v = table(field, v)
    for key, value in v.items():
        if key in ("heads", "layers"):
            check_bool(f"{field}.{key}", value)
        elif key == "neurons":
            for module, blocks in table(f"{field}.neurons", value).items():
                check_int(f"{field}.neurons.{module}", blocks, 1)
        else:
            raise _fail(f"{field}.{key}", "is not a group kind (known: heads, layers, neurons)")
    return v


def _data_groups(field, v):
    """[probe.data_groups]: ``classes`` (true: every class, or a list of labels) and
    ``operand_blocks`` (modular data: the training pairs split by the first operand into that
    many ranges)."""
    v = table(field, v)
    for key, value in v.items():
        if key == "classes":
            if not (value is True or isinstance(value, list) and value):
                raise _fail(f"{field}.classes", f"must be true or a list of labels, got {value!r}")
            for i, label in enumerate(value if isinstance(value, list) else []):
                check_int(f"{field}.classes[{i}]", label, 0)
        elif key == "operand_blocks":
            check_int(f"{field}.operand_blocks", value, 2)
        else:
            raise _fail(
                f"{field}.{key}", "is not a data group kind (known: classes, operand_blocks)"
            )
    return v


REQUIRED = object()

# section -> key -> (checker, default). REQUIRED marks keys without a default.
SCHEMA: dict[str, dict[str, tuple[Callable, Any]]] = {
    "": {
        "name": (_name, None),
        "seed": (_int(0), 0),
        "description": (lambda f, v: str(v), ""),
    },
    "model": {
        "arch": (_str, REQUIRED),
        "kwargs": (table, {}),
        "init_scale": (_float(0.0, strict=True), 1.0),
    },
    "train": {
        "optimizer": (choice(OPTIMIZERS), "adamw"),
        "lr": (_float(0.0, strict=True), 1e-3),
        "weight_decay": (_float(0.0), 0.0),
        "betas": (_betas, [0.9, 0.999]),
        "momentum": (_float(0.0), 0.0),
        "steps": (_int(1), REQUIRED),
        "batch_size": (_int(0), 0),  # 0 = full batch
        "loss": (choice(LOSSES), REQUIRED),
        "eval_every": (_int(1), 100),
        "checkpoint_every": (_int(0), 0),  # 0 = only at probe points and at the end
        "checkpoint_at_probe": (_bool, True),
        "keep_checkpoints": (_int(0), 0),  # 0 = keep all
        "dtype": (choice(DTYPES), "float32"),
        "threads": (_int(0), 0),  # 0 = leave torch's default
    },
}

#: The probe's own fields; the rest of [probe] is estimate_llc's options (see the docstring).
PROBE_FIELDS: dict[str, tuple[Callable, Any]] = {
    "enabled": (_bool, True),
    "schedule": (_schedule, "log"),
    "num_points": (_int(1), 20),
    "start": (_int(0), 0),  # first probed step of a log/linear schedule
    "hessian": (_bool, True),
    "hessian_kwargs": (lambda field, v: check_hessian_options(v, field), {}),
    "groups": (_probe_groups, {}),  # per-group λ̂: heads, layers, neuron blocks
    "data_groups": (_data_groups, {}),  # data-refined λ̂: classes, operand ranges
}


def probe_keys() -> list[str]:
    """Every key a [probe] section may hold."""
    return sorted({*PROBE_FIELDS, *probe_estimator_defaults()})


# Per data kind: the keys it accepts (kind itself aside).
DATA_SCHEMA: dict[str, dict[str, tuple[Callable, Any]]] = {
    "mnist": {
        "train_size": (_int(10), 1000),
        "test_size": (_int(0), 4000),
        "seed": (_int(0), 0),
    },
    "mnist_idx": {
        "path": (_str, REQUIRED),
        "train_size": (_int(0), 1000),  # 0 = every training image
        "test_size": (_int(0), 0),  # 0 = every test image
        "seed": (_int(0), 0),
    },
    "modular": {
        "p": (_int(2), 53),
        "op": (choice(MODULAR_OPS), "add"),
        "train_fraction": (_fraction, 0.4),
        "seed": (_int(0), 0),
    },
    "teacher_linear": {
        "in_dim": (_int(1), REQUIRED),
        "out_dim": (_int(1), REQUIRED),
        "rank": (_int(0), REQUIRED),
        "n_train": (_int(2), 10_000),
        "n_test": (_int(0), 2_000),
        "noise": (_float(0.0), 0.1),
        "seed": (_int(0), 0),
    },
}

#: Keys under these tables are passed through to user code unchecked.
FREE_TABLES = {("model", "kwargs"), ("probe", "hessian_kwargs"), ("probe", "sampler_options")}
