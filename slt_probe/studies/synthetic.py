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
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from slt_probe.files import atomic_write_text


def generalisation_midpoint(alpha: float, weight_decay: float) -> float:
    """t_g = 100·α·sqrt(0.01/wd), in steps."""
    return 100.0 * alpha * math.sqrt(0.01 / weight_decay)


def test_accuracy(step: float, t_g: float) -> float:
    return 0.1 + 0.85 / (1.0 + math.exp(-(step - t_g) / (0.15 * t_g)))


def llc_curve(step: float, t_g: float) -> float:
    return 20.0 + 30.0 * math.exp(-(((step - 0.6 * t_g) / (0.3 * t_g)) ** 2))


def _append(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _read(path: Path) -> list[dict]:
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a torn last line
                break
    return rows


def _write_json(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1))


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
    """Write a synthetic run directory at ``<out_dir>/<name>`` and return its summary dict."""
    o = dict(overrides or {})
    alpha = float(o.get("model.init_scale", 1.0))
    wd = float(o.get("train.weight_decay", 0.01))
    steps = int(o.get("train.steps", 2000))
    every = int(o.get("train.eval_every", 100))
    sleep_s = float(o.get("synthetic.sleep_s", 0.0))
    fail_at = o.get("synthetic.fail_at_step")
    if alpha <= 0 or wd <= 0:
        raise ValueError("synthetic run: model.init_scale and train.weight_decay must be > 0")
    name = name or f"synthetic_a{alpha:g}_wd{wd:g}"
    run_dir = Path(out_dir or "runs") / name
    run_dir.mkdir(parents=True, exist_ok=True)
    t_g = generalisation_midpoint(alpha, wd)
    metrics_path, llc_path = run_dir / "metrics.jsonl", run_dir / "llc.jsonl"
    if not resume:
        for p in (metrics_path, llc_path):
            p.unlink(missing_ok=True)
    done = _read(metrics_path)
    start = done[-1]["step"] + every if done else 0
    _write_json(run_dir / "config.json", {"name": name, "overrides": o, "synthetic": True})
    t0 = time.time()

    def summary(status: str, steps_done: int) -> dict:
        rows = _read(metrics_path)
        llcs = _read(llc_path)
        last = rows[-1] if rows else {}
        mid = int(t_g) if t_g <= steps_done else None
        test_tr = None
        if mid is not None:
            test_tr = {
                "onset": int(0.7 * t_g),
                "midpoint": mid,
                "end": int(1.3 * t_g),
                "direction": "up",
                "before": 0.1,
                "after": 0.95,
            }
        llc_mid = int(0.6 * t_g) if 0.6 * t_g <= steps_done else None
        s = {
            "name": name,
            "status": status,
            "steps_done": steps_done,
            "total_steps": steps,
            "final": {
                "train_acc": last.get("train_acc"),
                "test_acc": last.get("test_acc"),
                "train_loss": last.get("train_loss"),
                "test_loss": last.get("test_loss"),
                "llc_mean": llcs[-1]["llc_mean"] if llcs else None,
                "weight_norm": last.get("weight_norm"),
            },
            "n_params": 0,
            "seed": 0,
            "versions": {},
            "wall_time_s": time.time() - t0,
            "probe_time_s": 0.0,
            "probe_overhead_fraction": 0.0,
            "transitions": {
                "test_acc": test_tr,
                "llc": None,
                "hessian_eff_dim": None,
                "alignment": {
                    "llc": None
                    if mid is None or llc_mid is None
                    else {"lag_steps": llc_mid - mid, "lag_log10_steps": None, "correlation": None},
                    "hessian_eff_dim": None,
                },
            },
            "report": None,
        }
        _write_json(run_dir / "summary.json", s)
        return s

    step = start
    while step <= steps:
        if fail_at is not None and step >= int(fail_at):
            summary("partial", step)
            raise RuntimeError(f"synthetic run failed at step {step} (synthetic.fail_at_step)")
        acc = test_accuracy(step, t_g)
        row = {
            "step": step,
            "train_loss": max(1e-4, 1.0 - step / 200),
            "train_acc": min(1.0, 0.1 + step / 200),
            "test_loss": 1.0 - acc,
            "test_acc": acc,
            "weight_norm": 10.0 * alpha * math.exp(-wd * step / 100),
            "time_s": time.time() - t0,
        }
        _append(metrics_path, row)
        _append(llc_path, {"step": step, "llc_mean": llc_curve(step, t_g), "test_acc": acc})
        summary("partial", step)
        if on_eval is not None:
            on_eval(step, row)  # may raise (e.g. optuna.TrialPruned): the dir stays consistent
        if sleep_s:
            time.sleep(sleep_s)
        step += every
    return summary("complete", steps)
