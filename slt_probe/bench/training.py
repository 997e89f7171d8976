"""Training steps per second of a run spec: torch's fused optimizer kernel against its default
(per-tensor ``foreach``) path, side by side in one process.

Both variants train the spec's own model from the same seed on the same minibatches
(:class:`slt_probe.runs.training.Training`), ``steps`` updates each, alternating over
``repeats`` rounds so that a change of the machine's load falls on both; the figure is the
ratio of the median rates (fused / default). This is the rate that sets how long a run's
training takes besides its probe points (``slt-probe run`` uses the fused kernel where torch has
one).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from slt_probe.bench import pages
from slt_probe.runs import load_spec
from slt_probe.runs.training import Training

STEPS = 2000
REPEATS = 3


def compare(spec: str | Path, steps: int = STEPS, repeats: int = REPEATS) -> dict:
    """{spec, params, steps, repeats, rates: {variant: [steps/s per round]}, median: {variant:
    steps/s}, speedup (fused / default), final_loss: {variant: train loss after the last
    round}}: the same update in both, so the two losses differ only by float rounding."""
    if steps < 1 or repeats < 1:
        raise ValueError(f"steps and repeats must be >= 1, got {steps}, {repeats}")
    config = load_spec(spec)
    rates: dict[str, list[float]] = {"fused": [], "default": []}
    losses: dict[str, float] = {}
    Training(config).train(min(steps, 50))  # first-call costs (oneDNN kernels, imports)
    for _ in range(repeats):
        for variant in rates:
            t = Training(config, fused=variant == "fused")
            start = time.perf_counter()
            t.train(steps)
            rates[variant].append(steps / (time.perf_counter() - start))
            losses[variant] = t.evaluate()["train_loss"]
    median = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "spec": str(spec),
        "params": sum(p.numel() for p in t.model.parameters()),
        "optimizer": config["train"]["optimizer"],
        "batch_size": config["train"]["batch_size"],
        "steps": steps,
        "repeats": repeats,
        "torch_threads": torch.get_num_threads(),
        "rates": rates,
        "median": median,
        "speedup": median["fused"] / median["default"],
        "final_loss": losses,
    }


def train_page(payload: dict, command: str) -> str:
    """The page of ``slt-probe bench train``."""
    rows = [
        {
            "spec": r["spec"],
            "params": r["params"],
            "optimizer": r["optimizer"],
            "batch": r["batch_size"] or "full",
            "fused": pages.fmt(r["median"]["fused"], 4),
            "default": pages.fmt(r["median"]["default"], 4),
            "speedup": f"{r['speedup']:.2f}×",
            "loss_gap": pages.fmt(abs(r["final_loss"]["fused"] - r["final_loss"]["default"]), 2),
        }
        for r in payload["rows"]
    ]
    columns = [
        ("spec", "spec"),
        ("params", "parameters"),
        ("optimizer", "optimizer"),
        ("batch", "minibatch"),
        ("fused", "fused (steps/s)"),
        ("default", "default (steps/s)"),
        ("speedup", "fused / default"),
        ("loss_gap", "train-loss gap after training"),
    ]
    r0 = payload["rows"][0]
    body = (
        f"Each spec's own training, {r0['steps']} updates per variant and round, {r0['repeats']} "
        "rounds alternating the variants; medians over rounds. `fused`: torch's fused optimizer "
        "kernel (what `slt-probe run` uses where torch has one); `default`: torch's default "
        "per-tensor path. Same seed and minibatches, so the train-loss gap is float rounding.\n\n"
        + pages.table(rows, columns)
    )
    return pages.page("Training steps per second", command, [("Training", body)])
