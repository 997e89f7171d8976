"""Study specifications: the ``studies/<name>.toml`` files, loaded and validated.

A study spec names a model spec (a ``models/*.toml`` run spec), the overrides every trial shares,
the search space (each parameter mapped onto one dotted run-spec override key), the objectives,
the Optuna sampler and pruner, the trial budget and the fault-tolerance settings::

    name = "omnigrok_alpha"            # study name in the storage (default: the file's stem);
                                       # letters, digits, "._-" only: it names a folder
    spec = "omnigrok_mnist.toml"       # model spec, relative to the repo's models/ folder
    n_trials = 8                       # budget: COMPLETE + PRUNED trials
    seed = 0

    [fixed]                            # run-spec overrides shared by every trial
    "train.steps" = 3000

    [probe]                            # shorthand for "probe.<key>" overrides
    every = 500

    [space.init_scale]                 # one table per searched parameter
    type = "float"                     # float | int | categorical
    low = 1.0
    high = 20.0
    log = true
    target = "model.init_scale"        # the run-spec key the value overrides
    grid = [2.0, 8.0]                  # optional: the values a grid sampler visits

    [[objectives]]
    metric = "generalisation_step"     # see METRICS
    direction = "minimize"
    threshold = 0.8                    # test accuracy that counts as generalised

    [sampler]
    type = "tpe"                       # tpe (default) | random | grid

    [pruner]
    type = "median"                    # median (default) | none
    n_startup_trials = 2
    n_warmup_steps = 500

    [storage]
    heartbeat_interval = 10            # s between a running trial's heartbeats
    grace_period = 40                  # s without a heartbeat before a trial counts as dead
    max_retry = 2                      # how often a dead worker's trial is re-queued

Every field is checked on load; a bad one raises :class:`StudySpecError` naming it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from slt_probe.files import TOMLDecodeError, check_safe_name, load_toml
from slt_probe.studies.space import (
    ParamSpec,
    StudySpecError,
    flatten_overrides,
    grid_size,
    number_field,
    parse_param,
    spec_error,
)

#: Objective metrics a trial can be scored on, with their natural direction.
#:
#: - ``generalisation_step``: first evaluation step whose test accuracy is ≥ ``threshold``
#:   (steps; a run that never gets there is censored at ``censored_value``, by default twice its
#:   total steps, so it ranks behind every run that did generalise).
#: - ``generalisation_midpoint``: midpoint of the run's test-accuracy transition
#:   (``summary.json`` → ``transitions.test_acc.midpoint``, steps; censored like above).
#: - ``final_<key>`` for every key of ``summary.json``'s ``final`` block (``final_test_acc``,
#:   ``final_train_acc``, ``final_test_loss``, ``final_train_loss``, ``final_weight_norm``) and
#:   ``final_llc`` (= ``final.llc_mean``).
#: - ``llc_peak``: the largest λ̂ over the probe points (``llc.jsonl``).
#: - ``lag_steps``: λ̂ transition midpoint − generalisation midpoint (steps).
METRICS: dict[str, str] = {
    "generalisation_step": "minimize",
    "generalisation_midpoint": "minimize",
    "final_test_acc": "maximize",
    "final_train_acc": "maximize",
    "final_test_loss": "minimize",
    "final_train_loss": "minimize",
    "final_weight_norm": "minimize",
    "final_llc": "minimize",
    "llc_peak": "minimize",
    "lag_steps": "minimize",
}
#: Metrics measured in training steps: a run that never reaches them is censored.
STEP_METRICS = ("generalisation_step", "generalisation_midpoint")

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "none")
DEFAULT_RUNNER = "slt_probe.runs:run_spec"


@dataclass(frozen=True)
class ObjectiveSpec:
    """One objective: a metric of the finished run and the direction Optuna optimises it in."""

    metric: str
    direction: str
    threshold: float | None = None
    censored_value: float | None = None


@dataclass(frozen=True)
class StudySpec:
    """A validated study spec (see the module docstring for the TOML layout)."""

    name: str
    model_spec: str
    n_trials: int
    params: tuple[ParamSpec, ...]
    objectives: tuple[ObjectiveSpec, ...]
    fixed: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    sampler: dict[str, Any] = field(default_factory=lambda: {"type": "tpe"})
    pruner: dict[str, Any] = field(default_factory=lambda: {"type": "median"})
    heartbeat_interval: int = 10
    grace_period: int = 40
    max_retry: int = 2
    max_failures: int | None = None
    runner: str = DEFAULT_RUNNER
    source: str | None = None

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (stored as a study user attribute)."""
        return asdict(self)


