"""``run_spec``: one training run from a spec into its run directory, under the directory's lock.

The lock (:class:`slt_probe.files.FolderLock` on ``<run dir>/.lock``) is held from before the
directory is inspected until the final summary is written, so two writers (two ``slt-probe
run`` or ``--resume`` on one name, a study worker declared dead that still runs while its trial
is retried) never interleave rows or race a truncation: the second one waits up to
``lock_timeout`` seconds and then fails naming the holder's pid. The kernel drops the lock when
its holder dies, however it dies. Reports are not written here: the CLI writes them after the
run returns.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

import slt_probe
from slt_probe.files import FolderLock, check_safe_name
from slt_probe.runs.arch import allowed_for_spec, known_llc
from slt_probe.runs.resume import check_start
from slt_probe.runs.rundir import RunDir
from slt_probe.runs.schema import SpecError
from slt_probe.runs.spec import load_spec
from slt_probe.runs.train import Trainer
from slt_probe.sampling import onednn


def versions() -> dict[str, str]:
    """What the run's numbers depend on beyond its spec: library versions and which kernels
    multiply the probe's float32 matrices (rounding differs between them)."""
    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),  # TorchVersion is not a plain str (weights_only)
        "slt_probe": getattr(slt_probe, "__version__", "unknown"),
        "float32_matmul": "oneDNN" if onednn.enabled() else "torch BLAS",
    }


def run_spec(
    spec: str | Path | Mapping,
    *,
    overrides: Mapping[str, Any] | list[str] | None = None,
    out_dir: str | Path | None = None,
    name: str | None = None,
    resume: bool = False,
    on_eval: Callable[[int, dict], None] | None = None,
    progress: bool = True,
    report: bool = False,
    model_files: Iterable[str | Path] = (),
    allow_archs: Iterable[str] = (),
    lock_timeout: float = 0.0,
) -> dict:
    """Train one run described by ``spec`` (a models/*.toml path or a dict) into
    ``<out_dir or runs>/<name or spec name>``; returns the final summary dict.

    ``resume=True`` continues a killed run from its last checkpoint (the resolved spec must be
    the same); on a directory without a checkpoint (killed before its step-0 checkpoint) it
    restarts from step 0, and on one whose checkpoints are all unreadable it stops with a
    :class:`~slt_probe.runs.rundir.RunDirError` listing them, changing nothing. A study retry
    can therefore always pass ``resume=True``. ``on_eval(step, metrics)`` is called after every
    evaluation and may raise (e.g. ``optuna.TrialPruned``): the run directory is left
    consistent with status "partial" and the exception propagates.

    ``model_files`` / ``allow_archs``: model classes allowed besides slt_probe's own and those
    next to a spec file (:mod:`slt_probe.runs.arch`). ``lock_timeout``: seconds to wait for
    another writer of the run directory before a :class:`~slt_probe.files.LockedError`.
    ``report`` is accepted for callers written before reports moved to the CLI and is ignored:
    write one with :func:`slt_probe.reports.write_run_report`.
    """
    del report  # the runs layer writes no reports (the CLI does)
    config = load_spec(spec, overrides)
    if name is not None:
        try:
            config["name"] = check_safe_name(name, "name")
        except ValueError as exc:
            raise SpecError(str(exc)) from None
    config["versions"] = versions()
    config.setdefault("spec_path", None)
    truth = known_llc(config)
    if truth is not None:
        config["truth"] = truth
    spec_file = None if isinstance(spec, Mapping) else spec
    allowed = allowed_for_spec(spec_file, model_files, allow_archs)
    rd = RunDir(Path(out_dir if out_dir is not None else "runs") / config["name"])
    # Built before the lock: a spec whose model or data fail leaves nothing on disk.
    trainer = Trainer(
        config, rd, resume=resume, on_eval=on_eval, progress=progress, allowed=allowed
    )
    with FolderLock(rd.path, timeout=lock_timeout):
        check_start(rd, config, resume)
        summary = trainer.run()
        rd.write_summary(summary)
    return summary
