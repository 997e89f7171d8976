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

A worker killed between creating a trial (RUNNING) and its first heartbeat leaves a trial that
Optuna's ``RDBStorage`` never counts as stale (it only looks at trials with a heartbeat row), so
the study would wait on it forever. :class:`HeartbeatRDBStorage` also fails a RUNNING trial that
never beat once ``grace_period`` seconds have passed since it started (its ``datetime_start``,
written by the worker's clock: hosts must agree on the time to well within the grace period).

Secrets. A database URL may carry a password. It never appears in a message or log line of
this package: :func:`redact_url` replaces it by ``***`` (SQLAlchemy's ``hide_password``) and
errors raised while opening a storage are re-raised with the password cut out of their text. Pass
the URL in the environment variable :data:`STORAGE_ENV` rather than on a command line (which other
users of the machine can read in ``ps`` and shell history).
"""

from __future__ import annotations

import importlib.util
import logging
import re
import threading
import time
import warnings
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat  # the interface fail_stale_trials checks
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

try:  # Optuna ≥ 4.9 renamed RetryFailedTrialCallback
    from optuna.storages import RetryHeartbeatStaleTrialCallback as _RetryCallback
except ImportError:  # pragma: no cover
    from optuna.storages import RetryFailedTrialCallback as _RetryCallback

log = logging.getLogger(__name__)

HEARTBEAT_ATTR = "slt_probe:heartbeat"
#: Trial system attribute: the id of the trial whose worker recorded a heartbeat for it. Holding
#: the id (not just ``True``) matters because a re-queued trial inherits its dead original's
#: system attributes.
BEATING_ATTR = "slt_probe:beating"
JOURNAL_NAME = "study.journal"
RDB_PREFIXES = ("sqlite:", "postgresql", "postgres:", "mysql")
#: Environment variable holding the storage URL (the command line's ``--storage`` wins).
STORAGE_ENV = "SLT_PROBE_STORAGE"
_PASSWORD_RE = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)@")


class StorageError(RuntimeError):
    """A storage could not be opened; the message carries the URL with its password hidden."""


def redact_url(url: object) -> str:
    """``url`` with its password (if any) shown as ``***``; a file path is returned unchanged.

    ``postgresql://user:s3cret@host/db`` → ``postgresql://user:***@host/db``."""
    text = str(url)
    if "://" not in text:
        return text
    try:
        return make_url(text).render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy URL: cut whatever sits between "user:" and "@"
        return _PASSWORD_RE.sub(lambda m: m.group("head") + "***@", text)


def redact_text(text: str, url: object) -> str:
    """``text`` with every occurrence of ``url``'s password (raw or URL-decoded) replaced by
    ``***``, for messages of errors raised by drivers that echo their connection string."""
    secrets = {m.group("pw") for m in _PASSWORD_RE.finditer(str(url))}
    try:
        secrets.add(make_url(str(url)).password or "")
    except Exception:
        pass
    for secret in sorted({*secrets, *(unquote(s) for s in secrets)} - {""}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


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
            # The later of the last beat and the start: a re-queued trial inherits its dead
            # original's last beat, but it started (was popped from the queue) only now.
            times = [float(t.system_attrs.get(HEARTBEAT_ATTR, 0.0))]
            if t.datetime_start is not None:
                times.append(t.datetime_start.timestamp())  # naive local time, as Optuna stores
            if now - max(times) > self._grace_period:
                stale.append(t._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeat_interval

    def get_heartbeat_stale_trial_callback(self):
        return self._stale_trial_callback

    # Optuna < 4.9 asked for this name.
    def get_failed_trial_callback(self):  # pragma: no cover
        return self._stale_trial_callback


class HeartbeatRDBStorage(RDBStorage):
    """``RDBStorage`` that also fails RUNNING trials whose worker died before its first heartbeat
    (see the module docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Trials this process has marked as beating (a race at worst marks one twice).
        self._marked: set[int] = set()

    def record_heartbeat(self, trial_id: int) -> None:
        super().record_heartbeat(trial_id)
        if trial_id in self._marked:
            return
        try:
            self.set_trial_system_attr(trial_id, BEATING_ATTR, trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # finished (or failed by another worker) meanwhile
        # Only once the mark is written: a failed write is retried at the next beat, so a live
        # trial is never left looking like one that never beat.
        self._marked.add(trial_id)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        grace = self.grace_period or 2 * (self.heartbeat_interval or 0)
        now = datetime.now()  # naive local time, as Optuna writes datetime_start
        for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            never_beat = t.system_attrs.get(BEATING_ATTR) != t._trial_id
            started = t.datetime_start
            if never_beat and started is not None and (now - started).total_seconds() > grace:
                if t._trial_id not in stale:
                    stale.append(t._trial_id)
        return stale


class Heartbeat:
    """Beats for one trial in a daemon thread until stopped (``storage.record_heartbeat``).

    The first beat is recorded before ``__enter__`` returns, so that a trial whose worker gets
    as far as running the objective is never mistaken for one that never beat."""

    def __init__(self, storage, trial_id: int) -> None:
        self._storage, self._trial_id = storage, trial_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _beat(self) -> None:
        try:
            self._storage.record_heartbeat(self._trial_id)
        except Exception as exc:  # a lost beat is retried; the grace period covers a few
            log.warning("heartbeat for trial id %s failed: %s", self._trial_id, exc)

    def _run(self) -> None:
        interval = self._storage.get_heartbeat_interval()
        while not self._stop.wait(interval):
            self._beat()

    def __enter__(self) -> Heartbeat:
        if hasattr(self._storage, "record_heartbeat"):
            self._beat()
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


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
        if url.startswith(bare) and importlib.util.find_spec("psycopg") is None:
            return "postgresql+psycopg2://" + url[len(bare) :]
    return url


def _open_rdb(url: str, heartbeat_interval: int, grace_period: int, callback) -> RDBStorage:
    url = _with_postgres_driver(url)
    if url.startswith("sqlite"):
        # Several processes on one SQLite file: wait for the write lock instead of failing.
        engine_kwargs: dict = {"connect_args": {"timeout": 60}}
    else:
        # Survive a database restart or an idle connection dropped by a firewall.
        engine_kwargs = {"pool_pre_ping": True}
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return HeartbeatRDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=callback,
            )
    except Exception as exc:
        # Drivers quote their connection string in some errors: re-raise with the password cut
        # out, and without the original (which would print it in the traceback).
        raise StorageError(
            f"storage {redact_url(url)}: cannot open it: "
            f"{type(exc).__name__}: {redact_text(str(exc), url)}"
        ) from None


def open_storage(
    url: str, *, heartbeat_interval: int = 10, grace_period: int = 40, max_retry: int = 2
) -> BaseStorage:
    """Open ``url`` (a journal file path, or an SQLAlchemy database URL) with heartbeats on.

    ``journal:///abs/path`` and ``file:///abs/path`` are accepted as spellings of a journal path.
    Errors name the URL with its password hidden (:func:`redact_url`).
    """
    if not isinstance(url, str) or not url:
        raise ValueError(f"storage: expected a file path or database URL, got {redact_url(url)!r}")
    with warnings.catch_warnings():  # "experimental" since Optuna 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        callback = _RetryCallback(max_retry=max_retry)
    if is_rdb_url(url):
        return _open_rdb(url, heartbeat_interval, grace_period, callback)
    for prefix in ("journal://", "file://"):
        if url.startswith(prefix):
            url = url[len(prefix) :]
    if "://" in url:
        raise ValueError(f"storage: unsupported URL scheme in {redact_url(url)!r}")
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
