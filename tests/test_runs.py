"""The training loop and its run directory (contract in the module docstring of rundir.py).

The λ̂ probe is replaced by a fake that follows the LLCProbe contract (due/step writing llc.jsonl)
so these tests check the loop, not the estimator."""

import json
import math
from pathlib import Path

import pytest
import torch

from slt_probe.cli import main as cli_main
from slt_probe.files import append_jsonl
from slt_probe.runs import run_spec
from slt_probe.runs.rundir import RunDir
from slt_probe.runs.spec import SpecError
from slt_probe.runs.train import Trainer
from slt_probe.runs.training import Batches

MODELS = Path(__file__).resolve().parents[1] / "models"

TINY_MNIST = {
    "data.train_size": 100,
    "data.test_size": 200,
    "model.kwargs.widths": [784, 16, 10],
    "train.steps": 60,
    "train.eval_every": 20,
    "train.batch_size": 50,
    "probe.num_points": 4,
    "probe.start": 0,
}


class FakeProbe:
    """LLCProbe stand-in: due at a fixed set of steps, writes a contract-shaped row."""

    def __init__(self, run_dir, total_steps, points=(0, 5, 30)):
        self.run_dir, self.points = Path(run_dir), set(points) | {total_steps}
        self.calls = []

    def due(self, step):
        return step in self.points

    def step(self, step, model, **metrics):
        if not self.due(step):
            return None
        self.calls.append((step, metrics))
        norm = math.sqrt(sum(float((p.detach() ** 2).sum()) for p in model.parameters()))
        row = {
            "step": step,
            "llc_mean": 10.0 + step,
            "llc_std": 1.0,
            "weight_norm": norm,
            **metrics,
        }
        append_jsonl(self.run_dir / "llc.jsonl", row)
        return row


@pytest.fixture
def fake_probe(monkeypatch):
    made = []

    def make(self):
        made.append(FakeProbe(self.rd.path, self.total))
        return made[-1]

    monkeypatch.setattr(Trainer, "_make_probe", make)
    return made


def test_batches_are_a_function_of_the_step():
    b = Batches(10, 3, seed=0)
    epoch0 = torch.cat([b.indices(t) for t in range(3)])
    assert len(set(epoch0.tolist())) == 9  # one epoch: disjoint batches, last example dropped
    again = Batches(10, 3, seed=0)
    assert torch.equal(again.indices(4), b.indices(4))  # random access = sequential
    assert not torch.equal(b.indices(3), b.indices(0))
    assert Batches(10, 0, seed=0).indices(5) is None  # full batch


