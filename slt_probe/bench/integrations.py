"""What the Lightning callback costs beyond the probe itself, side by side in one process.

Four ways to train the same MLP for the same steps on the same minibatches, run in turns
(``repeats`` rounds, the median kept, so that machine noise falls on all of them alike):

- ``loop``: a plain PyTorch loop; ``loop_probe``: the same loop calling ``probe.step``;
- ``lightning``: ``Trainer.fit`` of the same network (a LightningModule holding it as
  ``net``); ``lightning_callback``: with :class:`~slt_probe.integrations.lightning.LLCCallback`
  on the same schedule and options, probing that network (``submodule="net"``), as the loop does;
- ``lightning_callback_module``: the callback probing the whole LightningModule instead. Its
  probe points cost more than the loop's because the estimator's hand-batched path for plain
  stacks of layers does not see through the wrapper (it samples the module generically); the
  row shows by how much.

A probe's cost in a loop is the wall time it adds, ``loop_probe − loop``; the callback's is
``lightning_callback − lightning``. Each is compared with the probe's own measured time
(``probe_time_s``, the seconds inside ``probe.step``): a ratio of 1 means the integration adds
nothing of its own (no copies, no extra passes, no logging cost worth counting).
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from slt_probe.probe.probe import LLCProbe

#: The default benchmark: enough training that the fixed set-up of a fit is small beside it.
STEPS, POINTS, REPEATS = 400, 5, 3
PROBED = ("loop_probe", "lightning_callback", "lightning_callback_module")


def _workload(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1024, 16, generator=g)
    y = torch.tanh(x @ torch.randn(16, 4, generator=g)) + 0.1 * torch.randn(1024, 4, generator=g)
    return x, y


def _network(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 4)
    )


def _loader(data, seed: int = 0):
    ds = torch.utils.data.TensorDataset(*data)
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, generator=g)


def _plain(data, steps: int, probe: LLCProbe | None) -> float:
    model = _network()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader, step = _loader(data), 0
    t0 = time.perf_counter()
    if probe is not None:
        probe.step(0, model)
    while step < steps:
        for x, y in loader:
            loss = nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if probe is not None:
                probe.step(step, model)
            if step >= steps:
                break
    return time.perf_counter() - t0


def _lightning(data, steps: int, callback) -> float:
    import lightning.pytorch as pl

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _network()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            return nn.functional.mse_loss(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    trainer = pl.Trainer(
        max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
        callbacks=[callback] if callback is not None else [],
    )  # fmt: skip
    module = Module()
    t0 = time.perf_counter()
    trainer.fit(module, _loader(data))
    return time.perf_counter() - t0


def compare(
    steps: int = STEPS, points: int = POINTS, repeats: int = REPEATS, **probe_kwargs
) -> dict:
    """Median wall seconds of the four variants and the probe's own seconds, with the ratios
    (module docstring). ``probe_kwargs`` go to the probe and the callback alike."""
    from slt_probe.integrations.lightning import LLCCallback

    data = _workload()
    schedule = sorted({round(i * steps / (points - 1)) for i in range(points)})
    options = {"schedule": schedule, "lock": False, **probe_kwargs}
    walls = {k: [] for k in (*PROBED, "loop", "lightning")}
    probe_s = {k: [] for k in PROBED}
    for _ in range(repeats):
        walls["loop"].append(_plain(data, steps, None))
        probe = LLCProbe(nn.MSELoss(), data, **options)
        walls["loop_probe"].append(_plain(data, steps, probe))
        probe_s["loop_probe"].append(probe.probe_time_s)
        walls["lightning"].append(_lightning(data, steps, None))
        for key, sub in (("lightning_callback", "net"), ("lightning_callback_module", None)):
            callback = LLCCallback(data, nn.MSELoss(), submodule=sub, **options)
            walls[key].append(_lightning(data, steps, callback))
            probe_s[key].append(callback.probe.probe_time_s)
    wall = {k: statistics.median(v) for k, v in walls.items()}
    own = {k: statistics.median(v) for k, v in probe_s.items()}
    loop_cost = wall["loop_probe"] - wall["loop"]
    callback_cost = wall["lightning_callback"] - wall["lightning"]
    module_cost = wall["lightning_callback_module"] - wall["lightning"]
    return {
        "steps": steps,
        "schedule": schedule,
        "repeats": repeats,
        "probe_options": {k: v for k, v in probe_kwargs.items()},
        "wall_s": wall,
        "probe_time_s": own,
        "loop_probe_cost_s": loop_cost,
        "callback_cost_s": callback_cost,
        "loop_cost_over_probe_time": loop_cost / own["loop_probe"],
        "callback_cost_over_probe_time": callback_cost / own["lightning_callback"],
        "callback_cost_over_loop_cost": callback_cost / loop_cost,
        "module_callback_cost_over_probe_time": module_cost / own["lightning_callback_module"],
        "module_callback_cost_over_loop_cost": module_cost / loop_cost,
    }
