"""λ̂ again, after training, at a run's saved checkpoints, with other estimator settings.

The probe measures λ̂ while the model trains, with settings cheap enough to run twenty times
(the Omnigrok spec: 2 chains × 800 steps at a fixed ε). Checking those numbers, or asking
another question of the same trajectory (more chains, another γ, the calibrated default, NUTS-
checked settings), should not mean training again: every probe point leaves a checkpoint, and
this module re-estimates λ̂ there.

    from slt_probe.runs.posthoc import estimate_checkpoints
    rows = estimate_checkpoints("runs/omnigrok_mnist", num_chains=8)          # estimate_llc defaults
    rows = estimate_checkpoints("runs/omnigrok_mnist", like_probe=True, num_chains=8)

Rows are appended to ``<run>/llc_posthoc.jsonl`` as each checkpoint finishes (a killed sweep
keeps what it wrote, and the same call later skips the steps already measured with the same
settings). Checkpoints load with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from slt_probe.files import append_jsonl, json_clean, read_jsonl
from slt_probe.runs.data import load_data
from slt_probe.runs.losses import get_loss
from slt_probe.runs.rundir import RunDir
from slt_probe.runs.spec import build_model

#: Keys of a spec's [probe] section that configure the probe rather than ``estimate_llc``.
PROBE_ONLY = ("enabled", "schedule", "num_points", "start", "hessian", "hessian_kwargs")

POSTHOC_FILE = "llc_posthoc.jsonl"


def probe_estimator_kwargs(probe: Mapping[str, Any]) -> dict[str, Any]:
    """The ``estimate_llc`` keyword arguments of a spec's [probe] section (``seed`` included:
    the probe estimates at step t with seed ``seed + t``)."""
    kwargs = {k: v for k, v in probe.items() if k not in PROBE_ONLY and v is not None}
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
    **estimator_kwargs,
) -> list[dict]:
    """Estimate λ̂ at the checkpoints of ``run_dir`` on its training data; returns one row per step.

    ``steps``: which checkpoints (default: the steps the probe measured, else all of them).
    ``estimator_kwargs`` go to :func:`slt_probe.estimate_llc` (its defaults otherwise); with
    ``like_probe`` they start from the run's own probe settings and override them. The seed of
    step t is ``seed + t``, as in the probe. Each row holds λ̂ and its spread, the probe's λ̂ at
    the same step (``probe_llc_mean``, None where it did not measure), the settings and the
    diagnostics; rows are appended to ``out`` (default ``<run_dir>/llc_posthoc.jsonl``).
    """
    from slt_probe.estimators.llc import estimate_llc

    rd = RunDir(run_dir)
    if not rd.config.exists():
        raise FileNotFoundError(f"{rd.path} is not a run directory (no config.json)")
    config = rd.read_config()
    probe_llc = {int(r["step"]): r.get("llc_mean") for r in rd.llc_rows()}
    chosen = _steps_to_measure(rd, steps, probe_llc)
    settings = {
        **(probe_estimator_kwargs(config["probe"]) if like_probe else {}),
        **estimator_kwargs,
    }
    settings = json.loads(json.dumps(json_clean(settings)))  # as it will read back from disk
    seed = int(settings.pop("seed", 0))
    key = {**settings, "seed": seed}
    out = Path(out) if out is not None else rd.path / POSTHOC_FILE
    done = {int(r["step"]): r for r in read_jsonl(out) if r.get("settings") == key}

    dtype = getattr(torch, config["train"]["dtype"])
    base = Path(config["spec_path"]).parent if config.get("spec_path") else None
    data = load_data(config["data"], base).to(dtype)
    model = build_model(config).to(dtype)
    loss_fn = get_loss(config["train"]["loss"])

    rows = []
    for step, path in chosen:
        if step in done:  # measured by an earlier call with the same settings
            rows.append(done[step])
            if on_row is not None:
                on_row(done[step])
            continue
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        model.eval()  # λ̂ of the function the checkpoint computes: dropout off, norms frozen
        res = estimate_llc(
            model, loss_fn, (data.x_train, data.y_train), seed=seed + step, **settings
        )
        d = res.diagnostics
        row = json_clean(
            {
                "step": step,
                "llc_mean": res.llc_mean,
                "llc_std": res.llc_std,
                "llc_stderr": res.llc_stderr,
                "llc_per_chain": [float(v) for v in res.llc_per_chain],
                "probe_llc_mean": probe_llc.get(step),
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
        append_jsonl(out, row)
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows
