"""λ̂ during a Hugging Face ``Trainer`` run: :class:`LLCTrainerCallback`, and the loss adapter
that turns ``Trainer``'s convention, ``loss = model(**batch).loss`` on dict batches, into the
``loss_fn(model(X), Y)`` on tensors that :func:`slt_probe.estimate_llc` samples.

    trainer = Trainer(model=model, args=args, train_dataset=dataset)
    LLCTrainerCallback(dataset, schedule="log", num_points=20).attach(trainer)
    trainer.train()

The adapter (:func:`pack_examples`, :class:`BatchLoss`) packs every key of the examples
(``input_ids``, ``attention_mask``, ``labels``...) side by side into one integer tensor X, and
the wrapped module unpacks a minibatch of X into the dict the model takes, so λ̂ is measured on
exactly the loss the Trainer optimises (or on ``compute_loss(model, batch)`` when given).

After each optimizer step (``on_step_end``, step = ``state.global_step``; step 0 at
``on_train_begin``) the callback probes if the step is scheduled; the row's scalars
(``slt/llc_mean``, ``slt/llc_stderr``, ``slt/r_hat``...) go through ``trainer.log`` when the
callback was attached with :meth:`LLCTrainerCallback.attach`, which puts them in
``state.log_history`` and hands them to every reporting integration (``report_to``:
TensorBoard, MLflow...). A callback passed as ``Trainer(callbacks=[...])`` has no trainer to log
through (callbacks are not given it) and appends its rows to ``state.log_history`` only.
The probe restores the model's train/eval flags and the global random streams (dropout masks,
the sampler's shuffle) and never sees the optimizer: training with the callback gives the same
weights as without. Only the main process measures.

Needs ``transformers`` (``pip install 'slt-probe[transformers]'``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn
from transformers import TrainerCallback

from slt_probe.integrations.common import finish_probe, probe_options
from slt_probe.probe.notebook import probe_history
from slt_probe.probe.probe import LLCProbe
from slt_probe.probe.sinks import PREFIX, row_scalars


def _columns(data, keys) -> dict[str, torch.Tensor]:
    if isinstance(data, Mapping):
        cols = {k: torch.as_tensor(v) for k, v in data.items()}
    else:
        try:
            examples = [data[i] for i in range(len(data))]
        except TypeError as exc:
            raise TypeError(
                "train_data must be a dict of tensors or a sequence/Dataset of example dicts, "
                f"got {type(data).__name__}"
            ) from exc
        if not examples or not all(isinstance(e, Mapping) for e in examples):
            raise ValueError("train_data must hold at least one example, each a dict")
        names = [k for k in (keys or list(examples[0])) if all(k in e for e in examples)]
        cols = {k: torch.stack([torch.as_tensor(e[k]) for e in examples]) for k in names}
    if keys is not None:
        missing = [k for k in keys if k not in cols]
        if missing:
            raise ValueError(f"train_data: keys {missing} missing (it has {sorted(cols)})")
        cols = {k: cols[k] for k in keys}
    return cols


def pack_examples(data, keys=None) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Dict examples as (X, Y, layout): X holds every key's values of an example side by side
    (an integer tensor, n rows), Y zeros (the labels travel inside X), ``layout`` the
    (key, per-example shape, dtype) :class:`BatchLoss` unpacks X with.

    data: a dict of tensors (one row per example), or a sequence or Dataset of example dicts
    (what ``Trainer`` is given as ``train_dataset``). keys: which keys to keep (default all).
    Keys must hold integers (token ids, masks, class labels): float features would lose their
    values in the shared integer tensor."""
    cols = _columns(data, keys)
    if not cols:
        raise ValueError("train_data: no keys to pack")
    lengths = {k: (v.shape[0] if v.dim() else 0) for k, v in cols.items()}
    n = next(iter(lengths.values()))
    if n == 0 or any(m != n for m in lengths.values()):
        raise ValueError(
            f"train_data: every key needs the same, non-zero number of rows: {lengths}"
        )
    for key, value in cols.items():
        if value.is_floating_point() or value.is_complex():
            raise TypeError(
                f"train_data[{key!r}] holds {value.dtype}; only integer keys are packed"
            )
    layout = [(k, tuple(v.shape[1:]), v.dtype) for k, v in cols.items()]
    x = torch.cat([v.reshape(n, -1).long() for v in cols.values()], dim=1)
    return x, torch.zeros(n), layout


