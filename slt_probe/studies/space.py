"""The search space of a study: one searched parameter per ``[space.<name>]`` table.

Each parameter maps onto one dotted run-spec override key (its ``target``); a trial samples every
parameter through Optuna and hands the overrides to the runner. This module also holds the field
checks every part of the study spec shares, so that each bad field raises
:class:`StudySpecError` naming it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import optuna

PARAM_TYPES = ("float", "int", "categorical")
PARAM_KEYS = frozenset({"type", "low", "high", "log", "step", "choices", "target", "grid"})


class StudySpecError(ValueError):
    """A study spec field is missing or invalid; the message names the field."""


def spec_error(field_name: str, problem: str) -> StudySpecError:
    return StudySpecError(f"study spec field {field_name!r}: {problem}")


def number_field(raw: dict, key: str, where: str, *, integer: bool = False, required: bool = True):
    """``raw[key]`` as a finite float (or int); ``None`` when absent and not ``required``.

    Booleans are refused although Python counts them as integers: ``low = true`` is a typo."""
    if key not in raw:
        if required:
            raise spec_error(f"{where}.{key}", "is required")
        return None
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise spec_error(f"{where}.{key}", f"must be a number, got {value!r}")
    if integer and int(value) != value:
        raise spec_error(f"{where}.{key}", f"must be an integer, got {value!r}")
    if not math.isfinite(value):
        raise spec_error(f"{where}.{key}", f"must be finite, got {value!r}")
    return int(value) if integer else float(value)


def flatten_overrides(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"steps": 3}, "model.width": 4}`` → ``{"train.steps": 3, "model.width": 4}``."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_overrides(value, full + "."))
        else:
            out[full] = value
    return out


@dataclass(frozen=True)
class ParamSpec:
    """One searched parameter: its Optuna distribution and the run-spec key it overrides."""

    name: str
    type: str
    target: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()
    grid: tuple | None = None


def _parse_categorical(name: str, raw: dict, target: str, grid: list | None) -> ParamSpec:
    where = f"space.{name}"
    choices = raw.get("choices")
    if not isinstance(choices, list) or not choices:
        raise spec_error(f"{where}.choices", "a categorical parameter needs a non-empty list")
    for c in choices:
        if not (c is None or isinstance(c, (bool, int, float, str))):
            raise spec_error(f"{where}.choices", f"values must be scalars, got {c!r}")
    if grid is not None and any(g not in choices for g in grid):
        raise spec_error(f"{where}.grid", "every grid value must be one of the choices")
    return ParamSpec(
        name, "categorical", target, choices=tuple(choices), grid=tuple(grid) if grid else None
    )


def _parse_numeric(name: str, raw: dict, ptype: str, target: str, grid: list | None) -> ParamSpec:
    where = f"space.{name}"
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise spec_error(f"{where}.log", f"must be true or false, got {log!r}")
    integer = ptype == "int"
    low = number_field(raw, "low", where, integer=integer)
    high = number_field(raw, "high", where, integer=integer)
    if not low < high:
        raise spec_error(f"{where}.low", f"must be below high ({low} ≥ {high})")
    if log and low <= 0:
        raise spec_error(f"{where}.low", "must be > 0 for a log-scaled parameter")
    step = number_field(raw, "step", where, integer=integer, required=False)
    if step is not None and (step <= 0 or log):
        raise spec_error(f"{where}.step", "must be > 0 and cannot be combined with log = true")
    for g in grid or ():
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not low <= g <= high:
            raise spec_error(f"{where}.grid", f"value {g!r} is not a number in [{low}, {high}]")
    return ParamSpec(
        name, ptype, target, low=low, high=high, log=log, step=step,
        grid=tuple(grid) if grid else None,
    )  # fmt: skip


def parse_param(name: str, raw: Any) -> ParamSpec:
    """Validate one ``[space.<name>]`` table."""
    where = f"space.{name}"
    if not isinstance(raw, dict):
        raise spec_error(where, "must be a table with type/low/high/target (or choices)")
    extra = set(raw) - PARAM_KEYS
    if extra:
        raise spec_error(where, f"unknown keys {sorted(extra)}; allowed: {sorted(PARAM_KEYS)}")
    ptype = raw.get("type", "float")
    if ptype not in PARAM_TYPES:
        raise spec_error(f"{where}.type", f"must be one of {PARAM_TYPES}, got {ptype!r}")
    target = raw.get("target")
    if not isinstance(target, str) or not target:
        raise spec_error(f"{where}.target", "is required: the dotted run-spec key to override")
    grid = raw.get("grid")
    if grid is not None and (not isinstance(grid, list) or not grid):
        raise spec_error(f"{where}.grid", "must be a non-empty list of values")
    if ptype == "categorical":
        return _parse_categorical(name, raw, target, grid)
    return _parse_numeric(name, raw, ptype, target, grid)


def grid_size(params: tuple[ParamSpec, ...]) -> int:
    """Number of points of the grid spanned by the parameters' grid lists (or choices)."""
    size = 1
    for p in params:
        size *= len(p.grid if p.grid is not None else p.choices)
    return size


def suggest_overrides(
    trial: optuna.Trial, params: tuple[ParamSpec, ...], fixed: dict[str, Any]
) -> dict[str, Any]:
    """Sample every searched parameter and map it onto its run-spec key (fixed ones included)."""
    overrides = dict(fixed)
    for p in params:
        if p.type == "categorical":
            value = trial.suggest_categorical(p.name, list(p.choices))
        elif p.type == "int":
            value = trial.suggest_int(
                p.name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log
            )
        else:
            value = trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log)
        overrides[p.target] = value
    return overrides
