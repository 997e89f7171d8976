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
  same parameters, and the re-queued trial resumes the dead trial's run directory.
- Threads. K workers on a host split its cores: each calls ``torch.set_num_threads(cores // K)``
  (two torch processes with all threads each oversubscribe the cores and slow down many-fold).

Watch a study live with ``optuna-dashboard <out_dir>/study.journal`` (embedded storage) or
``optuna-dashboard postgresql://…``.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from slt_probe.files import atomic_write_text
from slt_probe.studies.objective import make_objective
from slt_probe.studies.spec import StudySpec, load_study_spec
from slt_probe.studies.storage import default_storage_url, open_storage

log = logging.getLogger(__name__)

BUDGET_ATTR = "n_trials"
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)


def _as_spec(spec: StudySpec | str | Path) -> StudySpec:
    return spec if isinstance(spec, StudySpec) else load_study_spec(spec)


def default_out_dir(spec: StudySpec) -> Path:
    """``runs/studies/<name>`` under the current directory."""
    return Path("runs") / "studies" / spec.name


def default_report_dir(spec: StudySpec) -> Path:
    """``reports/<name>`` under the current directory (beside the runs' reports)."""
    return Path("reports") / spec.name


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


def open_study(
    spec: StudySpec,
    *,
    storage: str | None = None,
    out_dir: str | Path | None = None,
    n_trials: int | None = None,
    worker_index: int = 0,
) -> optuna.Study:
    """Create the study in its storage, or load it if it exists; record budget and spec.

    ``n_trials`` (if given) replaces the stored budget, e.g. to extend a finished study.
    """
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(spec)
    url = storage or default_storage_url(out_dir)
    backend = open_storage(
        url,
        heartbeat_interval=spec.heartbeat_interval,
        grace_period=spec.grace_period,
        max_retry=spec.max_retry,
    )
    kwargs = dict(
        study_name=spec.name,
        storage=backend,
        sampler=make_sampler(spec, worker_index),
        pruner=make_pruner(spec),
        load_if_exists=True,
    )
    if spec.multi_objective:
        kwargs["directions"] = spec.directions
    else:
        kwargs["direction"] = spec.directions[0]
    study = optuna.create_study(**kwargs)
    if [d.name.lower() for d in study.directions] != spec.directions:
        raise ValueError(
            f"study {spec.name!r} in {url} optimises "
            f"{[d.name.lower() for d in study.directions]}, the spec "
            f"{spec.directions}: use another name or storage"
        )
    attrs = study.user_attrs
    if n_trials is not None or BUDGET_ATTR not in attrs:
        study.set_user_attr(BUDGET_ATTR, int(n_trials or spec.n_trials))
    if "spec" not in attrs:
        study.set_user_attr("spec", spec.to_dict())
        study.set_user_attr("out_dir", str(out_dir.resolve()))
    return study


def _counts(study: optuna.Study) -> dict[TrialState, int]:
    counts = dict.fromkeys(TrialState, 0)
    for t in study.get_trials(deepcopy=False):
        counts[t.state] += 1
    return counts


