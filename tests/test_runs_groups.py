"""[probe.groups] and [probe.data_groups] in run specs; the per-group table of a run."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from slt_probe.runs.data import modular
from slt_probe.runs.groups_spec import make_data_groups, make_groups
from slt_probe.runs.posthoc import estimate_checkpoints
from slt_probe.runs.runner import run_spec
from slt_probe.runs.schema import SpecError
from slt_probe.runs.spec import load_spec, validate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from models.transformer import Transformer  # noqa: E402


def _raw(**probe):
    spec = load_spec(ROOT / "models" / "modadd_heads.toml")
    raw = {k: spec[k] for k in ("name", "seed", "model", "data", "train")}
    return {**raw, "probe": {"schedule": [0], **probe}}


def test_the_heads_spec_asks_for_every_head():
    spec = load_spec(ROOT / "models" / "modadd_heads.toml")
    assert spec["model"]["kwargs"]["n_heads"] >= 4
    assert spec["probe"]["groups"] == {"heads": True}


@pytest.mark.parametrize(
    "probe, message",
    [
        ({"groups": {"head": True}}, "probe.groups.head is not a group kind"),
        ({"groups": {"heads": "yes"}}, "probe.groups.heads must be true or false"),
        ({"groups": {"neurons": {"blocks.0.mlp.0": 0}}}, "probe.groups.neurons.blocks.0.mlp.0"),
        ({"data_groups": {"classes": "all"}}, "probe.data_groups.classes must be true or a list"),
        ({"data_groups": {"operand_blocks": 1}}, "probe.data_groups.operand_blocks must be >= 2"),
        ({"data_groups": {"rows": 1}}, "probe.data_groups.rows is not a data group kind"),
    ],
)
def test_bad_group_tables_name_the_field(probe, message):
    with pytest.raises((SpecError, TypeError, ValueError), match=message):
        validate(_raw(**probe))


def test_groups_and_data_groups_are_built_from_the_spec():
    model = Transformer(vocab_size=54, num_classes=53, d_model=16, n_heads=4, d_mlp=32)
    groups = make_groups({"heads": True, "layers": True, "neurons": {"blocks.0.mlp.0": 2}})(model)
    assert [k for k in groups if ".head" in k] == [f"blocks.0.attn.head{h}" for h in range(4)]
    assert "blocks.0.mlp.0.neurons[16:32]" in groups and "unembed" in groups
    assert make_groups({"heads": False}) is None
    data = modular(p=53, train_fraction=0.5)
    subsets = make_data_groups({"classes": [3], "operand_blocks": 2}, data)
    assert list(subsets) == ["class 3", "a in [0, 26)", "a in [26, 53)"]
    assert (subsets["class 3"][1] == 3).all()
    x, _ = subsets["a in [26, 53)"]
    assert int(x[:, 0].min()) == 26 and len(x) + len(subsets["a in [0, 26)"][0]) == data.n_train
    with pytest.raises(SpecError, match="no module 'nope'"):
        make_groups({"neurons": {"nope": 2}})(model)


def test_a_run_writes_one_row_per_step_and_head(tmp_path):
    overrides = {
        "data.p": 7,
        "model.kwargs.vocab_size": 8,
        "model.kwargs.num_classes": 7,
        "model.kwargs.d_model": 16,
        "model.kwargs.d_mlp": 32,
        "train.steps": 4,
        "train.eval_every": 2,
        "probe.schedule": [0, 4],
        "probe.num_draws": 20,
        "probe.num_burnin": 10,
        "probe.max_steps": 30,  # the spec draws until trustworthy; one round is enough here
        "probe.batch_size": 8,
        "probe.data_groups": {"classes": [0]},
    }
    run_spec(
        ROOT / "models" / "modadd_heads.toml",
        overrides=overrides,
        out_dir=tmp_path,
        name="heads",
        progress=False,
        report=False,
    )
    table = pd.read_json(tmp_path / "heads" / "llc_groups.jsonl", lines=True)
    assert table.groupby("step").size().to_dict() == {0: 5, 4: 5}
    assert set(table.group) == {f"blocks.0.attn.head{h}" for h in range(4)} | {"class 0"}
    assert (table[table.kind == "weights"].num_weights == 4 * 16 * 4).all()
    # the same heads again at the checkpoints, from the command line
    from slt_probe.cli import main as cli_main

    code = cli_main(
        ["llc", str(tmp_path / "heads"), "--like-probe", "--groups", "heads", "--num-draws", "15"]
    )
    assert code == 0
    again = pd.read_json(tmp_path / "heads" / "llc_groups_posthoc.jsonl", lines=True)
    assert again.groupby("step").size().to_dict() == {0: 4, 4: 4}
    assert set(again.group) == {f"blocks.0.attn.head{h}" for h in range(4)}
    assert (again.settings.apply(lambda s: s["num_draws"]) == 15).all()
    with pytest.raises(ValueError, match="'neurons' is not a group kind"):
        estimate_checkpoints(tmp_path / "heads", groups=["neurons"])


def test_resume_truncates_and_clears_the_group_table(tmp_path):
    from slt_probe.files import append_jsonl
    from slt_probe.runs.rundir import RunDir

    rd = RunDir(tmp_path)
    for step in (0, 100, 200):
        append_jsonl(rd.llc_groups, {"step": step, "group": "h0", "llc_mean": 1.0})
    rd.truncate(100)  # a resume from the checkpoint at step 100
    assert [r["step"] for r in rd.group_rows()] == [0, 100]
    rd.clear_logs()
    assert rd.group_rows() == []
