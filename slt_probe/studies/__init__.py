"""Optuna studies over training configurations (initialisation scale, weight decay, width, lr).

Entry points: :func:`load_study_spec` (``studies/<name>.toml``), :func:`run_study` (a whole study
on this host, ``workers`` processes), :func:`join_study` (one more worker, from any process or
machine sharing the storage). Each trial is a full training run with its own run directory.
"""

from slt_probe.studies.spec import StudySpec, StudySpecError, load_study_spec, parse_study_spec
from slt_probe.studies.storage import (
    STORAGE_ENV,
    HeartbeatJournalStorage,
    HeartbeatRDBStorage,
    StorageError,
    open_storage,
    redact_url,
)
from slt_probe.studies.study import join_study, open_study, run_study
from slt_probe.studies.summary import trial_table, write_study_summary

__all__ = [
    "STORAGE_ENV",
    "HeartbeatJournalStorage",
    "HeartbeatRDBStorage",
    "StorageError",
    "StudySpec",
    "StudySpecError",
    "join_study",
    "load_study_spec",
    "open_storage",
    "open_study",
    "parse_study_spec",
    "redact_url",
    "run_study",
    "trial_table",
    "write_study_summary",
]
