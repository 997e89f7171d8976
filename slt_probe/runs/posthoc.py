"""λ̂ again, after training, at a run's saved checkpoints, with other estimator settings.

The probe measures λ̂ while the model trains, with settings cheap enough to run twenty times
(the Omnigrok spec: 2 chains × 800 steps at a fixed ε). Checking those numbers, or asking
another question of the same trajectory (more chains, another γ, the calibrated default, NUTS-
checked settings), should not mean training again: every probe point leaves a checkpoint, and
this module re-estimates λ̂ there.

    from slt_probe.runs.posthoc import estimate_checkpoints
    rows = estimate_checkpoints("runs/omnigrok_mnist", num_chains=8)          # estimate_llc defaults
    rows = estimate_checkpoints("runs/omnigrok_mnist", like_probe=True, num_chains=8)

With ``groups=["heads"]`` (``slt-probe llc RUN_DIR --groups heads``; also ``layers``) the
weight-restricted λ̂ of every group is estimated too, all groups in one batched run at the whole
model's ε (:mod:`slt_probe.probe.refined`), one row per (step, group) in
``<run>/llc_groups_posthoc.jsonl``.

Rows are appended to ``<run>/llc_posthoc.jsonl`` as each checkpoint finishes (a killed sweep
keeps what it wrote, and the same call later skips the steps already measured with the same
settings). Checkpoints load with ``torch.load(..., weights_only=True)``.

A run directory may come from someone else, so nothing in it picks code: the model class named
in its config.json is built only if slt_probe ships it or the caller allows it
(``model_files=`` / ``allow_archs=``, ``--model-file`` / ``--allow-arch`` on the command line;
:mod:`slt_probe.runs.arch`), and the spec folder recorded there is never searched for modules.
The estimator settings (given, or the run's own with ``like_probe``) are checked before anything
is loaded. The sweep holds the run directory's lock while it appends rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from slt_probe.estimators.llc import estimate_llc
from slt_probe.files import FolderLock, append_jsonl, json_clean, read_jsonl
from slt_probe.probe.options import check_estimator_options
from slt_probe.probe.refined import measure_groups
from slt_probe.runs.arch import ArchAllowList, build_model
from slt_probe.runs.data import load_data
from slt_probe.runs.groups_spec import make_groups
from slt_probe.runs.losses import get_loss
from slt_probe.runs.rundir import RunDir
from slt_probe.runs.schema import PROBE_FIELDS

POSTHOC_FILE = "llc_posthoc.jsonl"
GROUPS_POSTHOC_FILE = "llc_groups_posthoc.jsonl"
GROUP_KINDS = ("heads", "layers")


def _group_fn(groups: Iterable[str] | None):
    """``model -> {name: selection}`` for the group kinds asked for (``None``: none)."""
    kinds = list(groups or ())
    for kind in kinds:
        if kind not in GROUP_KINDS:
            raise ValueError(f"groups: {kind!r} is not a group kind (known: {list(GROUP_KINDS)})")
    return make_groups(dict.fromkeys(kinds, True)) if kinds else None


def probe_estimator_kwargs(probe: Mapping[str, Any]) -> dict[str, Any]:
    """The ``estimate_llc`` keyword arguments of a spec's [probe] section (``seed`` included:
    the probe estimates at step t with seed ``seed + t``)."""
    kwargs = {k: v for k, v in probe.items() if k not in PROBE_FIELDS and v is not None}
    if not kwargs.get("sampler_options"):
        kwargs.pop("sampler_options", None)
    return kwargs


def _steps_to_measure(
    rd: RunDir, steps: Iterable[int] | None, probed: Iterable[int]
) -> list[tuple[int, Path]]:
    checkpoints = dict(rd.list_checkpoints())
    if not checkpoints:
        raise FileNotFoundError(
            f"{rd.path} has no checkpoints ({rd.checkpoints}/step_*.pt): nothing to re-estimate"
        )
    if steps is None:  # the probe's points, else every checkpoint
        measured = sorted(set(probed) & set(checkpoints))
        return [(s, checkpoints[s]) for s in (measured or sorted(checkpoints))]
    out = []
    for s in steps:
        if int(s) not in checkpoints:
            shown = ", ".join(str(k) for k in sorted(checkpoints))
            raise ValueError(f"no checkpoint at step {s} in {rd.checkpoints}; available: {shown}")
        out.append((int(s), checkpoints[int(s)]))
    return out


def estimate_checkpoints(
    run_dir: str | Path,
    steps: Iterable[int] | None = None,
    *,
    like_probe: bool = False,
    out: str | Path | None = None,
    on_row: Callable[[dict], None] | None = None,
    model_files: Iterable[str | Path] = (),
    allow_archs: Iterable[str] = (),
    lock_timeout: float = 0.0,
    groups: Iterable[str] | None = None,
    **estimator_kwargs,
) -> list[dict]:
    """Estimate λ̂ at the checkpoints of ``run_dir`` on its training data; returns one row per step.

    ``steps``: which checkpoints (default: the steps the probe measured, else all of them).
    ``estimator_kwargs`` go to :func:`slt_probe.estimate_llc` (its defaults otherwise); with
    ``like_probe`` they start from the run's own probe settings and override them. The seed of
    step t is ``seed + t``, as in the probe. Each row holds λ̂ and its spread, the probe's λ̂ at
    the same step (``probe_llc_mean``, None where it did not measure), the settings and the
    diagnostics; rows are appended to ``out`` (default ``<run_dir>/llc_posthoc.jsonl``).
    ``model_files`` / ``allow_archs``: model classes allowed besides slt_probe's own (see the
    module docstring); ``lock_timeout``: seconds to wait for another writer of ``run_dir``.
    ``groups``: group kinds (``"heads"``, ``"layers"``) whose λ̂ is estimated too, rows in
    ``<run_dir>/llc_groups_posthoc.jsonl`` (see module docstring).
    """
    group_fn = _group_fn(groups)
    rd = RunDir(run_dir)
    if not rd.config.exists():
        raise FileNotFoundError(f"{rd.path} is not a run directory (no config.json)")
    config = rd.read_config()
    settings = {
        **(probe_estimator_kwargs(config.get("probe", {})) if like_probe else {}),
        **estimator_kwargs,
    }
    check_estimator_options(settings)
    settings = json.loads(json.dumps(json_clean(settings)))  # as it will read back from disk
    seed = int(settings.pop("seed", 0))
    key = {**settings, "seed": seed}
    allowed = ArchAllowList.from_user(model_files, allow_archs)
    model = build_model(config, allowed)
    probe_llc = {int(r["step"]): r.get("llc_mean") for r in rd.llc_rows()}
    chosen = _steps_to_measure(rd, steps, probe_llc)
    out = Path(out) if out is not None else rd.path / POSTHOC_FILE
    dtype = getattr(torch, config["train"]["dtype"])
    base = Path(config["spec_path"]).parent if config.get("spec_path") else None
    data = load_data(config["data"], base).to(dtype)
    model = model.to(dtype)
    loss_fn = get_loss(config["train"]["loss"])

    rows = []
    with FolderLock(rd.path, timeout=lock_timeout):
        done = {int(r["step"]): r for r in read_jsonl(out) if r.get("settings") == key}
        for step, path in chosen:
            if step in done:  # measured by an earlier call with the same settings
                row = done[step]
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
                model.load_state_dict(state["model"])
                model.eval()  # λ̂ of the function the checkpoint computes: dropout off
                res = estimate_llc(
                    model, loss_fn, (data.x_train, data.y_train), seed=seed + step, **settings
                )
                row = _row(step, res, probe_llc.get(step), key)
                if group_fn is not None:  # before the step's own row, as the probe does
                    _group_rows(rd, step, model, loss_fn, data, res, group_fn, settings, seed, key)
                append_jsonl(out, row)
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows


def _group_rows(rd, step, model, loss_fn, data, res, group_fn, settings, seed, key) -> None:
    rows = measure_groups(
        step,
        model,
        loss_fn,
        (data.x_train, data.y_train),
        res,
        groups=group_fn,
        data_groups=None,
        options=settings,
        seed=seed + step,
    )
    for r in rows:
        append_jsonl(rd.path / GROUPS_POSTHOC_FILE, {**r, "settings": key})


def _row(step: int, res, probe_llc: float | None, key: dict) -> dict:
    d = res.diagnostics
    return json_clean(
        {
            "step": step,
            "llc_mean": res.llc_mean,
            "llc_std": res.llc_std,
            "llc_stderr": res.llc_stderr,
            "llc_per_chain": [float(v) for v in res.llc_per_chain],
            "probe_llc_mean": probe_llc,
            "step_size": res.step_size,
            "nbeta": res.nbeta,
            "localization": res.localization,
            "num_chains": res.num_chains,
            "num_draws": res.num_draws,
            "num_burnin": res.num_burnin,
            "batch_size": res.batch_size,
            "sampler": res.sampler,
            "r_hat": d.r_hat,
            "ess": d.ess,
            "num_diverged": d.num_diverged,
            "end_stiffness": d.end_curvature.get("stiffness"),
            "virial_ratio": d.virial.get("ratio"),
            "warnings": list(d.warnings),
            "wall_time_s": res.wall_time_s,
            "settings": key,
        }
    )