def _parse_objective(i: int, raw: Any) -> ObjectiveSpec:
    where = f"objectives[{i}]"
    if not isinstance(raw, dict):
        raise spec_error(where, "must be a table with metric and direction")
    extra = set(raw) - {"metric", "direction", "threshold", "censored_value"}
    if extra:
        raise spec_error(where, f"unknown keys {sorted(extra)}")
    metric = raw.get("metric")
    if metric not in METRICS:
        raise spec_error(f"{where}.metric", f"must be one of {sorted(METRICS)}, got {metric!r}")
    direction = raw.get("direction", METRICS[metric])
    if direction not in ("minimize", "maximize"):
        raise spec_error(
            f"{where}.direction", f"must be 'minimize' or 'maximize', got {direction!r}"
        )
    threshold = number_field(raw, "threshold", where, required=metric == "generalisation_step")
    if threshold is not None and not 0 < threshold <= 1:
        raise spec_error(f"{where}.threshold", f"is a test accuracy in (0, 1], got {threshold}")
    censored = number_field(raw, "censored_value", where, required=False)
    if censored is not None and metric not in STEP_METRICS:
        raise spec_error(f"{where}.censored_value", f"only applies to {STEP_METRICS}")
    return ObjectiveSpec(metric, direction, threshold, censored)


def _parse_sampler(raw: Any, params: tuple[ParamSpec, ...]) -> dict[str, Any]:
    if raw is None:
        return {"type": "tpe"}
    if not isinstance(raw, dict):
        raise spec_error("sampler", "must be a table")
    stype = raw.get("type", "tpe")
    if stype not in SAMPLERS:
        raise spec_error("sampler.type", f"must be one of {SAMPLERS}, got {stype!r}")
    allowed = {"type", "n_startup_trials", "constant_liar"} if stype == "tpe" else {"type"}
    extra = set(raw) - allowed
    if extra:
        raise spec_error("sampler", f"unknown keys {sorted(extra)} for sampler type {stype!r}")
    out = {"type": stype}
    if "n_startup_trials" in raw:
        n = number_field(raw, "n_startup_trials", "sampler", integer=True)
        if n < 0:
            raise spec_error("sampler.n_startup_trials", "must be ≥ 0")
        out["n_startup_trials"] = n
    if "constant_liar" in raw:
        if not isinstance(raw["constant_liar"], bool):
            raise spec_error("sampler.constant_liar", "must be true or false")
        out["constant_liar"] = raw["constant_liar"]
    if stype == "grid":
        for p in params:
            if p.grid is None and p.type != "categorical":
                raise spec_error(f"space.{p.name}.grid", "a grid sampler needs a grid list here")
    return out


def _parse_pruner(raw: Any, multi: bool) -> dict[str, Any]:
    if raw is None:
        return {"type": "none"} if multi else {"type": "median"}
    if not isinstance(raw, dict):
        raise spec_error("pruner", "must be a table")
    ptype = raw.get("type", "median")
    if ptype not in PRUNERS:
        raise spec_error("pruner.type", f"must be one of {PRUNERS}, got {ptype!r}")
    if ptype != "none" and multi:
        raise spec_error("pruner.type", "Optuna cannot prune multi-objective studies; use 'none'")
    allowed = {"type", "n_startup_trials", "n_warmup_steps", "interval_steps"}
    extra = set(raw) - allowed
    if extra:
        raise spec_error("pruner", f"unknown keys {sorted(extra)}; allowed: {sorted(allowed)}")
    out: dict[str, Any] = {"type": ptype}
    for key in sorted(allowed - {"type"}):
        if key in raw:
            v = number_field(raw, key, "pruner", integer=True)
            if v < (1 if key == "interval_steps" else 0):
                raise spec_error(f"pruner.{key}", f"out of range: {v}")
            out[key] = v
    return out