def test_tiny_run_writes_the_run_directory(tmp_path, fake_probe):
    evals = []
    summary = run_spec(
        MODELS / "omnigrok_mnist.toml",
        overrides=TINY_MNIST,
        out_dir=tmp_path,
        name="tiny",
        progress=False,
        report=False,
        on_eval=lambda step, m: evals.append((step, m["test_acc"])),
    )
    rd = RunDir(tmp_path / "tiny")
    config = rd.read_config()
    assert config["name"] == "tiny" and config["seed"] == 0
    assert config["train"]["steps"] == 60 and config["model"]["kwargs"]["widths"] == [784, 16, 10]
    assert set(config["versions"]) == {"python", "torch", "slt_probe", "float32_matmul"}
    assert config["versions"]["float32_matmul"] in ("oneDNN", "torch BLAS")
    assert config["spec_path"].endswith("omnigrok_mnist.toml")

    rows = rd.metrics_rows()
    # eval every 20 steps, plus the probe points 5 and 30, plus step 0
    assert [r["step"] for r in rows] == [0, 5, 20, 30, 40, 60]
    keys = {"step", "train_loss", "train_acc", "test_loss", "test_acc", "weight_norm", "time_s"}
    assert all(set(r) == keys for r in rows)
    # α = 8 inflates the initial weights; the norm matches the model actually saved
    final = torch.load(rd.checkpoint_path(60), weights_only=True)
    norm = math.sqrt(sum(float((v.double() ** 2).sum()) for v in final["model"].values()))
    assert rows[-1]["weight_norm"] == pytest.approx(norm, rel=1e-9)
    assert final["step"] == 60 and "optimizer" in final and "rng" in final
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert [s for s, _ in evals] == [0, 5, 20, 30, 40, 60]

    llc = rd.llc_rows()
    assert [r["step"] for r in llc] == [0, 5, 30, 60]
    # the probe got the evaluation of its own step
    by_step = {r["step"]: r for r in rows}
    for step, metrics in fake_probe[0].calls:
        assert metrics["test_acc"] == by_step[step]["test_acc"]
        assert set(metrics) == {"test_acc", "train_acc", "train_loss", "test_loss"}

    ckpts = [s for s, _ in rd.list_checkpoints()]
    assert ckpts == [0, 5, 30, 60]  # step 0, probe points, the end

    on_disk = rd.read_summary()
    assert on_disk == json.loads(json.dumps(summary))
    assert on_disk["status"] == "complete" and on_disk["steps_done"] == 60
    assert (
        on_disk["final"]["llc_mean"] == 70.0
        and on_disk["final"]["test_acc"] == rows[-1]["test_acc"]
    )
    assert on_disk["n_params"] == 784 * 16 + 16 + 16 * 10 + 10
    assert 0 <= on_disk["probe_overhead_fraction"] < 1
    assert set(on_disk["transitions"]) >= {"test_acc", "llc", "hessian_eff_dim", "alignment"}


def test_on_eval_exception_leaves_a_partial_run(tmp_path, fake_probe):
    class Stop(Exception):
        pass

    def stop(step, metrics):
        if step == 40:
            raise Stop

    with pytest.raises(Stop):
        run_spec(
            MODELS / "omnigrok_mnist.toml",
            overrides=TINY_MNIST,
            out_dir=tmp_path,
            name="pruned",
            progress=False,
            report=False,
            on_eval=stop,
        )
    rd = RunDir(tmp_path / "pruned")
    summary = rd.read_summary()
    assert summary["status"] == "partial" and summary["steps_done"] == 40
    assert rd.metrics_rows()[-1]["step"] == 40
    # the same directory cannot be silently reused, but it can be resumed
    with pytest.raises(FileExistsError, match="--resume"):
        run_spec(
            MODELS / "omnigrok_mnist.toml", overrides=TINY_MNIST, out_dir=tmp_path, name="pruned"
        )
    with pytest.raises(SpecError, match="train.lr"):
        run_spec(
            MODELS / "omnigrok_mnist.toml",
            overrides={**TINY_MNIST, "train.lr": 0.1},
            out_dir=tmp_path,
            name="pruned",
            resume=True,
        )
    summary = run_spec(
        MODELS / "omnigrok_mnist.toml",
        overrides=TINY_MNIST,
        out_dir=tmp_path,
        name="pruned",
        resume=True,
        progress=False,
        report=False,
    )
    assert summary["status"] == "complete"
    steps = [r["step"] for r in rd.metrics_rows()]
    assert steps == [0, 5, 20, 30, 40, 60]  # rows after the step-30 checkpoint were redone once


def test_resume_reproduces_an_uninterrupted_run(tmp_path, fake_probe):
    args = dict(overrides=TINY_MNIST, out_dir=tmp_path, progress=False, report=False)
    run_spec(MODELS / "omnigrok_mnist.toml", name="full", **args)
    # simulate a kill after step 40: checkpoint 60 and rows after 30 never happened
    import shutil

    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    cut = RunDir(tmp_path / "cut")
    cut.checkpoint_path(60).unlink()
    (tmp_path / "cut" / "summary.json").unlink()
    run_spec(MODELS / "omnigrok_mnist.toml", name="cut", resume=True, **args)
    full = RunDir(tmp_path / "full").metrics_rows()
    again = cut.metrics_rows()
    assert [r["step"] for r in again] == [r["step"] for r in full]
    for a, b in zip(full, again):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6, abs=1e-9)
        assert a["test_acc"] == b["test_acc"]
    assert [r["step"] for r in cut.llc_rows()] == [0, 5, 30, 60]


