"""Running a study: one entry point (``run_study``) and a worker that joins from anywhere.

``run_study(spec, workers=K)`` creates (or reopens) the study in its storage and runs K worker
processes on this host; ``join_study(spec, storage=URL)`` is one worker, which another process or
machine can start at any time (``slt-probe study worker studies/x.toml --storage URL``). Workers
share nothing but the storage:

- Budget. A study runs until ``n_trials`` trials are COMPLETE or PRUNED (failed ones do not
  count). Before starting a trial a worker counts the finished, running and queued trials; when
  the budget is all taken it waits (polling) instead of starting an extra trial, so a trial left
  by a dead worker is picked up once it is declared dead. If two workers take the last slot at
  the same instant, the one whose trial has the higher number gives its trial back (marked FAIL
  with user attribute ``surplus``) before running anything.
- No double runs. Trials are created or popped from the queue by the storage, which gives each
  to exactly one worker (Optuna's state transition WAITING → RUNNING is atomic per storage).
- Dead workers. Each running trial sends a heartbeat (see ``storage.py``); before each trial a
  worker fails trials whose heartbeat is older than the grace period and re-queues them with the
  same parameters. The re-queued trial runs in a fresh directory of its own, resuming from a copy
  of the dead trial's directory when that one has progress and no live writer (``trials.py``).
- Trial directories. ``<out_dir>/trials/<instance>/<number>``, where ``<instance>`` is an id the
  study records in its storage when it is created: a second study of the same name (the same
  spec against a fresh storage) writes beside the first one's trials, never into them.
- Threads. K workers on a host split its cores: each calls ``torch.set_num_threads(cores // K)``
  (two torch processes with all threads each oversubscribe the cores and slow down many-fold).

Watch a study live with ``optuna-dashboard <out_dir>/study.journal`` (embedded storage) or
``optuna-dashboard postgresql://…``.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
import traceback
import warnings
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from slt_probe.studies.objective import make_objective
from slt_probe.studies.spec import StudySpec, load_study_spec
from slt_probe.studies.storage import Heartbeat, default_storage_url, open_storage, redact_url
from slt_probe.studies.summary import BUDGET_ATTR, state_counts, write_study_summary
from slt_probe.studies.trials import (
    INSTANCE_ATTR,
    instance_dir,
    instance_id,
    new_instance_id,
    warn_foreign_instances,
)

log = logging.getLogger(__name__)

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)


def _as_spec(spec: StudySpec | str | Path) -> StudySpec:
    return spec if isinstance(spec, StudySpec) else load_study_spec(spec)


def default_out_dir(spec: StudySpec) -> Path:
    """``runs/studies/<name>`` under the current directory."""
    return Path("runs") / "studies" / spec.name


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def make_sampler(spec: StudySpec, worker_index: int = 0) -> optuna.samplers.BaseSampler:
    """The spec's sampler; each worker gets seed + index so parallel workers do not propose the
    same points from the same history."""
    s = spec.sampler
    seed = spec.seed + worker_index
    if s["type"] == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s["type"] == "grid":
        grid = {p.name: list(p.grid if p.grid is not None else p.choices) for p in spec.params}
        return optuna.samplers.GridSampler(grid, seed=seed)
    with warnings.catch_warnings():  # constant_liar is "experimental" in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=s.get("n_startup_trials", 4),
            multivariate=True,
            # Running trials count as bad guesses, so parallel workers spread out.
            constant_liar=s.get("constant_liar", True),
        )


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    p = spec.pruner
    if p["type"] == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=p.get("n_startup_trials", 2),
        n_warmup_steps=p.get("n_warmup_steps", 0),
        interval_steps=p.get("interval_steps", 1),
    )


def _create_or_load(
    spec: StudySpec, backend, url: str, worker_index: int
) -> tuple[optuna.Study, bool]:
    """The study and whether this call created it. Creation is the storage's atomic step: of
    workers starting together exactly one creates, the others get ``DuplicatedStudyError`` and
    load."""
    kwargs = dict(
        study_name=spec.name,
        storage=backend,
        sampler=make_sampler(spec, worker_index),
        pruner=make_pruner(spec),
    )
    if spec.multi_objective:
        directions = {"directions": spec.directions}
    else:
        directions = {"direction": spec.directions[0]}
    try:
        study, created = optuna.create_study(**kwargs, **directions), True
    except optuna.exceptions.DuplicatedStudyError:
        study, created = optuna.load_study(**kwargs), False
    stored = [d.name.lower() for d in study.directions]
    if stored != spec.directions:
        raise ValueError(
            f"study {spec.name!r} in {redact_url(url)} optimises {stored}, the spec "
            f"{spec.directions}: use another name or storage"
        )
    return study, created


def _await_instance(study: optuna.Study, wait_s: float) -> str | None:
    """Wait for the creator of a just-made study to record its instance id (``None``: it did);
    a new id for the caller to record when none comes (the creator died in between, or the
    study predates instance ids).

    The creator writes the id before any other attribute, so a study with other attributes or
    trials but no id is an old one and gets its id at once."""
    deadline = time.monotonic() + wait_s
    while True:
        attrs = study.user_attrs
        if INSTANCE_ATTR in attrs:
            return None
        if attrs or study.get_trials(deepcopy=False) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    log.warning("study %r has no instance id; recording one", study.study_name)
    return new_instance_id()


def open_study(
    spec: StudySpec,
    *,
    storage: str | None = None,
    out_dir: str | Path | None = None,
    n_trials: int | None = None,
    worker_index: int = 0,
) -> optuna.Study:
    """Create the study in its storage, or load it if it exists; record budget, spec, output
    folder and the instance id naming its trials folder (``trials.py``).

    ``n_trials`` (if given) replaces the stored budget, e.g. to extend a finished study. The call
    that gives a study its instance id warns once about trial folders of other studies of the
    same name in ``<out_dir>/trials``. Only the worker whose call created the study writes the
    id; workers starting at the same instant wait for it, so every trial of the study lives under
    one id (a check-then-set in every worker let two ids race, and a trial ran under the loser).
    """
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(spec)
    url = storage or default_storage_url(out_dir)
    backend = open_storage(
        url,
        heartbeat_interval=spec.heartbeat_interval,
        grace_period=spec.grace_period,
        max_retry=spec.max_retry,
    )
    study, created = _create_or_load(spec, backend, url, worker_index)
    instance = new_instance_id() if created else _await_instance(study, wait_s=30.0)
    if instance is not None:
        study.set_user_attr(INSTANCE_ATTR, instance)  # a creator's first write: loaders wait for it
        warn_foreign_instances(out_dir, instance)
    attrs = study.user_attrs
    if n_trials is not None or BUDGET_ATTR not in attrs:
        study.set_user_attr(BUDGET_ATTR, int(n_trials or spec.n_trials))
    if "spec" not in attrs:
        study.set_user_attr("spec", spec.to_dict())
        study.set_user_attr("out_dir", str(out_dir.resolve()))
    instance_id(study)  # a bad id from the storage fails here, before any trial
    return study


def _sweep_stale(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _is_surplus(study: optuna.Study, trial_number: int, budget: int) -> bool:
    """True when ``budget`` other live trials precede this new one (a lost race for a slot)."""
    live = sorted(
        t.number
        for t in study.get_trials(deepcopy=False)
        if t.state in (*COUNTED, TrialState.RUNNING, TrialState.WAITING)
    )
    return trial_number in live and live.index(trial_number) >= budget


def _next_step(study: optuna.Study, spec: StudySpec, max_failures: int) -> tuple[str, int]:
    """What a worker does next, and the budget: ``"done"`` (budget met), ``"wait"`` (every slot
    taken) or ``"run"``; raises when too many trials raised errors."""
    _sweep_stale(study)
    budget = int(study.user_attrs.get(BUDGET_ATTR, spec.n_trials))
    trials = study.get_trials(deepcopy=False)
    counts = dict.fromkeys(TrialState, 0)
    for t in trials:
        counts[t.state] += 1
    done = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
    if done >= budget:
        return "done", budget
    errors = sum(1 for t in trials if t.state == TrialState.FAIL and "error" in t.user_attrs)
    if errors >= max_failures:
        raise RuntimeError(
            f"study {spec.name!r}: {errors} trials raised errors "
            f"(max_failures = {max_failures}); see their 'error' user attrs"
        )
    if done + counts[TrialState.RUNNING] >= budget and counts[TrialState.WAITING] == 0:
        return "wait", budget  # for the running trials to finish or be declared dead
    return "run", budget


def join_study(
    spec: StudySpec | str | Path,
    *,
    storage: str | None = None,
    out_dir: str | Path | None = None,
    n_trials: int | None = None,
    worker_index: int = 0,
    threads: int | None = None,
    poll_interval: float = 1.0,
    progress: bool = False,
) -> int:
    """Run trials of the study until its budget of COMPLETE + PRUNED trials is reached.

    Args:
        spec: a StudySpec or the path of a ``studies/*.toml``.
        storage: journal file path or database URL (default ``<out_dir>/study.journal``).
        out_dir: trial run directories go to ``<out_dir>/trials/<instance>/<number>``; default
            ``runs/studies/<name>``.
        n_trials: replace the stored budget (default: the stored one, else the spec's).
        worker_index: offsets the sampler seed so parallel workers differ.
        threads: ``torch.set_num_threads`` for this process (default: leave as is).
        poll_interval: seconds between looks at the storage while the budget is all taken.
    Returns:
        The number of trials this worker ran to COMPLETE or PRUNED.
    """
    spec = _as_spec(spec)
    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(
        spec, storage=storage, out_dir=out_dir, n_trials=n_trials, worker_index=worker_index
    )
    objective = make_objective(spec, instance_dir(out_dir, instance_id(study)), progress=progress)
    max_failures = spec.max_failures or max(3, spec.n_trials)
    ran = 0
    while True:
        step, budget = _next_step(study, spec, max_failures)
        if step == "done":
            return ran
        if step == "wait":
            time.sleep(poll_interval)
            continue
        with warnings.catch_warnings():
            # Optuna warns that heartbeats are meant for Study.optimize: this loop beats itself.
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = study.ask()
        if _is_surplus(study, trial.number, budget):
            trial.set_user_attr("surplus", True)
            study.tell(trial, state=TrialState.FAIL)
            continue
        state, _values = _run_one(study, trial, objective)
        if state in COUNTED:
            ran += 1


def _run_one(study: optuna.Study, trial: optuna.Trial, objective):
    values, state = None, TrialState.COMPLETE
    with Heartbeat(study._storage, trial._trial_id):
        try:
            values = objective(trial)
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except Exception as exc:
            state = TrialState.FAIL
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            log.error("trial %d failed:\n%s", trial.number, traceback.format_exc())
        except KeyboardInterrupt:
            study.tell(trial, state=TrialState.FAIL)
            raise
    try:
        if state is TrialState.COMPLETE:
            study.tell(trial, values)
        else:
            study.tell(trial, state=state)
    except optuna.exceptions.UpdateFinishedTrialError:
        # Another worker declared this trial dead meanwhile (missed heartbeats): its re-queued
        # copy runs again in a directory of its own; nothing to record here.
        log.warning("trial %d was failed by another worker while running", trial.number)
        return TrialState.FAIL, None
    return state, values


def _worker_main(
    spec: StudySpec, storage: str, out_dir: str, worker_index: int, threads: int
) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    join_study(spec, storage=storage, out_dir=out_dir, worker_index=worker_index, threads=threads)


def _run_workers(spec: StudySpec, url: str, out_dir: Path, workers: int) -> None:
    threads = max(1, available_cores() // workers)
    ctx = mp.get_context("spawn")  # fresh interpreters: no forked torch thread pools
    procs = [
        ctx.Process(
            target=_worker_main,
            args=(spec, url, str(out_dir), i, threads),
            name=f"study-worker-{i}",
        )
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    bad = [(p.name, p.exitcode) for p in procs if p.exitcode != 0]
    if bad:
        log.warning("workers exited abnormally: %s", bad)


def run_study(
    spec: StudySpec | str | Path,
    *,
    n_trials: int | None = None,
    workers: int = 1,
    storage: str | None = None,
    out_dir: str | Path | None = None,
) -> optuna.Study:
    """Run a whole study on this host with ``workers`` processes; return the (loaded) study.

    Other hosts may join at any time with ``join_study`` on the same (database) storage.
    Writes ``<out_dir>/study.json`` (trial table + best trials) at the end. The HTML report is
    the caller's to write from the returned study (``slt-probe study run --report`` does, with
    ``slt_probe.reports``), so that running a study never depends on rendering one.
    """
    spec = _as_spec(spec)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    out_dir = (Path(out_dir) if out_dir is not None else default_out_dir(spec)).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    url = storage or default_storage_url(out_dir)
    t0 = time.time()
    # Create the study once here, so workers only ever load it.
    open_study(spec, storage=url, out_dir=out_dir, n_trials=n_trials)
    if workers == 1:
        join_study(spec, storage=url, out_dir=out_dir)
    else:
        _run_workers(spec, url, out_dir, workers)
    study = open_study(spec, storage=url, out_dir=out_dir)
    budget = int(study.user_attrs[BUDGET_ATTR])
    counts = state_counts(study)
    if counts[TrialState.COMPLETE] + counts[TrialState.PRUNED] < budget:
        raise RuntimeError(
            f"study {spec.name!r} stopped before its budget of {budget} trials: "
            f"{ {s.name: n for s, n in counts.items() if n} }"
        )
    write_study_summary(study, out_dir / "study.json", wall_time_s=time.time() - t0)
    return study
