"""Where a probe's rows go besides its history: TensorBoard and MLflow (``LLCProbe(log_to=...)``).

A sink has three methods: ``log_row(step, scalars)`` (called after every probe point with
:func:`row_scalars` of the row), ``log_artifact(path)`` (a file to keep with the run, e.g. the
HTML report, which the layer that writes reports passes in: :mod:`slt_probe.integrations`) and
``close()``. Any object with those methods can be given to ``log_to``.

TensorBoard and MLflow are optional: each is imported when its sink is made, so that
``import slt_probe`` needs neither (``pip install 'slt-probe[tracking]'``).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

#: Row entries that are bookkeeping, not measurements, and so are not logged as scalars.
_NOT_LOGGED = {"step", "num_chains", "num_draws", "n_params", "two_llc", "compute_dtype"}

#: Tag prefix of every logged scalar: ``slt/llc_mean``, ``slt/llc_stderr``, ``slt/r_hat``...
PREFIX = "slt/"


def _number(value) -> float | None:
    if isinstance(value, np.generic) and np.ndim(value) == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def row_scalars(row: Mapping, prefix: str = PREFIX) -> dict[str, float]:
    """The finite numbers of a probe row, named ``prefix + column``; a column holding a table of
    numbers (per-component λ̂, for instance) gives one scalar per entry, ``prefix +
    column/name``. Lists (per-chain values, loss traces), strings and non-finite values (an
    R-hat that one chain cannot give) are left out: a logger's scalar plot cannot show them."""
    out = {}
    for key, value in row.items():
        if key in _NOT_LOGGED:
            continue
        if isinstance(value, Mapping):
            for sub, v in value.items():
                x = _number(v)
                if x is not None:
                    out[f"{prefix}{key}/{sub}"] = x
            continue
        x = _number(value)
        if x is not None:
            out[prefix + key] = x
    return out


class TensorBoardSink:
    """Scalars into TensorBoard event files under ``log_dir`` (``torch.utils.tensorboard``;
    default: its own ``runs/<date>_<host>``); an artifact is copied into ``log_dir`` and its
    name written as text, TensorBoard having no artifact store."""

    def __init__(self, log_dir: str | Path | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # the tensorboard package is missing
            raise ImportError(
                "log_to='tensorboard' needs the tensorboard package: "
                "pip install 'slt-probe[tracking]'"
            ) from exc
        self.writer = SummaryWriter(log_dir=None if log_dir is None else str(log_dir))
        self.log_dir = Path(self.writer.log_dir)

    def log_row(self, step: int, scalars: Mapping[str, float]) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, global_step=int(step))
        self.writer.flush()

    def log_artifact(self, path: str | Path) -> None:
        path = Path(path)
        dest = self.log_dir / path.name
        if path.resolve() != dest.resolve():
            shutil.copyfile(path, dest)
        self.writer.add_text("slt/artifact", path.name)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def default_mlflow_uri(root: str | Path = "mlruns") -> str:
    """``$MLFLOW_TRACKING_URI`` when set, else a SQLite store in ``root/mlflow.db``. MLflow 3
    refuses its plain-file store unless ``MLFLOW_ALLOW_FILE_STORE`` is set; SQLite keeps the
    whole record in one local folder all the same."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    Path(root).mkdir(parents=True, exist_ok=True)
    return "sqlite:///" + str(Path(root).resolve() / "mlflow.db")


class MLflowSink:
    """Scalars as MLflow metrics (step = training step) of one run, artifacts as its artifacts.

    ``run_id``: log into that run (and leave it open); otherwise a run named ``run_name`` is
    made in ``experiment`` (created if missing) and ended by :meth:`close`. ``tracking_uri``:
    default :func:`default_mlflow_uri` (a local ``mlruns/`` folder). Uses an explicit
    ``MlflowClient``, never the process-wide active run, so the caller's own MLflow use is
    unaffected."""

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str = "slt_probe",
        run_name: str | None = None,
        run_id: str | None = None,
    ):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise ImportError(
                "log_to='mlflow' needs mlflow (or mlflow-skinny): pip install 'slt-probe[tracking]'"
            ) from exc
        if not isinstance(experiment, str) or not experiment:
            raise ValueError(
                f"MLflowSink.experiment must be a non-empty string, got {experiment!r}"
            )
        self.tracking_uri = tracking_uri or default_mlflow_uri()
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        self._owns_run = run_id is None
        if run_id is None:
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                exp_id = self.client.create_experiment(experiment, **self._artifact_root())
            else:
                exp_id = exp.experiment_id
            run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
        self.run_id = run_id

    def _artifact_root(self) -> dict:
        # a SQLite store's default artifact root is ./mlartifacts; keep artifacts beside the db
        if self.tracking_uri.startswith("sqlite:///"):
            root = Path(self.tracking_uri[len("sqlite:///") :]).parent / "artifacts"
            return {"artifact_location": root.resolve().as_uri()}
        return {}

    def log_row(self, step: int, scalars: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, int(step)) for k, v in scalars.items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def log_artifact(self, path: str | Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def close(self) -> None:
        if self._owns_run:
            self.client.set_terminated(self.run_id)
            self._owns_run = False


def check_log_to(log_to) -> list:
    """``log_to`` as a list, each item checked: ``"tensorboard"``, ``"mlflow"`` or an object
    with the three sink methods. Makes no sink (nothing is opened or created)."""
    if log_to is None:
        return []
    single = not isinstance(log_to, (list, tuple))
    items = [log_to] if single else list(log_to)
    for i, item in enumerate(items):
        if isinstance(item, str) and item in ("tensorboard", "mlflow"):
            continue
        if not all(callable(getattr(item, m, None)) for m in ("log_row", "log_artifact", "close")):
            field = "log_to" if single else f"log_to[{i}]"
            raise ValueError(
                f"{field} must be 'tensorboard', 'mlflow' or an object with log_row, "
                f"log_artifact and close methods, got {item!r}"
            )
    return items


def make_sinks(log_to, run_dir: Path | None) -> list:
    """``log_to`` as a list of sinks: ``None``, a sink, ``"tensorboard"`` (event files in
    ``run_dir/tensorboard`` when the probe has a run directory), ``"mlflow"`` (a local
    ``mlruns/``), or a list of these."""
    sinks = []
    for item in check_log_to(log_to):
        if item == "tensorboard":
            sinks.append(TensorBoardSink(run_dir / "tensorboard" if run_dir is not None else None))
        elif item == "mlflow":
            sinks.append(MLflowSink())
        else:
            sinks.append(item)
    return sinks