def test_dln_run_records_the_known_llc(tmp_path, fake_probe):
    summary = run_spec(
        MODELS / "dln.toml",
        overrides={
            "train.steps": 30,
            "train.eval_every": 10,
            "data.n_train": 500,
            "data.n_test": 100,
            "probe.start": 0,
        },
        out_dir=tmp_path,
        progress=False,
        report=False,
    )
    assert summary["truth"]["llc"] == 21.5
    rows = RunDir(tmp_path / "dln").metrics_rows()
    assert rows[-1]["train_acc"] is None and rows[-1]["train_loss"] < rows[0]["train_loss"]


def test_model_output_must_fit_the_data(tmp_path, fake_probe):
    with pytest.raises(SpecError, match="has 10 classes"):
        run_spec(
            MODELS / "omnigrok_mnist.toml",
            overrides={**TINY_MNIST, "model.kwargs.widths": [784, 16, 7]},
            out_dir=tmp_path,
            progress=False,
        )


def test_cli_run(tmp_path, capsys, fake_probe):
    code = cli_main(
        [
            "run",
            str(MODELS / "modadd_transformer.toml"),
            "--set", "data.p=7",
            "--set", "model.kwargs.vocab_size=8",
            "--set", "model.kwargs.num_classes=7",
            "--set", "model.kwargs.d_model=16",
            "--set", "model.kwargs.d_mlp=32",
            "--set", "train.steps=20",
            "--set", "train.eval_every=10",
            "--set", "probe.start=0",
            "--out", str(tmp_path),
            "--name", "cli",
            "--no-report",
            "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "run directory" in out and "final" in out
    assert RunDir(tmp_path / "cli").read_summary()["status"] == "complete"
    assert (
        cli_main(["run", str(MODELS / "dln.toml"), "--set", "train.lr=-1", "--out", str(tmp_path)])
        == 2
    )
    assert "train.lr must be > 0" in capsys.readouterr().err


def test_real_probe_on_a_tiny_dln_run(tmp_path):
    """The real LLCProbe wired in: rows at the scheduled steps, with the evaluation's metrics,
    the Hessian summary and finite λ̂ once trained; the summary has the contract's keys."""
    summary = run_spec(
        MODELS / "dln.toml",
        overrides={
            "train.steps": 200,
            "train.eval_every": 50,
            "data.n_train": 1000,
            "data.n_test": 100,
            "probe.schedule": "linear",
            "probe.start": 0,
            "probe.num_points": 3,
            "probe.num_chains": 2,
            "probe.num_draws": 50,
            "probe.num_burnin": 20,
            "probe.step_size": 1e-5,
            "probe.compute_dtype": "bfloat16",
            "probe.hessian_kwargs.k": 3,
            "probe.hessian_kwargs.num_probes": 2,
        },
        out_dir=tmp_path,
        progress=False,
        report=False,
    )
    rd = RunDir(tmp_path / "dln")
    llc = rd.llc_rows()
    assert [r["step"] for r in llc] == [0, 100, 200]
    metrics = {r["step"]: r for r in rd.metrics_rows()}
    for row in llc:
        assert row["train_loss"] == metrics[row["step"]]["train_loss"]
        assert row["hessian_eff_dim"] is not None and row["num_chains"] == 2
        assert row["compute_dtype"] == "bfloat16"  # the spec's estimate_llc options reach it
    assert math.isfinite(llc[-1]["llc_mean"]) and llc[-1]["llc_mean"] > 0
    assert summary["final"]["llc_mean"] == llc[-1]["llc_mean"]
    assert summary["truth"]["llc"] == 21.5
    assert summary["probe_time_s"] > 0
    assert set(summary) >= {
        "name", "status", "steps_done", "total_steps", "final", "n_params", "seed", "versions",
        "wall_time_s", "probe_time_s", "probe_overhead_fraction", "transitions", "report",
    }  # fmt: skip
