"""A synthetic training run with ``run_spec``'s signature, for testing and dry-running studies.

It trains nothing: it writes a run directory (``config.json``, ``metrics.jsonl``, ``llc.jsonl``,
``summary.json``, per the run-directory contract) whose curves are closed-form functions of the
overrides, so a study's machinery (sampling, pruning, storage, workers, faults) can be exercised in
seconds. Select it in a study spec with ``runner = "slt_probe.studies.synthetic:synthetic_run"``.

Model (steps t; α = ``model.init_scale`` (default 1), wd = ``train.weight_decay`` (0.01)):

- generalisation midpoint t_g = 100·α·sqrt(0.01/wd) steps;
- test accuracy(t) = 0.1 + 0.85·σ((t − t_g)/(0.15·t_g)), σ the logistic function;
- train accuracy(t) = min(1, 0.1 + t/200);
- λ̂(t) = 20 + 30·exp(−((t − 0.6·t_g)/(0.3·t_g))²) (peaks before generalisation).

Other keys: ``train.steps`` (default 2000), ``train.eval_every`` (100),
``synthetic.sleep_s`` (wall seconds slept per evaluation, default 0),
``synthetic.fail_at_step`` (raise RuntimeError at that step, to test failure handling).

Like ``run_spec`` it holds the run directory's :class:`~slt_probe.files.FolderLock` while it writes
(so a study's retry can tell a live writer from a dead one), checks the run name, and refuses to
start over a started directory unless resuming.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from slt_probe.files import FolderLock, append_jsonl, check_safe_name, read_jsonl, write_json


def generalisation_midpoint(alpha: float, weight_decay: float) -> float:
    """t_g = 100·α·sqrt(0.01/wd), in steps."""
    return 100.0 * alpha * math.sqrt(0.01 / weight_decay)


def test_accuracy(step: float, t_g: float) -> float:
    return 0.1 + 0.85 / (1.0 + math.exp(-(step - t_g) / (0.15 * t_g)))


def llc_curve(step: float, t_g: float) -> float:
    return 20.0 + 30.0 * math.exp(-(((step - 0.6 * t_g) / (0.3 * t_g)) ** 2))


def _read(path: Path) -> list[dict]:
    return list(read_jsonl(path))


def _summary(run_dir: Path, status: str, steps_done: int, total: int, t_g: float, t0: float):
    """Write and return ``summary.json`` as ``run_spec`` lays it out (the fields studies read)."""
    rows = _read(run_dir / "metrics.jsonl")
    llcs = _read(run_dir / "llc.jsonl")
    last = rows[-1] if rows else {}
    mid = int(t_g) if t_g <= steps_done else None
    test_tr = None
    if mid is not None:
        test_tr = {"onset": int(0.7 * t_g), "midpoint": mid, "end": int(1.3 * t_g),
                   "direction": "up", "before": 0.1, "after": 0.95}  # fmt: skip
    llc_mid = int(0.6 * t_g) if 0.6 * t_g <= steps_done else None
    lag = None if mid is None or llc_mid is None else llc_mid - mid
    final = {key: last.get(key) for key in
             ("train_acc", "test_acc", "train_loss", "test_loss", "weight_norm")}  # fmt: skip
    final["llc_mean"] = llcs[-1]["llc_mean"] if llcs else None
    s = {
        "name": run_dir.name, "status": status, "steps_done": steps_done, "total_steps": total,
        "final": final, "n_params": 0, "seed": 0, "versions": {},
        "wall_time_s": time.time() - t0, "probe_time_s": 0.0, "probe_overhead_fraction": 0.0,
        "transitions": {
            "test_acc": test_tr, "llc": None, "hessian_eff_dim": None,
            "alignment": {
                "llc": None if lag is None
                else {"lag_steps": lag, "lag_log10_steps": None, "correlation": None},
                "hessian_eff_dim": None,
            },
        },
        "report": None,
    }  # fmt: skip
    write_json(run_dir / "summary.json", s)
    return s


def _eval_row(step: int, alpha: float, wd: float, t_g: float, t0: float) -> dict:
    acc = test_accuracy(step, t_g)
    return {
        "step": step,
        "train_loss": max(1e-4, 1.0 - step / 200),
        "train_acc": min(1.0, 0.1 + step / 200),
        "test_loss": 1.0 - acc,
        "test_acc": acc,
        "weight_norm": 10.0 * alpha * math.exp(-wd * step / 100),
        "time_s": time.time() - t0,
    }


def synthetic_run(
    spec: Any = None,
    *,
    overrides: dict | None = None,
    out_dir=None,
    name: str | None = None,
    resume: bool = False,
    on_eval=None,
    progress: bool = True,
) -> dict:
    """Write a synthetic run directory at ``<out_dir>/<name>`` and return its summary dict.

    ``resume=True`` continues after the last row of ``metrics.jsonl``; without it a started
    directory is refused (``FileExistsError``), as ``run_spec`` does."""
    o = dict(overrides or {})
    alpha = float(o.get("model.init_scale", 1.0))
    wd = float(o.get("train.weight_decay", 0.01))
    steps = int(o.get("train.steps", 2000))
    every = int(o.get("train.eval_every", 100))
    sleep_s = float(o.get("synthetic.sleep_s", 0.0))
    fail_at = o.get("synthetic.fail_at_step")
    if alpha <= 0 or wd <= 0:
        raise ValueError("synthetic run: model.init_scale and train.weight_decay must be > 0")
    name = check_safe_name(name or f"synthetic_a{alpha:g}_wd{wd:g}".replace("+", ""), "run name")
    run_dir = Path(out_dir or "runs") / name
    t_g = generalisation_midpoint(alpha, wd)
    with FolderLock(run_dir):
        if not resume and any(p.name != ".lock" for p in run_dir.iterdir()):
            raise FileExistsError(f"run directory {run_dir} already exists")
        done = _read(run_dir / "metrics.jsonl")
        step = done[-1]["step"] + every if done else 0
        write_json(run_dir / "config.json", {"name": name, "overrides": o, "synthetic": True})
        t0 = time.time()
        while step <= steps:
            if fail_at is not None and step >= int(fail_at):
                _summary(run_dir, "partial", step, steps, t_g, t0)
                raise RuntimeError(f"synthetic run failed at step {step} (synthetic.fail_at_step)")
            row = _eval_row(step, alpha, wd, t_g, t0)
            append_jsonl(run_dir / "metrics.jsonl", row)
            llc = {"step": step, "llc_mean": llc_curve(step, t_g), "test_acc": row["test_acc"]}
            append_jsonl(run_dir / "llc.jsonl", llc)
            _summary(run_dir, "partial", step, steps, t_g, t0)
            if on_eval is not None:
                on_eval(step, row)  # may raise (e.g. optuna.TrialPruned): the dir stays consistent
            if sleep_s:
                time.sleep(sleep_s)
            step += every
        return _summary(run_dir, "complete", steps, steps, t_g, t0)
