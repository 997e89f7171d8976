"""λ̂ during a PyTorch Lightning fit: :class:`LLCCallback`.

    trainer = L.Trainer(max_steps=2000, callbacks=[LLCCallback((X, Y), nn.MSELoss(),
                        schedule="log", num_points=20)], logger=TensorBoardLogger("tb"))
    trainer.fit(module, loader)

The callback holds an :class:`~slt_probe.probe.LLCProbe` and calls it after every optimizer
step (``on_train_batch_end``, step = ``trainer.global_step``; step 0 at ``on_train_start``).
Each row's scalars (``slt/llc_mean``, ``slt/llc_stderr``, ``slt/r_hat``, per-component values
when the probe has ``groups``...) go to every logger of the trainer with ``log_metrics`` at that
step: directly, not through ``pl_module.log``, whose step metrics are kept only every
``log_every_n_steps``. The probe samples on the module's device, puts back the module's
train/eval flags and the global random streams, and never sees the optimizer, so a fit with the
callback ends with the same weights as one without it. Only global rank 0 measures.

Needs ``lightning`` (``pip install 'slt-probe[lightning]'``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import lightning.pytorch as pl
from torch import nn

from slt_probe.integrations.common import finish_probe, probe_options
from slt_probe.probe.notebook import probe_history
from slt_probe.probe.probe import LLCProbe
from slt_probe.probe.sinks import PREFIX, row_scalars


class LLCCallback(pl.Callback):
    """Probe λ̂ on a schedule during ``Trainer.fit`` and log it through the trainer's loggers.

    train_data: the (X, Y) tensors, Dataset or DataLoader λ̂ is measured on (the training data).
    loss_fn: ``loss_fn(module(X), Y)``, the training loss; default: the module's ``loss_fn``
    attribute. submodule: the attribute name of the network to probe inside the LightningModule
    (default: the module itself). schedule / num_points / total_steps: as
    :class:`~slt_probe.probe.LLCProbe`; with a ``"log"``/``"linear"`` schedule and no
    ``total_steps`` the steps are laid out at fit start over ``trainer.estimated_stepping_batches``.
    groups: per-component λ̂, passed to the probe when given. report_dir: at the end of the fit,
    write the probe's HTML report there and log it as an artifact (to ``log_to`` sinks and to
    the trainer's loggers). Other keyword arguments (``log_to``, ``run_dir``, ``hessian``,
    ``num_chains``...) go to :class:`~slt_probe.probe.LLCProbe`, checked now.
    """

    def __init__(
        self,
        train_data,
        loss_fn=None,
        *,
        schedule="log",
        num_points: int = 30,
        total_steps: int | None = None,
        groups=None,
        submodule: str | None = None,
        report_dir: str | Path | None = None,
        **probe_kwargs,
    ):
        super().__init__()
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"LLCCallback.loss_fn must be callable, got {loss_fn!r}")
        if submodule is not None and not isinstance(submodule, str):
            raise TypeError(f"LLCCallback.submodule must be an attribute name, got {submodule!r}")
        self.train_data, self.loss_fn, self.submodule = train_data, loss_fn, submodule
        self.report_dir, self.total_steps = report_dir, total_steps
        self.probe_kwargs = probe_options(
            train_data, schedule, num_points, total_steps, groups, probe_kwargs
        )
        self.probe: LLCProbe | None = None
        self._last_step = -1

    def _network(self, pl_module) -> nn.Module:
        if self.submodule is None:
            return pl_module
        net = getattr(pl_module, self.submodule, None)
        if not isinstance(net, nn.Module):
            raise ValueError(
                f"LLCCallback.submodule: the module has no nn.Module {self.submodule!r}"
            )
        return net

    def _loss_fn(self, pl_module):
        if self.loss_fn is not None:
            return self.loss_fn
        loss_fn = getattr(pl_module, "loss_fn", None)
        if not callable(loss_fn):
            raise ValueError(
                "LLCCallback.loss_fn: none given and the LightningModule has no callable "
                "loss_fn attribute; pass loss_fn=, e.g. nn.MSELoss()"
            )
        return loss_fn

    def on_fit_start(self, trainer, pl_module) -> None:
        if self.probe is not None or not trainer.is_global_zero:
            return
        total = self.total_steps
        if total is None and isinstance(self.probe_kwargs["schedule"], str):
            total = int(trainer.estimated_stepping_batches)
        self.probe = LLCProbe(
            self._loss_fn(pl_module), self.train_data, total_steps=total, **self.probe_kwargs
        )

    def _measure(self, trainer, pl_module) -> None:
        step = int(trainer.global_step)
        if self.probe is None or step == self._last_step:
            return  # another rank, or a batch that only accumulated gradients
        self._last_step = step
        row = self.probe.step(step, self._network(pl_module))
        if row is None:
            return
        scalars = row_scalars(row, PREFIX)
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)

    def on_train_start(self, trainer, pl_module) -> None:
        self._measure(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._measure(trainer, pl_module)

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.probe is None:
            return
        path = finish_probe(
            self.probe, self.report_dir, source="lightning", total_steps=trainer.global_step
        )
        if path is not None:
            for logger in trainer.loggers:
                _log_artifact(logger, path)

    @property
    def history(self):
        """The probe's rows (:attr:`LLCProbe.history`); empty before the fit starts."""
        return self.probe.history if self.probe is not None else probe_history()


def _log_artifact(logger, path: Path) -> None:
    """The report to a Lightning logger: an MLflow run's artifact, else a copy in the logger's
    folder (TensorBoard, CSV)."""
    experiment = getattr(logger, "experiment", None)
    run_id = getattr(logger, "run_id", None)
    if run_id is not None and callable(getattr(experiment, "log_artifact", None)):
        experiment.log_artifact(run_id, str(path))
        return
    log_dir = getattr(logger, "log_dir", None)
    if log_dir:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(log_dir) / path.name)