KNOWN_FIELDS = frozenset(
    {
        "name", "spec", "n_trials", "seed", "fixed", "probe", "space", "objectives", "sampler",
        "pruner", "storage", "max_failures", "runner", "description",
    }
)  # fmt: skip


def _parse_name(raw: dict, default: str | None) -> str:
    """The study name: it names the study in its storage and the folder ``runs/studies/<name>``,
    so it must be a safe folder name (``../x`` would write outside ``runs/studies``)."""
    name = raw.get("name", default)
    where = "study spec field 'name'" + ("" if "name" in raw else " (the spec file's stem)")
    try:
        return check_safe_name(name, where)
    except ValueError as exc:
        raise StudySpecError(str(exc)) from None


def _parse_space(raw: dict) -> tuple[tuple[ParamSpec, ...], dict[str, Any]]:
    """The searched parameters and the fixed overrides (``[fixed]`` plus ``[probe]``)."""
    fixed = raw.get("fixed", {})
    if not isinstance(fixed, dict):
        raise spec_error("fixed", "must be a table of run-spec overrides")
    fixed = flatten_overrides(fixed)
    probe = raw.get("probe", {})
    if not isinstance(probe, dict):
        raise spec_error("probe", "must be a table of probe settings")
    fixed.update(flatten_overrides(probe, "probe."))
    space = raw.get("space")
    if not isinstance(space, dict) or not space:
        raise spec_error("space", "must define at least one parameter table ([space.<name>])")
    params = tuple(parse_param(k, v) for k, v in space.items())
    targets = [p.target for p in params]
    dup = {t for t in targets if targets.count(t) > 1}
    if dup:
        raise spec_error("space", f"several parameters override the same key {sorted(dup)}")
    clash = set(targets) & set(fixed)
    if clash:
        raise spec_error("fixed", f"keys {sorted(clash)} are also searched in [space]")
    return params, fixed


def _parse_objectives(raw: dict) -> tuple[ObjectiveSpec, ...]:
    objectives_raw = raw.get("objectives")
    if isinstance(objectives_raw, dict):
        objectives_raw = [objectives_raw]
    if not isinstance(objectives_raw, list) or not objectives_raw:
        raise spec_error("objectives", "needs at least one [[objectives]] table")
    objectives = tuple(_parse_objective(i, o) for i, o in enumerate(objectives_raw))
    metrics = [o.metric for o in objectives]
    if len(set(metrics)) != len(metrics):
        raise spec_error("objectives", "the same metric is listed twice")
    return objectives


def _parse_budget(raw: dict, params: tuple[ParamSpec, ...], sampler: dict) -> tuple[int, int]:
    """``(n_trials, seed)``; a grid study's budget defaults to the grid's size."""
    n_trials = raw.get("n_trials")
    if sampler["type"] == "grid" and n_trials is None:
        n_trials = grid_size(params)
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise spec_error("n_trials", f"must be a positive integer, got {n_trials!r}")
    if sampler["type"] == "grid" and n_trials > grid_size(params):
        raise spec_error("n_trials", f"exceeds the grid's {grid_size(params)} points")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise spec_error("seed", f"must be a non-negative integer, got {seed!r}")
    return n_trials, seed


