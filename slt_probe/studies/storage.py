"""Where a study lives: an embedded journal file on one host, or a database for many machines.

- Default (``storage=None``) or a plain file path: Optuna's ``JournalStorage`` over a
  ``JournalFileBackend`` (an append-only operation log guarded by a lock file), safe for several
  processes on one host, at ``<out_dir>/study.journal``. Open it in the dashboard with
  ``optuna-dashboard <out_dir>/study.journal``.
- ``sqlite:///path.db``, ``postgresql://user@host:port/db`` (many machines), ``mysql://…``:
  Optuna's ``RDBStorage``. Dashboard: ``optuna-dashboard postgresql://user@host:port/db``.

Dead workers. Every storage returned here records a heartbeat for each running trial every
``heartbeat_interval`` seconds; a RUNNING trial whose last heartbeat is older than
``grace_period`` seconds is failed by the next worker that looks (``optuna.storages.
fail_stale_trials``) and re-queued with the same parameters (``RetryHeartbeatStaleTrialCallback``,
up to ``max_retry`` times). RDBStorage has this built in; Optuna (5.0) gives ``JournalStorage``
no heartbeat, so :class:`HeartbeatJournalStorage` adds one: the heartbeat is a trial system
attribute holding the wall-clock time (seconds since the epoch) of the last beat, which is fine on
one host (one clock).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat  # the interface fail_stale_trials checks
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import TrialState

try:  # Optuna ≥ 4.9 renamed RetryFailedTrialCallback
    from optuna.storages import RetryHeartbeatStaleTrialCallback as _RetryCallback
except ImportError:  # pragma: no cover
    from optuna.storages import RetryFailedTrialCallback as _RetryCallback

HEARTBEAT_ATTR = "slt_probe:heartbeat"
JOURNAL_NAME = "study.journal"
RDB_PREFIXES = ("sqlite:", "postgresql", "postgres:", "mysql")


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """``JournalStorage`` with Optuna's heartbeat protocol (see the module docstring).

    Args:
        log_storage: the journal backend.
        heartbeat_interval: seconds between heartbeats of a running trial.
        grace_period: seconds without a heartbeat after which a RUNNING trial is stale.
        stale_trial_callback: called with (study, failed trial) for each trial failed as stale.
    """

    def __init__(
        self, log_storage, *, heartbeat_interval: int, grace_period: int, stale_trial_callback=None
    ) -> None:
        super().__init__(log_storage)
        self._heartbeat_interval = int(heartbeat_interval)
        self._grace_period = int(grace_period)
        self._stale_trial_callback = stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except (optuna.exceptions.UpdateFinishedTrialError, KeyError):
            # The trial finished (or another worker declared it dead): nothing left to keep alive.
            pass

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            last = t.system_attrs.get(HEARTBEAT_ATTR)
            if last is None and t.datetime_start is not None:
                last = t.datetime_start.timestamp()  # naive local time, as Optuna stores it
            if last is not None and now - float(last) > self._grace_period:
                stale.append(t._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeat_interval

    def get_heartbeat_stale_trial_callback(self):
        return self._stale_trial_callback

    # Optuna < 4.9 asked for this name.
    def get_failed_trial_callback(self):  # pragma: no cover
        return self._stale_trial_callback


def default_storage_url(out_dir: str | Path) -> str:
    """The embedded storage's location for a study written to ``out_dir``."""
    return str((Path(out_dir) / JOURNAL_NAME).resolve())


def is_rdb_url(url: str) -> bool:
    return url.startswith(RDB_PREFIXES)


def _with_postgres_driver(url: str) -> str:
    """Name the psycopg2 driver in a bare ``postgresql://`` URL when psycopg 3 is absent.

    SQLAlchemy ≥ 2.1 maps a bare ``postgresql://`` to psycopg 3; this project depends on
    ``psycopg2-binary`` (so does ``optuna-dashboard``'s usual setup): spell it
    ``postgresql+psycopg2://`` for tools that do not do this rewrite.
    """
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            try:
                import psycopg  # noqa: F401
            except ImportError:
                return "postgresql+psycopg2://" + url[len(bare) :]
    return url


def open_storage(
    url: str, *, heartbeat_interval: int = 10, grace_period: int = 40, max_retry: int = 2
) -> BaseStorage:
    """Open ``url`` (a journal file path, or an SQLAlchemy database URL) with heartbeats on.

    ``journal:///abs/path`` and ``file:///abs/path`` are accepted as spellings of a journal path.
    """
    if not isinstance(url, str) or not url:
        raise ValueError(f"storage: expected a file path or database URL, got {url!r}")
    with warnings.catch_warnings():  # "experimental" since Optuna 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        callback = _RetryCallback(max_retry=max_retry)
    if is_rdb_url(url):
        url = _with_postgres_driver(url)
        engine_kwargs = {}
        if url.startswith("sqlite"):
            # Several processes on one SQLite file: wait for the write lock instead of failing.
            engine_kwargs = {"connect_args": {"timeout": 60}}
        else:
            # Survive a database restart or an idle connection dropped by a firewall.
            engine_kwargs = {"pool_pre_ping": True}
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=callback,
            )
    for prefix in ("journal://", "file://"):
        if url.startswith(prefix):
            url = url[len(prefix) :]
    if "://" in url:
        raise ValueError(f"storage: unsupported URL scheme in {url!r}")
    path = Path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The open(O_EXCL) lock works on local disks and NFSv3+; a lock left by a killed process is
    # broken after its grace period (30 s).
    backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
    return HeartbeatJournalStorage(
        backend,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        stale_trial_callback=callback,
    )
