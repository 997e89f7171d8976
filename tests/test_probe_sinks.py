"""LLCProbe(log_to=...): the rows' scalars reach TensorBoard event files and an MLflow run (read
back through their own readers), the report lands with them as an artifact; a probe point leaves
the global random streams and every submodule's mode as it found them; the notebook views."""

import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from slt_probe import LLCProbe, estimate_llc
from slt_probe.integrations import finish_probe
from slt_probe.probe.sinks import row_scalars

FAST = {"num_chains": 2, "num_draws": 50, "num_burnin": 50, "hessian": False}


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=g)
    return x, x @ torch.randn(4, 2, generator=g) + 0.1 * torch.randn(256, 2, generator=g)


def _train(probe, steps=60):
    torch.manual_seed(0)
    x, y = _data()
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(steps + 1):
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if probe is not None:
            probe.step(step, model, train_loss=loss.item())
    return model


def test_plain_probe_logs_to_tensorboard_and_mlflow(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from integration_checks import read_mlflow_metric, read_tensorboard_scalars
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_dir = tmp_path / "run"
    probe = LLCProbe(
        nn.MSELoss(), _data(), schedule=[0, 30, 60], run_dir=run_dir,
        log_to=["tensorboard", "mlflow"], **FAST,
    )  # fmt: skip
    _train(probe)
    tb_sink, ml_sink = probe.sinks
    report = finish_probe(probe, tmp_path / "report", name="plain")
    hist = probe.history

    tb = read_tensorboard_scalars(run_dir / "tensorboard")
    assert [s for s, _ in tb["slt/llc_mean"]] == [0, 30, 60]
    assert [v for _, v in tb["slt/llc_mean"]] == pytest.approx(list(hist["llc_mean"]), rel=1e-6)
    assert [v for _, v in tb["slt/train_loss"]] == pytest.approx(list(hist["train_loss"]))
    assert (run_dir / "tensorboard" / "index.html").read_text() == report.read_text()

    uri = ml_sink.tracking_uri
    assert uri == "sqlite:///" + str((tmp_path / "mlruns" / "mlflow.db").resolve())
    mlf = read_mlflow_metric(uri, ml_sink.run_id, "slt/llc_stderr")
    assert [s for s, _ in mlf] == [0, 30, 60]
    assert [v for _, v in mlf] == pytest.approx(list(hist["llc_stderr"]), rel=1e-6)
    client = MlflowClient(tracking_uri=uri)
    assert [a.path for a in client.list_artifacts(ml_sink.run_id)] == ["index.html"]
    assert client.get_run(ml_sink.run_id).info.status == "FINISHED"
    assert probe.sinks == [] and tb_sink is not None


def test_row_scalars_keep_finite_numbers_and_flatten_tables():
    row = {
        "step": 3, "llc_mean": 1.5, "r_hat": float("nan"), "warnings": ["x"],
        "llc_per_chain": [1.0, 2.0], "groups": {"layer0": 0.5, "layer1": np.float32(0.25)},
        "flag": True, "ess": np.float64(40.0),
    }  # fmt: skip
    assert row_scalars(row) == {
        "slt/llc_mean": 1.5, "slt/groups/layer0": 0.5, "slt/groups/layer1": 0.25, "slt/ess": 40.0,
    }  # fmt: skip


def test_bad_log_to_is_refused_naming_the_field():
    with pytest.raises(ValueError, match=r"log_to\[1\]"):
        LLCProbe(nn.MSELoss(), _data(), schedule=[0], log_to=["tensorboard", "wandb"])
    with pytest.raises(ValueError, match="log_to must be"):
        LLCProbe(nn.MSELoss(), _data(), schedule=[0], log_to=3)


def test_probe_point_restores_random_streams_and_module_modes():
    x, y = _data()
    drew = []

    def noisy_loss(out, target):  # draws from every global stream, as a careless loss might
        np.random.rand(), random.random()
        try:
            drew.append(torch.rand(1))
        except RuntimeError:  # torch refuses random draws under vmap; outside it they happen
            pass
        return nn.functional.mse_loss(out, target)

    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    model[1].eval()  # a frozen part: must stay in eval mode, the rest in train mode
    probe = LLCProbe(noisy_loss, (x, y), schedule=[0], **{**FAST, "hessian": True})
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    want = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    assert probe.step(0, model) is not None and drew  # the loss did draw
    got = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(want[0], got[0]) and np.array_equal(want[1], got[1])
    assert want[2] == got[2]
    assert model.training and model[0].training and not model[1].training


def test_training_with_the_probe_gives_the_weights_of_training_without():
    plain = _train(None)
    probed = _train(LLCProbe(nn.MSELoss(), _data(), schedule=[0, 30, 60], **FAST))
    for a, b in zip(plain.parameters(), probed.parameters()):
        assert torch.equal(a, b)


def test_notebook_views_escape_and_show_the_numbers():
    x, y = _data()
    probe = LLCProbe(nn.MSELoss(), (x, y), schedule=[0, 10], metrics=["<i>acc"], **FAST)
    model = _train(None, steps=5)
    for step in (0, 10):
        probe.step(step, model, **{"<i>acc": 0.5})
    probe.rows[0]["warnings"] = ["<script>alert(1)</script>"]
    page = probe.history._repr_html_()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "&lt;i&gt;acc" in page and "<svg" in page
    assert f"{probe.rows[1]['llc_mean']:.4g}" in page
    assert type(probe.history[["step"]]).__name__ == "DataFrame"
    fig = probe.plot()
    assert fig.axes[0].lines[0].get_xdata().tolist() == [0, 10]

    res = estimate_llc(
        model, nn.MSELoss(), (x, y), **{k: v for k, v in FAST.items() if k != "hessian"}
    )
    res.diagnostics.warnings.append("<b>bold</b> & co")
    html = res._repr_html_()
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in html and "<b>bold</b>" not in html
    assert f"{res.llc_mean:.4g}" in html and html.count("<svg") == 1
    assert math.isfinite(res.llc_mean)