def _parse_storage(raw: Any) -> tuple[int, int, int]:
    """``(heartbeat_interval, grace_period, max_retry)`` from the ``[storage]`` table."""
    storage = raw if raw is not None else {}
    if not isinstance(storage, dict):
        raise spec_error("storage", "must be a table")
    extra = set(storage) - {"heartbeat_interval", "grace_period", "max_retry"}
    if extra:
        raise spec_error("storage", f"unknown keys {sorted(extra)}")
    hb = number_field(storage, "heartbeat_interval", "storage", integer=True, required=False)
    hb = 10 if hb is None else hb
    grace = number_field(storage, "grace_period", "storage", integer=True, required=False)
    grace = 4 * hb if grace is None else grace
    if hb < 1:
        raise spec_error("storage.heartbeat_interval", "must be ≥ 1 s")
    if grace <= hb:
        raise spec_error("storage.grace_period", f"must exceed heartbeat_interval ({hb} s)")
    max_retry = number_field(storage, "max_retry", "storage", integer=True, required=False)
    max_retry = 2 if max_retry is None else max_retry
    if max_retry < 0:
        raise spec_error("storage.max_retry", "must be ≥ 0")
    return hb, grace, max_retry


def _parse_runner(raw: dict) -> tuple[int | None, str]:
    """``(max_failures, runner)``."""
    max_failures = raw.get("max_failures")
    if max_failures is not None and (
        isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 1
    ):
        raise spec_error("max_failures", f"must be a positive integer, got {max_failures!r}")
    runner = raw.get("runner", DEFAULT_RUNNER)
    if not isinstance(runner, str) or ":" not in runner:
        raise spec_error("runner", f"must be 'module:function', got {runner!r}")
    return max_failures, runner


def parse_study_spec(
    raw: dict[str, Any], *, name: str | None = None, source: str | None = None
) -> StudySpec:
    """Validate a study spec given as a dict (the parsed TOML); ``name`` is the default study
    name (``load_study_spec`` passes the file's stem)."""
    if not isinstance(raw, dict):
        raise StudySpecError("a study spec must be a table")
    extra = set(raw) - KNOWN_FIELDS
    if extra:
        raise StudySpecError(
            f"unknown study spec fields {sorted(extra)}; allowed: {sorted(KNOWN_FIELDS)}"
        )
    study_name = _parse_name(raw, name)
    model_spec = raw.get("spec")
    if not isinstance(model_spec, str) or not model_spec:
        raise spec_error("spec", "is required: the model spec file, relative to models/")
    params, fixed = _parse_space(raw)
    objectives = _parse_objectives(raw)
    sampler = _parse_sampler(raw.get("sampler"), params)
    pruner = _parse_pruner(raw.get("pruner"), len(objectives) > 1)
    n_trials, seed = _parse_budget(raw, params, sampler)
    hb, grace, max_retry = _parse_storage(raw.get("storage"))
    max_failures, runner = _parse_runner(raw)
    return StudySpec(
        name=study_name, model_spec=model_spec, n_trials=n_trials, params=params,
        objectives=objectives, fixed=fixed, seed=seed, sampler=sampler, pruner=pruner,
        heartbeat_interval=hb, grace_period=grace, max_retry=max_retry,
        max_failures=max_failures, runner=runner, source=source,
    )  # fmt: skip


def load_study_spec(path: str | Path) -> StudySpec:
    """Read and validate ``studies/<name>.toml``; the study name defaults to the file's stem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"study spec {str(path)!r} does not exist")
    try:
        raw = load_toml(path)
    except TOMLDecodeError as exc:
        raise StudySpecError(f"{path}: not valid TOML: {exc}") from exc
    return parse_study_spec(raw, name=path.stem, source=str(path.resolve()))


def resolve_model_spec(spec: StudySpec) -> Path:
    """The model spec's path: absolute, or looked up in the repo's ``models/`` folder.

    Tried in order: next to the study file's parent (``<repo>/studies/x.toml`` →
    ``<repo>/models/``), the current directory's ``models/``, the checkout that holds this package.
    """
    p = Path(spec.model_spec)
    if p.is_absolute():
        candidates = [p]
    else:
        roots = []
        if spec.source:
            roots.append(Path(spec.source).parent.parent)
        roots += [Path.cwd(), Path(__file__).resolve().parents[2]]
        candidates = [r / "models" / p for r in roots] + [Path.cwd() / p]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise spec_error(
        "spec", f"model spec {spec.model_spec!r} not found; tried {[str(c) for c in candidates]}"
    )
