"""What a probe point must leave as it found it: the random streams of the training run.

A probe point samples with its own seeded generators, but anything it calls could draw from a
global stream (a library's dropout, an ``nn.init`` call, ``random.shuffle``), and the training
run would then differ from the same run without the probe: the next minibatch order, the next
dropout mask. :func:`random_state` snapshots every global stream a torch training loop draws
from (torch's CPU generator, every initialised CUDA device's, NumPy's and Python's) and
:func:`restore_random_state` puts them back, so that training with the probe gives bit-identical
weights to training without it. :func:`module_modes` does the same for the train/eval mode of every
submodule (a model with a frozen, eval-mode part stays so: ``model.train(True)`` would not
restore it). The optimizer is never touched at all.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn


def random_state() -> dict:
    """The global random streams, as :func:`restore_random_state` takes them."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    # only devices already in use: querying an uninitialised CUDA would initialise it
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_random_state(state: dict) -> None:
    """Put back the streams :func:`random_state` saved."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def module_modes(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    """Every submodule with its ``training`` flag, as :func:`restore_module_modes` takes them."""
    return [(m, m.training) for m in model.modules()]


def restore_module_modes(modes: list[tuple[nn.Module, bool]]) -> None:
    """Put back the flags :func:`module_modes` saved, module by module."""
    for module, training in modes:
        module.training = training
