"""Training runs: specs (TOML), datasets, the training loop with the λ̂ probe, run directories.

from slt_probe.runs import run_spec, load_spec
summary = run_spec("models/omnigrok_mnist.toml", overrides={"train.steps": 2000})
"""

from slt_probe.runs.data import RunData, load_data
from slt_probe.runs.rundir import RunDir
from slt_probe.runs.spec import SpecError, build_model, load_spec
from slt_probe.runs.train import Trainer, run_spec

__all__ = [
    "RunData",
    "RunDir",
    "SpecError",
    "Trainer",
    "build_model",
    "load_data",
    "load_spec",
    "run_spec",
]
