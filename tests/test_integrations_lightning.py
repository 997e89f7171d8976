"""LLCCallback drives a real Lightning fit: λ̂ rows at the scheduled steps, the scalars in the
TensorBoard event files and in MLflow, the report as an artifact, and the same weights as the
same fit without the callback."""

import math

import pytest
import torch
from torch import nn

pl = pytest.importorskip("lightning.pytorch")
pytest.importorskip("tensorboard")

from integration_checks import read_mlflow_metric, read_tensorboard_scalars  # noqa: E402

from slt_probe.integrations.lightning import LLCCallback  # noqa: E402

STEPS = 300
SCHEDULE = [0, 100, 300]
FAST = {"num_chains": 2, "num_draws": 50, "num_burnin": 50, "hessian": False}


class MLP(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(0.1), nn.Linear(16, 2))
        self.loss_fn = nn.MSELoss()

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.loss_fn(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=g)
    return x, x @ torch.randn(4, 2, generator=g) + 0.1 * torch.randn(256, 2, generator=g)


def _fit(tmp_path, name, callbacks, loggers):
    x, y = _data()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True
    )
    pl.seed_everything(0, verbose=False)
    module = MLP()
    trainer = pl.Trainer(
        max_steps=STEPS,
        accelerator="cpu",
        devices=1,
        logger=loggers,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=50,
        default_root_dir=tmp_path / name,
    )
    trainer.fit(module, loader)
    return module, trainer


def test_lightning_fit_with_callback_logs_llc_and_leaves_no_trace(tmp_path):
    pytest.importorskip("mlflow")
    from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger
    from mlflow.tracking import MlflowClient

    plain, _ = _fit(tmp_path, "plain", [], False)
    cb = LLCCallback(_data(), schedule=SCHEDULE, report_dir=tmp_path / "report", **FAST)
    tb = TensorBoardLogger(tmp_path / "tb", name="", version="v0")
    uri = "sqlite:///" + str(tmp_path / "mlflow.db")
    mlf = MLFlowLogger(
        experiment_name="lightning",
        tracking_uri=uri,
        artifact_location=(tmp_path / "artifacts").as_uri(),
    )
    probed, trainer = _fit(tmp_path, "probed", [cb], [tb, mlf])

    # bit-identical weights: the probe left no trace on the run (RNG, dropout, mode, optimizer)
    for (name, a), (_, b) in zip(plain.named_parameters(), probed.named_parameters()):
        assert torch.equal(a, b), name
    assert probed.training and probed.net[2].training

    hist = cb.history
    assert list(hist["step"]) == SCHEDULE
    assert all(math.isfinite(v) for v in hist["llc_mean"])
    assert all(math.isfinite(v) and v > 0 for v in hist["llc_stderr"])
    # the loss λ̂ is measured on falls with training
    assert hist["init_loss"].iloc[-1] < hist["init_loss"].iloc[0]

    scalars = read_tensorboard_scalars(tb.log_dir)
    assert [s for s, _ in scalars["slt/llc_mean"]] == SCHEDULE
    for (_, logged), want in zip(scalars["slt/llc_mean"], hist["llc_mean"]):
        assert logged == pytest.approx(want, rel=1e-6)
    assert "slt/r_hat" in scalars and "train_loss" in scalars
    # the report, written at the end of the fit and copied beside the event files
    assert (tmp_path / "report" / "index.html").is_file()
    assert (tmp_path / "tb" / "v0" / "index.html").is_file()
    # the same scalars in the MLflow run, and the report as its artifact
    logged = read_mlflow_metric(uri, mlf.run_id, "slt/llc_stderr")
    assert [s for s, _ in logged] == SCHEDULE
    assert [v for _, v in logged] == pytest.approx(list(hist["llc_stderr"]), rel=1e-6)
    artifacts = MlflowClient(tracking_uri=uri).list_artifacts(mlf.run_id)
    assert "index.html" in [a.path for a in artifacts]


def test_lightning_callback_refuses_bad_options_at_construction():
    with pytest.raises(ValueError, match="num_chains"):
        LLCCallback(_data(), schedule=SCHEDULE, num_chains=0)
    with pytest.raises(TypeError, match="loss_fn"):
        LLCCallback(_data(), loss_fn="mse")
    with pytest.raises(ValueError, match="log_to"):
        LLCCallback(_data(), schedule=SCHEDULE, log_to="wandb")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_lightning_callback_samples_where_the_model_lives(tmp_path):
    x, y = _data()
    cb = LLCCallback((x, y), schedule=[0, 50], **FAST)
    module = MLP()
    trainer = pl.Trainer(
        max_steps=50, accelerator="gpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    trainer.fit(module, loader)
    assert list(cb.history["step"]) == [0, 50]
    assert all(math.isfinite(v) for v in cb.history["llc_mean"])
    assert next(module.parameters()).is_cuda
