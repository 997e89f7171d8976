"""LLCProbe(groups=..., data_groups=...): per-group λ̂ at every probe point, batched."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import slt_probe.groups
from slt_probe import LLCProbe, estimate_llc
from slt_probe.estimators.grouped import estimate_llc_groups

QUICK = dict(num_chains=2, num_draws=40, num_burnin=30, step_size=1e-4)


def _setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
    x = torch.randn(256, 4)
    return model, nn.functional.mse_loss, (x, model(x).detach() + 0.1 * torch.randn(256, 2))


def test_batched_groups_equal_each_group_alone_in_distribution():
    """Rows of one batched run are the groups' own restricted chains: each group's λ̂ agrees
    with its own estimate_llc(params=...) within the chains' spread."""
    model, loss, data = _setup()
    groups = slt_probe.groups.layers(model)
    opts = dict(num_chains=4, num_draws=300, num_burnin=200, step_size=3e-4, seed=1)
    batched = estimate_llc_groups(model, loss, data, groups, **opts)
    for name, sel in groups.items():
        alone = estimate_llc(model, loss, data, params=sel, **opts)
        b = batched[name]
        assert b.sampled_weights == alone.sampled_weights
        spread = 4 * np.hypot(b.llc_stderr, alone.llc_stderr) + 0.1 * abs(alone.llc_mean)
        assert abs(b.llc_mean - alone.llc_mean) < spread, (name, b.llc_mean, alone.llc_mean)
    assert min(r.llc_mean for r in batched.values()) > 0.5


def test_probe_records_every_group_at_every_point_in_a_pandas_table(tmp_path):
    model, loss, (x, y) = _setup()
    probe = LLCProbe(
        loss,
        (x, y),
        schedule=[0, 2],
        run_dir=tmp_path,
        hessian=False,
        groups=slt_probe.groups.layers,
        data_groups={"first half": (x[:128], y[:128])},
        **QUICK,
    )
    for step in range(3):
        probe.step(step, model)
    probe.close()
    table = pd.read_json(tmp_path / "llc_groups.jsonl", lines=True)
    assert len(table) == 2 * 3
    assert sorted(set(table["group"])) == ["0", "2", "first half"]
    assert table.groupby("step").size().tolist() == [3, 3]
    weights = table[table.kind == "weights"].set_index(["step", "group"])["num_weights"]
    assert weights.loc[(0, "0")] == 30 and weights.loc[(2, "2")] == 14
    data_row = table[table.kind == "data"].iloc[0]
    assert data_row.num_examples == 128
    assert data_row.nbeta == pytest.approx(probe.rows[0]["nbeta"])  # the whole set's nβ
    assert probe.group_history.shape[0] == 6
    assert np.isfinite(table["llc_mean"]).all()


def _layer_probe(loss, data, run_dir):
    return LLCProbe(
        loss,
        data,
        schedule=[0, 1],
        run_dir=run_dir,
        hessian=False,
        groups=slt_probe.groups.layers,
        **QUICK,
    )


def test_resume_drops_group_rows_of_a_step_without_its_llc_row(tmp_path):
    model, loss, data = _setup()
    with _layer_probe(loss, data, tmp_path) as probe:
        probe.step(0, model)
    # a kill after the group rows of step 1 and before its llc.jsonl row
    path = tmp_path / "llc_groups.jsonl"
    path.write_text(path.read_text() + path.read_text().replace('"step": 0', '"step": 1'))
    with _layer_probe(loss, data, tmp_path) as probe:
        assert [r["step"] for r in probe.group_rows] == [0, 0]
        assert probe.step(0, model) is None
        probe.step(1, model)
    table = pd.read_json(path, lines=True)
    assert table.groupby("step").size().to_dict() == {0: 2, 1: 2}


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(groups=3), TypeError),
        (dict(groups={}), ValueError),
        (dict(data_groups={"a": "not data"}), TypeError),
        (dict(data_groups=[]), ValueError),
    ],
)
def test_bad_groups_fail_when_the_probe_is_made(kwargs, error):
    _, loss, data = _setup()
    with pytest.raises(error):
        LLCProbe(loss, data, schedule=[0], hessian=False, **kwargs)


def test_groups_of_a_frozen_model_and_a_bad_group():
    model, loss, data = _setup()
    for p in model.parameters():
        p.requires_grad_(False)
    res = estimate_llc_groups(model, loss, data, {"first": ["0.*"], "bias": ["2.bias"]}, **QUICK)
    assert res["bias"].sampled_weights == {"names": {"2.bias": 2}, "total": 2}
    with pytest.raises(ValueError, match=r"groups\['x'\]: 'nope' matches no parameter"):
        estimate_llc_groups(model, loss, data, {"x": ["nope"]}, **QUICK)
