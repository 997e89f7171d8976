"""LLCProbe, schedules and the JSONL store."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from slt_probe import LLCProbe
from slt_probe.estimators import arguments
from slt_probe.estimators.llc import estimate_llc
from slt_probe.files import append_jsonl, read_jsonl, truncate_jsonl
from slt_probe.probe import options, weight_norm
from slt_probe.probe.probe import ROW_KEYS
from slt_probe.probe.schedules import make_schedule
from slt_probe.sampling import kernels


def test_log_schedule_is_dense_early_and_complete():
    s = make_schedule("log", 30, total_steps=20000)
    assert len(s) == 30 and s[0] == 0 and s[-1] == 20000
    assert s == sorted(set(s))
    assert sum(1 for x in s if x < 1000) > 15  # most points in the first 5 % of training


def test_log_schedule_after_start_is_geometric_in_step():
    s = make_schedule("log", 20, total_steps=80000, start=1000)
    assert len(s) == 20 and s[0] == 1000 and s[-1] == 80000
    ratios = np.diff(np.log(s))
    assert np.allclose(ratios, np.log(80) / 19, atol=2e-3)  # equal steps in log(step)
    assert make_schedule("linear", 3, total_steps=300, start=100) == [100, 200, 300]


def test_linear_and_explicit_schedules():
    assert make_schedule("linear", 5, total_steps=100) == [0, 25, 50, 75, 100]
    assert make_schedule([30, 10, 10, 20]) == [10, 20, 30]
    assert make_schedule("log", 50, total_steps=9) == list(range(10))


@pytest.mark.parametrize(
    "args, match",
    [
        (("log", 10, None), "needs total_steps"),
        (("cubic", 10, 100), "schedule must be"),
        (("log", 0, 100), "num_points"),
        (([-1, 3],), ">= 0"),
    ],
)
def test_schedule_errors_name_the_problem(args, match):
    with pytest.raises(ValueError, match=match):
        make_schedule(*args)


def test_store_survives_a_torn_last_line_and_truncates_atomically(tmp_path):
    path = tmp_path / "llc.jsonl"
    for step in (0, 5, 10):
        append_jsonl(path, {"step": step, "llc_mean": float("nan") if step == 5 else 1.0})
    with open(path, "a") as fh:
        fh.write('{"step": 15, "llc_me')  # a kill mid-write
    rows = list(read_jsonl(path))
    assert [r["step"] for r in rows] == [0, 5, 10]
    assert rows[1]["llc_mean"] is None  # NaN stored as null: valid JSON
    assert truncate_jsonl(path, 5) == 2
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [0, 5]


def _toy():
    torch.manual_seed(0)
    x = torch.randn(300, 4)
    y = x @ torch.randn(4, 1) + 0.1 * torch.randn(300, 1)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    return model, (x, y)


def test_probe_measures_only_on_schedule_and_restores_the_model(tmp_path):
    model, data = _toy()
    loss = nn.MSELoss()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    probe = LLCProbe(
        loss,
        data,
        schedule=[0, 20, 40],
        run_dir=tmp_path,
        sampler="sgld",  # the virial's run downhill below is overdamped SGLD's (momentum overshoots)
        num_draws=30,
        num_burnin=20,
        hessian_kwargs={"k": 3, "num_probes": 2},
    )
    model.train()
    measured = []
    for step in range(41):
        opt.zero_grad()
        value = loss(model(data[0]), data[1])
        value.backward()
        opt.step()
        row = probe.step(step, model, train_loss=value.item())
        assert model.training  # put back after each measurement
        if row is not None:
            measured.append(step)
    assert measured == [0, 20, 40]
    df = probe.history
    assert list(df["step"]) == [0, 20, 40]
    for col in (
        "llc_mean",
        "llc_std",
        "two_llc",
        "hessian_eff_dim",
        "weight_norm",
        "train_loss",
        "r_hat",
    ):
        assert col in df.columns
    assert (df["two_llc"] == 2 * df["llc_mean"]).all()
    assert ((df["end_stiffness"] > 0) & (df["end_stiffness"] < 4)).all()  # stable chains
    # w* is far from a minimum early on: the chains run downhill, against ∇L, and the virial
    # (1 at equilibrium) reads negative, then climbs towards 1 as training nears a minimum
    assert df["virial_ratio"].iloc[0] < 0 and df["virial_ratio"].is_monotonic_increasing
    assert df["n_params"].iloc[0] == sum(p.numel() for p in model.parameters())
    assert len(df["loss_trace"].iloc[0]) == 4 and len(df["loss_trace"].iloc[0][0]) == 30
    assert [r["step"] for r in read_jsonl(tmp_path / "llc.jsonl")] == [0, 20, 40]
    assert set(probe.rows[0]) == set(ROW_KEYS) | {"train_loss"}  # ROW_KEYS is the row
    ov = probe.overhead
    assert 0 < ov["fraction"] <= 1 and ov["probe_time_s"] > 0


def test_probe_on_an_existing_run_dir_skips_measured_steps(tmp_path):
    model, data = _toy()
    append_jsonl(tmp_path / "llc.jsonl", {"step": 0, "llc_mean": 1.0})
    probe = LLCProbe(
        nn.MSELoss(),
        data,
        schedule=[0, 10],
        run_dir=tmp_path,
        hessian=False,
        num_draws=10,
        num_burnin=5,
    )
    assert not probe.due(0) and probe.due(10)
    assert probe.step(0, model) is None
    assert probe.step(10, model)["step"] == 10
    assert [r["step"] for r in read_jsonl(tmp_path / "llc.jsonl")] == [0, 10]


def test_metric_name_clash_is_refused():
    model, data = _toy()
    probe = LLCProbe(nn.MSELoss(), data, schedule=[0], hessian=False, num_draws=5, num_burnin=0)
    with pytest.raises(ValueError, match="clashes"):
        probe.step(0, model, llc_mean=3.0)


def test_every_estimate_llc_option_has_a_check_and_its_own_default():
    """The options table is read from estimate_llc's signature: a keyword added there without a
    check here fails this test; the defaults are the signature's (the probe's three aside)."""
    import inspect

    params = inspect.signature(estimate_llc).parameters
    names = [n for n in params if n not in ("model", "loss_fn", "data")]
    assert sorted(options.ESTIMATOR_CHECKS) == sorted(names)
    defaults = options.probe_estimator_defaults()
    for name in names:
        expected = options.PROBE_DEFAULTS.get(name, params[name].default)
        assert defaults[name] == expected, name
    assert options.PROBE_DEFAULTS == {"num_chains": 4, "num_draws": 200, "num_burnin": 200}


def test_sampler_choices_and_options_come_from_the_kernel_registry(monkeypatch):
    class Toy:
        name = "toy"

        def __init__(self, *, temperature: float = 1.0, flip: bool = False):
            pass

    monkeypatch.setitem(kernels.KERNELS, "toy", Toy)
    assert options.kernel_options("toy") == {"temperature": 1.0, "flip": False}
    ok = options.check_estimator_options({"sampler": "toy", "sampler_options": {"flip": True}})
    assert ok["sampler"] == "toy"
    with pytest.raises(ValueError, match="'noise' is not an option of sampler 'toy'"):
        options.check_estimator_options({"sampler": "toy", "sampler_options": {"noise": "x"}})
    with pytest.raises(TypeError, match="sampler_options.temperature must be a number"):
        options.check_estimator_options({"sampler": "toy", "sampler_options": {"temperature": "2"}})
    assert "'toy'" in str(
        pytest.raises(ValueError, arguments.check_choice, "s", "x", kernels.KERNELS).value
    )


def test_weight_norm_is_trainable_only_in_float64():
    model = nn.Linear(3, 2).to(torch.bfloat16)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(3.0)
    assert weight_norm(model) == pytest.approx((6 * 1.0 + 2 * 9.0) ** 0.5, rel=1e-12)
    model.bias.requires_grad_(False)
    assert weight_norm(model) == pytest.approx(6**0.5, rel=1e-12)
