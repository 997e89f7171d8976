"""The spec's training without the probe (slt_probe.runs.training) and `slt-probe bench train`."""

from __future__ import annotations

import json

import pytest
import torch
from test_runs import MODELS, TINY_MNIST

from slt_probe.bench import training as training_bench
from slt_probe.cli import main as cli_main
from slt_probe.runs import load_spec, run_spec
from slt_probe.runs.rundir import RunDir
from slt_probe.runs.training import Training, make_optimizer

# the test_runs spec, trained for 30 steps without the probe
TINY = {**TINY_MNIST, "train.steps": 30, "train.eval_every": 30, "probe.enabled": False}


def tiny_config(**more):
    return load_spec(MODELS / "omnigrok_mnist.toml", overrides={**TINY, **more})


def test_training_alone_reaches_the_runs_weights(tmp_path):
    """A run's model after its steps is Training(config).train(steps): one set-up, one loop."""
    alone = Training(tiny_config()).train(30)
    run_spec(
        MODELS / "omnigrok_mnist.toml",
        overrides=TINY,
        out_dir=tmp_path,
        name="run",
        progress=False,
        report=False,
    )
    saved = RunDir(tmp_path / "run").load_latest_checkpoint()
    assert saved["step"] == 30
    for name, p in alone.model.state_dict().items():
        assert torch.equal(p, saved["model"][name]), name
    final = RunDir(tmp_path / "run").metrics_rows()[-1]
    assert final["train_loss"] == pytest.approx(alone.evaluate()["train_loss"], rel=1e-6)


def test_fused_and_default_optimizers_take_the_same_steps():
    config = load_spec(MODELS / "dln.toml")  # Adam on synthetic data: no MNIST to load
    fused, plain = Training(config), Training(config, fused=False)
    assert fused.optimizer.defaults["fused"] is True
    assert not plain.optimizer.defaults["fused"]
    fused.train(10), plain.train(10)
    for a, b in zip(fused.model.parameters(), plain.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_make_optimizer_falls_back_where_torch_has_no_fused_kernel(monkeypatch):
    made = []

    class NoFused(torch.optim.AdamW):
        def __init__(self, params, **kw):
            if kw.get("fused"):
                raise RuntimeError("`fused=True` requires ... supported devices")
            made.append(kw)
            super().__init__(params, **kw)

    monkeypatch.setattr(torch.optim, "AdamW", NoFused)
    train = tiny_config()["train"]
    opt = make_optimizer(torch.nn.Linear(2, 2), train)
    assert isinstance(opt, NoFused) and made and "fused" not in made[0]


def test_bench_train_compares_both_variants_on_the_same_training(tmp_path):
    with pytest.raises(ValueError, match="steps and repeats must be >= 1"):
        training_bench.compare(MODELS / "dln.toml", steps=0)
    row = training_bench.compare(MODELS / "dln.toml", steps=5, repeats=2)
    assert [len(v) for v in row["rates"].values()] == [2, 2]
    assert row["speedup"] == pytest.approx(row["median"]["fused"] / row["median"]["default"])
    assert row["final_loss"]["fused"] == pytest.approx(row["final_loss"]["default"], rel=1e-4)
    out, page = tmp_path / "train.json", tmp_path / "train.md"
    spec = str(MODELS / "dln.toml")
    argv = ["bench", "train", spec, "--steps", "3", "--repeats", "1"]
    assert cli_main([*argv, "--json", str(out), "--markdown", str(page)]) == 0
    payload = json.loads(out.read_text())
    assert payload["rows"][0]["steps"] == 3 and payload["rows"][0]["spec"] == spec
    text = page.read_text()
    assert "| fused (steps/s) | default (steps/s) | fused / default |" in text
    assert "slt-probe bench train" in text
