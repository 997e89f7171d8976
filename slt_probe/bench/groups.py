"""Per-group λ̂: every group's chains batched in one run against one estimate after another.

For a workload and its groups (the heads of the modular-addition transformer, the layers of the
MNIST MLP), the same chains — same ε, chains per group, burn-in, draws, minibatch size and seed
— are run twice, side by side in one process: once by
:func:`slt_probe.estimators.grouped.estimate_llc_groups` (groups × chains as the rows of one
batched computation) and once as ``estimate_llc(params=group)`` for each group in turn. The
figure is the ratio of the wall times (sequential / batched; above 1 the batch is faster), with
each group's λ̂ both ways so that the two are seen to measure the same thing.
"""

from __future__ import annotations

import time

import numpy as np

import slt_probe.groups as weight_groups
from slt_probe.bench.speed import Workload, mlp_workload, transformer_workload
from slt_probe.estimators.grouped import estimate_llc_groups
from slt_probe.estimators.llc import estimate_llc


def workloads(quick: bool) -> list[tuple[Workload, dict, str]]:
    """(workload, groups, what) for each benchmark row."""
    transformer = transformer_workload()
    mlp = mlp_workload(n=500 if quick else 1000)
    return [
        (transformer, weight_groups.attention_heads(transformer.model), "attention heads"),
        (mlp, weight_groups.layers(mlp.model), "layers"),
    ]


def compare(w: Workload, groups: dict, what: str, *, chains: int, steps: int) -> dict:
    """One benchmark row: seconds batched and sequential, their ratio, and λ̂ per group."""
    options = dict(
        num_chains=chains,
        num_burnin=steps // 2,
        num_draws=steps - steps // 2,
        batch_size=w.batch_size,
        step_size=w.step_size * 50,
        seed=0,
    )
    t0 = time.perf_counter()
    batched = estimate_llc_groups(w.model, w.loss_fn, w.data, groups, **options)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    alone = {
        name: estimate_llc(w.model, w.loss_fn, w.data, params=sel, **options)
        for name, sel in groups.items()
    }
    t_sequential = time.perf_counter() - t0
    gap = [abs(batched[k].llc_mean - alone[k].llc_mean) for k in groups]
    return {
        "workload": w.name,
        "groups": f"{len(groups)} {what}",
        "chains_per_group": chains,
        "steps": steps,
        "batched_s": t_batched,
        "sequential_s": t_sequential,
        "speedup": t_sequential / t_batched,
        "llc_batched": {k: r.llc_mean for k, r in batched.items()},
        "llc_sequential": {k: r.llc_mean for k, r in alone.items()},
        "max_llc_gap": float(np.max(gap)),
        "gradient_batched": next(iter(batched.values())).diagnostics.engine.get("gradient"),
    }


def run(quick: bool = False, chains: int = 2, steps: int | None = None) -> list[dict]:
    """Every row; ``steps`` per chain default to 400 (100 with ``quick``)."""
    steps = (100 if quick else 400) if steps is None else steps
    rows = workloads(quick)
    # one short estimate first: the lazy imports (numpyro's diagnostics pull in jax) and the
    # one-time oneDNN timing would otherwise be charged to the first batched run
    w = rows[-1][0]
    estimate_llc(w.model, w.loss_fn, w.data, num_chains=2, num_burnin=2, num_draws=2, seed=0)
    return [compare(w, g, what, chains=chains, steps=steps) for w, g, what in rows]