def model_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """``Trainer``'s own loss: the model's output ``loss`` for a batch that carries its labels."""
    out = model(**batch)
    loss = out["loss"] if isinstance(out, Mapping) else out[0]
    if loss is None:
        raise ValueError("the model returned no loss: the batch needs its labels (e.g. 'labels')")
    return loss


class BatchLoss(nn.Module):
    """The model as a module of packed X: ``forward(X)`` unpacks the dict batch, computes
    ``compute_loss(model, batch)`` and returns it once per row of X, so that :func:`batch_loss`
    (the mean) recovers it and every check that compares output and target rows holds."""

    def __init__(self, model: nn.Module, layout: list, compute_loss: Callable | None = None):
        super().__init__()
        self.model, self.layout = model, layout
        self.compute_loss = compute_loss or model_loss

    def unpack(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        batch, at = {}, 0
        for key, shape, dtype in self.layout:
            size = int(torch.Size(shape).numel())
            batch[key] = x[:, at : at + size].reshape(x.shape[0], *shape).to(dtype)
            at += size
        return batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.compute_loss(self.model, self.unpack(x)).expand(x.shape[0])


def batch_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The loss :class:`BatchLoss` computed (``y`` is the zeros :func:`pack_examples` made)."""
    return out.mean()


class LLCTrainerCallback(TrainerCallback):
    """Probe λ̂ on a schedule during ``Trainer.train`` (see module docstring).

    train_data: the examples λ̂ is measured on (as :func:`pack_examples` takes them; usually the
    Trainer's ``train_dataset``). compute_loss: ``(model, batch) -> loss``, default the model's
    own loss (:func:`model_loss`). keys: the example keys to pass the model (default all).
    schedule / num_points / total_steps: as :class:`~slt_probe.probe.LLCProbe`; a ``"log"`` or
    ``"linear"`` schedule without ``total_steps`` is laid out over ``state.max_steps``.
    groups: per-component λ̂, passed to the probe when given. report_dir: write the probe's HTML
    report there at the end and log it to the ``log_to`` sinks. Other keyword arguments go to
    :class:`~slt_probe.probe.LLCProbe`, checked now.
    """

    def __init__(
        self,
        train_data,
        compute_loss: Callable | None = None,
        *,
        keys=None,
        schedule="log",
        num_points: int = 30,
        total_steps: int | None = None,
        groups=None,
        report_dir: str | Path | None = None,
        **probe_kwargs,
    ):
        if compute_loss is not None and not callable(compute_loss):
            raise TypeError(
                f"LLCTrainerCallback.compute_loss must be callable, got {compute_loss!r}"
            )
        x, y, self.layout = pack_examples(train_data, keys)
        self.data, self.compute_loss = (x, y), compute_loss
        self.report_dir, self.total_steps = report_dir, total_steps
        self.probe_kwargs = probe_options(
            self.data, schedule, num_points, total_steps, groups, probe_kwargs
        )
        self.probe: LLCProbe | None = None
        self.trainer = None

    def attach(self, trainer):
        """Add the callback to ``trainer`` and log through it (``trainer.log``: the log history
        and every reporting integration). Returns the trainer."""
        trainer.add_callback(self)
        self.trainer = trainer
        return trainer

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero:
            return
        if self.probe is None:
            total = self.total_steps
            if total is None and isinstance(self.probe_kwargs["schedule"], str):
                total = int(state.max_steps)
            self.probe = LLCProbe(batch_loss, self.data, total_steps=total, **self.probe_kwargs)
        self._measure(state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self._measure(state, model)

    def _measure(self, state, model) -> None:
        if self.probe is None or model is None:
            return
        step = int(state.global_step)
        row = self.probe.step(step, BatchLoss(model, self.layout, self.compute_loss))
        if row is None:
            return
        scalars = row_scalars(row, PREFIX)
        if self.trainer is not None and self.trainer.state is state:
            self.trainer.log(dict(scalars))
        else:
            state.log_history.append({**scalars, "step": step})

    def on_train_end(self, args, state, control, **kwargs):
        if self.probe is not None:
            finish_probe(
                self.probe, self.report_dir, source="transformers", total_steps=state.global_step
            )

    @property
    def history(self):
        """The probe's rows (:attr:`LLCProbe.history`); empty before training starts."""
        return self.probe.history if self.probe is not None else probe_history()
