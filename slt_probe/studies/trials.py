"""Trial run directories: which study owns them, and where a retried trial starts.

Layout: ``<out_dir>/trials/<instance>/<number>``. ``<instance>`` is the study's instance id, a
random hex string written once into the storage (study user attribute :data:`INSTANCE_ATTR`)
when the study is created. Two studies of the same name, such as the same spec run again
against a fresh storage, get different ids, so a trial never meets a directory that another study
left: each study instance has a folder of its own, and trial numbers are unique within it. Folders
of other instances are left alone; :func:`warn_foreign_instances` says so once, when a study is
created beside them.

Retries. A trial whose worker was declared dead is re-queued with the same parameters and
inherits the dead trial's user attributes, ``run_dir`` included (``storage.py``). The retry runs in
a fresh directory named by its own trial number, so a worker declared dead that is in fact still
running (a stalled machine) and its retry never write the same directory. Where the retry starts
is decided by :func:`prepare_retry`, deterministically from what is on disk:

1. the dead trial's ``run_dir`` is used only if it lies directly in this instance's folder (the
   storage is not trusted to name a path; a directory of another study is never touched);
2. its :class:`~slt_probe.files.FolderLock` is tried without waiting: a held lock means its writer
   is alive, and the retry supersedes it, starting from scratch ("superseded") and leaving that
   directory to its writer;
3. holding the lock: if the directory has something to resume from (a checkpoint; for a runner
   that writes no ``checkpoints/`` folder, a ``summary.json``) it is copied into the retry's
   directory, which the runner then resumes ("resumed"); otherwise, e.g. a trial killed during
   its step-0 probe that left only ``config.json``, the dead directory is removed and the retry
   starts from scratch ("restarted").

A superseded writer that finishes later cannot record its result: the storage already holds its
trial as FAIL, so only the retry's result counts.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

import optuna

from slt_probe.files import FolderLock, LockedError, check_safe_name
from slt_probe.runs.rundir import RunDir

log = logging.getLogger(__name__)

#: Study user attribute holding the study instance's id (the name of its trials folder).
INSTANCE_ATTR = "instance"
#: Files a copy of a run directory leaves out: the lock of its writer and temporaries of atomic
#: writes that a kill interrupted.
COPY_IGNORE = shutil.ignore_patterns(".lock", ".*.tmp")


def new_instance_id() -> str:
    return uuid.uuid4().hex[:12]


def instance_id(study: optuna.Study) -> str:
    """The study's instance id, checked: it comes from the storage and becomes a folder name."""
    value = study.user_attrs.get(INSTANCE_ATTR)
    return check_safe_name(value, f"study user attribute {INSTANCE_ATTR!r} of {study.study_name!r}")


def instance_dir(out_dir: str | Path, instance: str) -> Path:
    """``<out_dir>/trials/<instance>``: the folder holding this study instance's trials."""
    return Path(out_dir) / "trials" / instance


def warn_foreign_instances(out_dir: str | Path, instance: str) -> list[Path]:
    """Log one warning naming the trial folders in ``<out_dir>/trials`` that belong to other
    studies (other instances of a same-named study, or trials of the layout before instances);
    return them. They are left untouched."""
    trials = Path(out_dir) / "trials"
    others = sorted(p for p in trials.iterdir() if p.name != instance) if trials.is_dir() else []
    if others:
        log.warning(
            "%s holds %d folder(s) from other studies of this name (%s); they are left as they "
            "are, and this study writes its trials to %s",
            trials,
            len(others),
            ", ".join(p.name for p in others[:5]) + (", …" if len(others) > 5 else ""),
            instance_dir(out_dir, instance),
        )
    return others


def has_progress(run_dir: Path) -> bool:
    """True if a runner could resume ``run_dir``: it holds a checkpoint, or (for runners that
    write no ``checkpoints/`` folder) a ``summary.json``."""
    rd = RunDir(run_dir)
    if rd.checkpoints.is_dir():
        return bool(rd.list_checkpoints())
    return rd.summary.is_file()


def _own_previous(previous: object, trials_dir: Path) -> Path | None:
    """The dead trial's directory, if it is a trial folder directly inside ``trials_dir``."""
    if not isinstance(previous, str) or not previous:
        return None
    path = Path(previous)
    try:
        check_safe_name(path.name, "trial run name")
    except ValueError:
        return None
    # A link could lead out of the folder even from inside it.
    if path.is_symlink() or path.parent.resolve() != trials_dir.resolve() or not path.is_dir():
        return None
    return path


def _copy_run(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` through a hidden temporary name: a kill mid-copy leaves no
    half-copied trial directory under ``dst``'s name."""
    tmp = dst.parent / f".{dst.name}.copying"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=COPY_IGNORE)
    os.replace(tmp, dst)


def prepare_retry(run_dir: Path, previous: object) -> str:
    """Set up the retry's own ``run_dir`` from the dead trial's directory ``previous`` (its
    inherited ``run_dir`` attribute) as the module docstring describes; return how it starts:
    ``"resumed"``, ``"restarted"``, ``"superseded"`` or ``"new"`` (no usable directory)."""
    source = _own_previous(previous, run_dir.parent)
    if source is None or source.resolve() == run_dir.resolve():
        return "new"
    lock = FolderLock(source, timeout=0)
    try:
        lock.acquire()
    except LockedError as exc:
        log.warning("retry in %s starts from scratch: %s", run_dir, exc)
        return "superseded"
    try:
        if has_progress(source):
            _copy_run(source, run_dir)
            return "resumed"
        shutil.rmtree(source)
        return "restarted"
    finally:
        lock.release()
