"""A spec's model trained without the probe: its set-up (seed, data, model, α-scaled
initialisation, loss, optimizer) and its minibatch schedule, as every run of the spec has them.

:class:`Training` is one model's training state; :class:`slt_probe.runs.train.Trainer` wraps it
with the λ̂ probe, evaluations, checkpoints and a run directory, and benchmarks that need a
spec's model after k steps (``slt_probe.bench.precision``) use it alone. The minibatch of step t
is a pure function of (seed, t) (:class:`Batches`), which is what makes runs resumable.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from slt_probe.runs.arch import ArchAllowList, build_model
from slt_probe.runs.data import RunData, load_data
from slt_probe.runs.losses import CLASSIFICATION, accuracy, get_loss
from slt_probe.runs.schema import SpecError

EVAL_CHUNK = 8192


def scale_init(model: nn.Module, alpha: float) -> None:
    """Omnigrok initialisation: every initial parameter multiplied by α (Liu et al. 2023)."""
    if alpha != 1.0:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(alpha)


def make_optimizer(model: nn.Module, train: Mapping, fused: bool = True) -> torch.optim.Optimizer:
    """The spec's optimizer. With ``fused`` (the default), torch's fused kernel where the
    parameters' device and dtype have one: the same update in one kernel per step instead of
    several per tensor, which is a large part of a small model's step on CPU (``slt-probe bench
    train`` times the two side by side)."""
    params, lr, wd = list(model.parameters()), train["lr"], train["weight_decay"]
    if train["optimizer"] in ("adamw", "adam"):
        cls = torch.optim.AdamW if train["optimizer"] == "adamw" else torch.optim.Adam
        options = dict(lr=lr, weight_decay=wd, betas=tuple(train["betas"]))
    else:
        cls = torch.optim.SGD
        options = dict(lr=lr, weight_decay=wd, momentum=train["momentum"])
    if fused:
        try:
            return cls(params, **options, fused=True)
        except RuntimeError:  # a device or dtype without the fused kernel: torch's default path
            pass
    return cls(params, **options)


class Batches:
    """Minibatch indices of step t (0-based update index) as a pure function of (seed, t):
    epoch e = t // (n // B) is a permutation drawn from a generator seeded by (seed, e); the
    last n mod B examples of each epoch are dropped. B = 0 or B >= n means full batch."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.seed = n, seed
        self.full = batch_size == 0 or batch_size >= n
        self.batch_size = n if self.full else batch_size
        self.per_epoch = n // self.batch_size
        self._epoch, self._perm = -1, None

    def indices(self, t: int) -> torch.Tensor | None:
        """Row indices for update t, or None for the full batch."""
        if self.full:
            return None
        epoch, k = divmod(t, self.per_epoch)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._epoch = torch.randperm(self.n, generator=gen), epoch
        return self._perm[k * self.batch_size : (k + 1) * self.batch_size]


class Training:
    """A spec's model, data, loss, optimizer and minibatch schedule, set up as its run does:
    seeded by ``config["seed"]`` (torch and ``random``), the model built from the arch allow-list,
    cast to ``train.dtype`` and scaled by ``model.init_scale``. :meth:`update` is one optimizer
    step; :class:`Trainer` runs them with the probe and a run directory around them, and
    ``Training(config).train(k)`` alone gives the model after k steps (benchmarks' checkpoints).
    ``fused``: see :func:`make_optimizer`."""

    def __init__(self, config: dict, allowed: ArchAllowList | None = None, *, fused: bool = True):
        self.config, train = config, config["train"]
        self.dtype = getattr(torch, train["dtype"])
        torch.manual_seed(config["seed"])
        random.seed(config["seed"])
        base = Path(config["spec_path"]).parent if config.get("spec_path") else None
        self.data: RunData = load_data(config["data"], base).to(self.dtype)
        self.model = build_model(config, allowed).to(self.dtype)
        scale_init(self.model, config["model"]["init_scale"])
        self.loss_fn = get_loss(train["loss"])
        self.classify = train["loss"] in CLASSIFICATION
        self._check_shapes()
        self.optimizer = make_optimizer(self.model, train, fused)
        self.batches = Batches(self.data.n_train, train["batch_size"], config["seed"])

    def _check_shapes(self) -> None:
        x, y = self.data.x_train[:2], self.data.y_train[:2]
        try:
            with torch.no_grad():
                out = self.model(x)
        except Exception as exc:
            raise SpecError(
                f"model {self.config['model']['arch']} fails on the data's inputs of shape "
                f"{tuple(x.shape)} ({exc})"
            ) from exc
        if self.classify:
            k = self.data.num_classes
            if out.dim() != 2 or out.shape[1] != k:
                raise SpecError(
                    f"model outputs shape {tuple(out.shape)} but data.kind "
                    f"{self.config['data']['kind']!r} has {k} classes: set model.kwargs so the "
                    f"output is (batch, {k})"
                )
        elif out.shape != y.shape:
            raise SpecError(
                f"model outputs shape {tuple(out.shape)}, targets have {tuple(y.shape)}"
            )

    def update(self, t: int) -> None:
        """Optimizer update t (0-based) on its minibatch (:class:`Batches`)."""
        x, y, idx = self.data.x_train, self.data.y_train, self.batches.indices(t)
        xb, yb = (x, y) if idx is None else (x[idx], y[idx])
        self.optimizer.zero_grad(set_to_none=True)
        self.loss_fn(self.model(xb), yb).backward()
        self.optimizer.step()

    def train(self, steps: int) -> Training:
        """Updates 0 … steps − 1 in training mode; returns self."""
        self.model.train()
        for t in range(steps):
            self.update(t)
        return self

    def evaluate(self) -> dict:
        """{train_loss, train_acc, test_loss, test_acc} of the model now (accuracies None for a
        regression loss)."""
        d, out = self.data, {}
        for part, x, y in (("train", d.x_train, d.y_train), ("test", d.x_test, d.y_test)):
            out[f"{part}_loss"], out[f"{part}_acc"] = evaluate(
                self.model, self.loss_fn, x, y, self.classify
            )
        return out


@torch.no_grad()
def evaluate(model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor, classify: bool):
    """(mean loss, accuracy or None) over the whole set, in chunks."""
    if x.shape[0] == 0:
        return None, None
    total, correct = 0.0, 0.0
    for i in range(0, x.shape[0], EVAL_CHUNK):
        out = model(x[i : i + EVAL_CHUNK])
        yy = y[i : i + EVAL_CHUNK]
        total += float(loss_fn(out, yy)) * yy.shape[0]
        if classify:
            correct += accuracy(out, yy) * yy.shape[0]
    n = x.shape[0]
    return total / n, (correct / n if classify else None)