def _sweep_stale(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


class _Heartbeat:
    """Beats for one trial in a daemon thread until stopped (``storage.record_heartbeat``)."""

    def __init__(self, storage, trial_id: int) -> None:
        self._storage, self._trial_id = storage, trial_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        interval = self._storage.get_heartbeat_interval()
        while True:
            try:
                self._storage.record_heartbeat(self._trial_id)
            except Exception:  # a lost beat is retried; the grace period covers a few
                log.warning("heartbeat for trial id %s failed", self._trial_id, exc_info=True)
            if self._stop.wait(interval):
                return

    def __enter__(self):
        if hasattr(self._storage, "record_heartbeat"):
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def _is_surplus(study: optuna.Study, trial_number: int, budget: int) -> bool:
    """True when ``budget`` other live trials precede this new one (a lost race for a slot)."""
    live = sorted(
        t.number
        for t in study.get_trials(deepcopy=False)
        if t.state in (*COUNTED, TrialState.RUNNING, TrialState.WAITING)
    )
    return trial_number in live and live.index(trial_number) >= budget


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
        out_dir: where trial run directories go (``<out_dir>/trials/<number>``); default
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
        import torch

        torch.set_num_threads(max(1, int(threads)))
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(
        spec, storage=storage, out_dir=out_dir, n_trials=n_trials, worker_index=worker_index
    )
    objective = make_objective(spec, out_dir, progress=progress)
    max_failures = spec.max_failures or max(3, spec.n_trials)
    ran = 0
    while True:
        _sweep_stale(study)
        budget = int(study.user_attrs.get(BUDGET_ATTR, spec.n_trials))
        counts = _counts(study)
        done = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
        if done >= budget:
            return ran
        errors = sum(
            1
            for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            if "error" in t.user_attrs
        )
        if errors >= max_failures:
            raise RuntimeError(
                f"study {spec.name!r}: {errors} trials raised errors "
                f"(max_failures = {max_failures}); see their 'error' user attrs"
            )
        if done + counts[TrialState.RUNNING] >= budget and counts[TrialState.WAITING] == 0:
            time.sleep(poll_interval)  # every slot is taken: wait for them to finish or die
            continue
        with warnings.catch_warnings():
            # Optuna warns that heartbeats are meant for Study.optimize: this loop beats itself.
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = study.ask()
        if _is_surplus(study, trial.number, budget):
            trial.set_user_attr("surplus", True)
            study.tell(trial, state=TrialState.FAIL)
            continue
        state, values = _run_one(study, trial, objective)
        if state in COUNTED:
            ran += 1


def _run_one(study: optuna.Study, trial: optuna.Trial, objective):
    values, state = None, TrialState.COMPLETE
    with _Heartbeat(study._storage, trial._trial_id):
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
        # copy will run again; nothing to record here.
        log.warning("trial %d was failed by another worker while running", trial.number)
        return TrialState.FAIL, None
    return state, values


def _worker_main(
    spec: StudySpec, storage: str, out_dir: str, worker_index: int, threads: int
) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    join_study(spec, storage=storage, out_dir=out_dir, worker_index=worker_index, threads=threads)


def run_study(
    spec: StudySpec | str | Path,
    *,
    n_trials: int | None = None,
    workers: int = 1,
    storage: str | None = None,
    out_dir: str | Path | None = None,
    report: bool = False,
    report_dir: str | Path | None = None,
) -> optuna.Study:
    """Run a whole study on this host with ``workers`` processes; return the (loaded) study.

    Other hosts may join at any time with ``join_study`` on the same (database) storage.
    Writes ``<out_dir>/study.json`` (trial table + best trials) at the end, and the HTML study
    report if ``report`` (``slt_probe.reports.write_study_report``) in ``report_dir``
    (default ``reports/<name>``), with every trial's run report under it.
    """
    spec = _as_spec(spec)
    if not isinstance(workers, int) or workers < 1:
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
    study = open_study(spec, storage=url, out_dir=out_dir)
    budget = int(study.user_attrs[BUDGET_ATTR])
    counts = _counts(study)
    if counts[TrialState.COMPLETE] + counts[TrialState.PRUNED] < budget:
        raise RuntimeError(
            f"study {spec.name!r} stopped before its budget of {budget} trials: "
            f"{ {s.name: n for s, n in counts.items() if n} }"
        )
    write_study_summary(study, out_dir / "study.json", wall_time_s=time.time() - t0)
    if report:
        try:
            from slt_probe.reports import write_study_report
        except ImportError:
            log.warning("slt_probe.reports.write_study_report is not available: no HTML report")
        else:
            path = write_study_report(study, report_dir or default_report_dir(spec))
            log.info("study report: %s", path)
    return study


def trial_table(study: optuna.Study) -> list[dict[str, Any]]:
    """One JSON-ready row per trial: number, state, params, values, user attrs."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "params": t.params,
                "values": t.values,
                "duration_s": t.duration.total_seconds() if t.duration else None,
                "retry_of": t.system_attrs.get("failed_trial"),
                **{k: v for k, v in t.user_attrs.items() if k != "overrides"},
            }
        )
    return rows


EFFECT_ATTRS = ("generalisation_step", "final_test_acc", "final_llc", "llc_peak", "lag_steps")


def param_effects(study: optuna.Study) -> dict[str, dict[str, dict[str, float | int]]]:
    """Spearman rank correlation of each numeric parameter with each outcome attribute.

    Over COMPLETE trials where both are numbers: ``{param: {attr: {"rho", "p", "n"}}}``
    (omitted where fewer than 3 pairs or a constant column make it undefined).
    """
    from scipy.stats import spearmanr

    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    out: dict[str, dict[str, dict[str, float | int]]] = {}
    names = sorted({k for t in done for k, v in t.params.items() if isinstance(v, (int, float))})
    for name in names:
        for attr in EFFECT_ATTRS:
            pairs = [
                (float(t.params[name]), float(t.user_attrs[attr]))
                for t in done
                if isinstance(t.params.get(name), (int, float))
                and isinstance(t.user_attrs.get(attr), (int, float))
            ]
            if len(pairs) < 3 or len({a for a, _ in pairs}) < 2 or len({b for _, b in pairs}) < 2:
                continue
            rho, pval = spearmanr([a for a, _ in pairs], [b for _, b in pairs])
            out.setdefault(name, {})[attr] = {"rho": float(rho), "p": float(pval), "n": len(pairs)}
    return out


def write_study_summary(study: optuna.Study, path: Path, **extra) -> dict:
    """``study.json``: budget, counts by state, best trial(s), the trial table."""
    best = (
        study.best_trials
        if len(study.directions) > 1
        else (
            [study.best_trial] if any(t.state == TrialState.COMPLETE for t in study.trials) else []
        )
    )
    obj = {
        "study_name": study.study_name,
        "directions": [d.name.lower() for d in study.directions],
        "n_trials": study.user_attrs.get(BUDGET_ATTR),
        "counts": {s.name: n for s, n in _counts(study).items() if n},
        "best_trials": [t.number for t in best],
        "best_params": [t.params for t in best],
        "best_values": [t.values for t in best],
        **extra,
        "param_effects": param_effects(study),
        "trials": trial_table(study),
    }
    atomic_write_text(path, json.dumps(obj, indent=1, default=str))
    return obj
