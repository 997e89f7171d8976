"""Per-component λ̂ at every probe point: weight groups (attention heads, layers, neuron blocks)
and data groups (one class, one operand range, a held-out split).

- Weight-restricted LLC of group V: only the weights in V are sampled, every other weight at
  w*; λ̂_V = nβ·(E[L_n] − L_n(w*)) with n and nβ of the whole training set. All groups' chains
  run as one batched computation (:func:`slt_probe.estimators.grouped.estimate_llc_groups`) at
  the step size of the whole model's estimate of the same probe point (safe for every group:
  a restricted potential's top curvature is at most the whole one's).
- Data-refined LLC of subset D: L_n over D in the posterior and in λ̂ (one estimate per subset,
  with nβ of the whole training set unless ``nbeta`` is set, so curves share one temperature).

Rows go to ``run_dir/llc_groups.jsonl``, one per (step, group), that
``pandas.read_json(path, lines=True)`` reads directly; they are appended before the probe
point's own ``llc.jsonl`` row, and a probe resuming a run directory drops group rows of steps
without that row (a kill between the two), so every step's groups are measured exactly once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path

import torch

from slt_probe.estimators.grouped import estimate_llc_groups
from slt_probe.estimators.llc import estimate_llc
from slt_probe.estimators.result import LLCResult
from slt_probe.files import append_jsonl, atomic_write_text, json_clean, read_jsonl

GROUPS_FILE = "llc_groups.jsonl"

#: The columns of a group row.
GROUP_KEYS = (
    "step", "group", "kind", "llc_mean", "llc_std", "llc_stderr", "llc_per_chain",
    "num_weights", "num_examples", "step_size", "nbeta", "r_hat", "ess", "num_diverged",
    "virial_ratio", "time_s",
)  # fmt: skip


#: Options of the whole-model estimate that a batched group run does not take.
_WHOLE_ONLY = ("extrapolate", "target_rse", "max_steps", "max_burnin", "params", "backend")


def check_groups(groups, data_groups) -> None:
    """``groups``: ``None``, a dict ``{name: selection}`` or a callable ``model -> dict`` (such as
    :func:`slt_probe.groups.attention_heads`); ``data_groups``: ``None`` or ``{name: data}``."""
    if groups is not None and not (callable(groups) or isinstance(groups, Mapping)):
        raise TypeError(
            f"groups must be a dict {{name: selection}} or a callable model -> dict, got {groups!r}"
        )
    if isinstance(groups, Mapping) and not groups:
        raise ValueError("groups is empty: give at least one group")
    if data_groups is not None:
        if not isinstance(data_groups, Mapping) or not data_groups:
            raise ValueError("data_groups must be a non-empty dict {name: data}")
        for name in data_groups:
            if not isinstance(name, str):
                raise TypeError(f"data_groups: names must be strings, got {name!r}")


def _row(step: int, name: str, kind: str, res: LLCResult, seconds: float, examples) -> dict:
    d = res.diagnostics
    return {
        "step": int(step),
        "group": name,
        "kind": kind,
        "llc_mean": res.llc_mean,
        "llc_std": res.llc_std,
        "llc_stderr": res.llc_stderr,
        "llc_per_chain": [float(x) for x in res.llc_per_chain],
        "num_weights": res.sampled_weights.get("total"),
        "num_examples": examples,
        "step_size": res.step_size,
        "nbeta": res.nbeta,
        "r_hat": d.r_hat,
        "ess": d.ess,
        "num_diverged": d.num_diverged,
        "virial_ratio": d.virial.get("ratio"),
        "time_s": seconds,
    }


def measure_groups(
    step: int,
    model: torch.nn.Module,
    loss_fn,
    data,
    whole: LLCResult,
    *,
    groups,
    data_groups: Mapping | None,
    options: dict,
    seed: int,
) -> list[dict]:
    """The group rows of one probe point (see module docstring); ``whole`` is the probe point's
    whole-model estimate (its step size and nβ are shared)."""
    rows = []
    if groups is not None:
        selections = groups(model) if callable(groups) else groups
        t0 = time.perf_counter()
        batched = {k: v for k, v in options.items() if k not in _WHOLE_ONLY}
        batched |= {"step_size": whole.step_size, "seed": seed}
        results = estimate_llc_groups(model, loss_fn, data, selections, **batched)
        seconds = (time.perf_counter() - t0) / max(len(results), 1)
        rows += [_row(step, k, "weights", r, seconds, None) for k, r in results.items()]
    for name, subset in (data_groups or {}).items():
        t0 = time.perf_counter()
        kwargs = {**options, "seed": seed}
        kwargs["nbeta"] = options.get("nbeta") or whole.nbeta
        res = estimate_llc(model, loss_fn, subset, **kwargs)
        rows.append(_row(step, name, "data", res, time.perf_counter() - t0, res.n))
    return rows


def load_group_rows(run_dir: Path, measured: set[int]) -> list[dict]:
    """The group rows of ``run_dir`` whose step has its ``llc.jsonl`` row; rows of other steps
    (a kill between the two files) are dropped from the file too."""
    path = Path(run_dir) / GROUPS_FILE
    rows = list(read_jsonl(path))
    kept = [r for r in rows if int(r.get("step", -1)) in measured]
    if len(kept) != len(rows):
        atomic_write_text(path, "".join(_line(r) for r in kept))
    return kept


def _line(row: dict) -> str:
    return json.dumps(json_clean(row), allow_nan=False) + "\n"


def append_group_rows(run_dir: Path, rows: list[dict]) -> None:
    for row in rows:
        append_jsonl(Path(run_dir) / GROUPS_FILE, row)


def group_table(rows: list[dict]):
    """The group rows as a DataFrame sorted by (step, group)."""
    import pandas as pd

    df = pd.DataFrame(rows, columns=None if rows else list(GROUP_KEYS))
    return df.sort_values(["step", "group"]).reset_index(drop=True) if len(df) else df
