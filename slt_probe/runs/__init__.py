"""Training runs: specs (TOML), datasets, the training loop with the λ̂ probe, run directories.

from slt_probe.runs import run_spec, load_spec
summary = run_spec("models/omnigrok_mnist.toml", overrides={"train.steps": 2000})
"""

from slt_probe.runs.arch import ArchAllowList, build_model, resolve_arch
from slt_probe.runs.data import RunData, load_data
from slt_probe.runs.rundir import RunDir, RunDirError
from slt_probe.runs.runner import run_spec
from slt_probe.runs.spec import SpecError, load_spec
from slt_probe.runs.train import Trainer

__all__ = [
    "ArchAllowList",
    "RunData",
    "RunDir",
    "RunDirError",
    "SpecError",
    "Trainer",
    "build_model",
    "load_data",
    "load_spec",
    "resolve_arch",
    "run_spec",
]
