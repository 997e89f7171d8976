"""The bad-input matrix (issue 19): LLCProbe, the run spec loader and the CLI on bad input.

Every case asserts the exception type (the exit status for the CLI), that the message names the
field, and that nothing on disk changed (the files under the test's folder, the run directory's
lock file aside, are byte for byte what they were). estimate_llc's own argument checks belong to
the estimators and are tested there.
"""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from slt_probe.cli import main as cli_main
from slt_probe.probe import LLCProbe
from slt_probe.runs import run_spec
from slt_probe.runs.spec import SpecError, load_spec

MODELS = Path(__file__).resolve().parents[1] / "models"
SPEC = MODELS / "dln.toml"
TINY = {
    "train.steps": 20,
    "train.eval_every": 10,
    "data.n_train": 200,
    "data.n_test": 20,
    "probe.enabled": False,
    "probe.start": 0,
    "train.threads": 1,
}


def _data(n=16, d=3):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, d, generator=g), torch.randn(n, 1, generator=g)


def _with(t: torch.Tensor, i: int, value: float) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[i] = value
    return t


X, Y = _data()

# (id, keyword arguments of LLCProbe, exception type, text the message must contain)
PROBE_CASES = [
    ("empty data", {"train_data": (X[:0], Y[:0])}, ValueError, "train_data is empty"),
    ("mismatched lengths", {"train_data": (X, Y[:5])}, ValueError, "train_data: X has 16"),
    ("nan in X", {"train_data": (_with(X, 3, math.nan), Y)}, ValueError, "train_data: X holds NaN"),
    ("inf in Y", {"train_data": (X, _with(Y, 0, math.inf))}, ValueError, "train_data: Y holds"),
    ("data not tensors", {"train_data": ([1, 2], [3, 4])}, TypeError, "train_data must be (X, Y)"),
    ("loss not callable", {"loss_fn": "mse"}, TypeError, "loss_fn must be callable"),
    ("num_points 0", {"num_points": 0}, ValueError, "num_points must be >= 1"),
    ("num_points bool", {"num_points": True}, TypeError, "num_points must be an integer"),
    ("total_steps negative", {"total_steps": -1}, ValueError, "total_steps must be >= 0"),
    ("schedule unknown", {"schedule": "cubic"}, ValueError, "schedule must be 'log', 'linear'"),
    ("schedule step negative", {"schedule": [3, -1]}, ValueError, "schedule[1] must be >= 0"),
    ("schedule a number", {"schedule": 5}, TypeError, "schedule must be 'log', 'linear'"),
    ("seed negative", {"seed": -1}, ValueError, "seed must be >= 0"),
    ("hessian not bool", {"hessian": "yes"}, TypeError, "hessian must be true or false"),
    (
        "hessian option unknown",
        {"hessian_kwargs": {"kk": 1}},
        ValueError,
        "hessian_kwargs: unknown",
    ),
    ("hessian z 0", {"hessian_kwargs": {"z": 0}}, ValueError, "hessian_kwargs.z must be > 0"),
    ("metric clash", {"metrics": ["llc_mean"]}, ValueError, "metrics: metric 'llc_mean' clashes"),
    ("num_chains 0", {"num_chains": 0}, ValueError, "num_chains must be >= 1"),
    ("num_chains bool", {"num_chains": True}, TypeError, "num_chains must be an integer, got True"),
    ("num_draws nan", {"num_draws": math.nan}, ValueError, "num_draws must be an integer"),
    ("num_draws float", {"num_draws": 2.5}, ValueError, "num_draws must be an integer"),
    ("num_burnin negative", {"num_burnin": -1}, ValueError, "num_burnin must be >= 0"),
    ("step_size 0", {"step_size": 0}, ValueError, "step_size must be a positive finite number"),
    ("step_size inf", {"step_size": math.inf}, ValueError, "step_size must be a positive finite"),
    ("step_size word", {"step_size": "fast"}, ValueError, "step_size must be a positive number"),
    ("localization nan", {"localization": math.nan}, ValueError, "localization must be a finite"),
    ("localization negative", {"localization": -1.0}, ValueError, "localization must be >= 0"),
    ("nbeta inf", {"nbeta": math.inf}, ValueError, "nbeta must be a finite number"),
    ("nbeta 0", {"nbeta": 0}, ValueError, "nbeta must be > 0"),
    ("nbeta bool", {"nbeta": True}, TypeError, "nbeta must be a number"),
    ("accuracy 0", {"accuracy": 0}, ValueError, "accuracy must be > 0"),
    ("accuracy negative", {"accuracy": -0.2}, ValueError, "accuracy must be > 0"),
    ("batch_size 0", {"batch_size": 0}, ValueError, "batch_size must be >= 1"),
    (
        "sampler unknown",
        {"sampler": "nuts"},
        ValueError,
        "sampler must be one of ['auto', 'baoab', 'rmsprop_sgld'",
    ),
    ("backend unknown", {"backend": "jax"}, ValueError, "backend must be one of"),
    ("option unknown", {"num_chain": 4}, TypeError, "unknown estimate_llc option 'num_chain'"),
    ("extrapolate one factor", {"extrapolate": [1.0]}, ValueError, "extrapolate must be true"),
    ("extrapolate factor 0", {"extrapolate": [1.0, 0.0]}, ValueError, "extrapolate[1] must be > 0"),
    ("paired not bool", {"paired": 1}, TypeError, "paired must be true or false"),
    ("compute_dtype int8", {"compute_dtype": "int8"}, ValueError, "compute_dtype: compute_dtype"),
    (
        "sampler option of another kernel",
        {"sampler_options": {"alpha": 0.9}},
        ValueError,
        "sampler_options: 'alpha' is not an option of sampler 'auto' (SGLD once it has options)",
    ),
    (
        "devinterp with compute_dtype",
        {"backend": "devinterp", "compute_dtype": "bfloat16"},
        ValueError,
        "compute_dtype is an option of the vmap backend",
    ),
]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


@pytest.mark.parametrize(
    "kwargs,exc,text", [c[1:] for c in PROBE_CASES], ids=[c[0] for c in PROBE_CASES]
)
def test_probe_refuses_bad_arguments_when_made(kwargs, exc, text, tmp_path):
    args = {"loss_fn": nn.MSELoss(), "train_data": (X, Y), "total_steps": 100, **kwargs}
    run_dir = tmp_path / "run"
    with pytest.raises(exc) as err:
        LLCProbe(run_dir=run_dir, **args)
    assert text in str(err.value)
    assert not run_dir.exists()  # refused before the run directory was created or locked


def test_probe_refuses_a_model_without_trainable_parameters():
    model = nn.Linear(3, 1)
    model.requires_grad_(False)
    probe = LLCProbe(nn.MSELoss(), (X, Y), schedule=[0], hessian=False, num_draws=5)
    with pytest.raises(ValueError, match="model has no trainable parameters"):
        probe.step(0, model)
    assert probe.rows == []


def test_probe_refuses_a_clashing_metric_before_measuring(monkeypatch):
    probe = LLCProbe(nn.MSELoss(), (X, Y), schedule=[0], hessian=False, num_draws=5)

    def fail(*args, **kwargs):
        raise AssertionError("measured before the metric names were checked")

    monkeypatch.setattr("slt_probe.probe.probe.estimate_llc", fail)
    with pytest.raises(ValueError, match="probe.step: metric 'nbeta' clashes"):
        probe.step(0, nn.Linear(3, 1), nbeta=3.0)


# (id, overrides of models/dln.toml, text the SpecError must contain)
SPEC_CASES = [
    ("unknown train key", ["train.epochs=3"], "unknown spec key 'train.epochs'"),
    ("unknown section", ["optim.lr=1"], "unknown spec key 'optim.lr'"),
    ("unknown probe key", ["probe.chains=2"], "unknown spec key 'probe.chains'"),
    ("lr a string", ['train.lr="fast"'], "train.lr must be a number"),
    ("lr nan", ["train.lr=nan"], "train.lr must be a finite number"),
    ("steps bool", ["train.steps=true"], "train.steps must be an integer, got True"),
    ("steps 0", ["train.steps=0"], "train.steps must be >= 1"),
    ("n_train 1", ["data.n_train=1"], "data.n_train must be >= 2"),
    ("noise inf", ["data.noise=inf"], "data.noise must be a finite number"),
    ("betas", ["train.betas=[0.9, 1.5]"], "train.betas entries must be < 1"),
    ("kwargs not a table", ["model.kwargs=3"], "model.kwargs must be a table"),
    ("num_draws negative", ["probe.num_draws=-5"], "probe.num_draws must be >= 1"),
    ("localization nan", ["probe.localization=nan"], "probe.localization must be a finite"),
    ("nbeta inf", ["probe.nbeta=inf"], "probe.nbeta must be a finite number"),
    ("nbeta none", ['probe.nbeta="none"', "probe.accuracy=-1"], "probe.accuracy must be > 0"),
    ("extrapolate word", ['probe.extrapolate="yes"'], "probe.extrapolate must be true, false"),
    ("sampler option", ["probe.sampler_options.diffusion=1"], "'diffusion' is not an option"),
    ("sampler option type", ["probe.sampler_options.noise=1"], "sampler_options.noise must be"),
    ("rmsprop alpha type", ["probe.sampler=rmsprop_sgld", "probe.sampler_options.alpha=true"],
     "probe.sampler_options.alpha must be a number"),
    ("hessian option", ["probe.hessian_kwargs.k=0"], "probe.hessian_kwargs.k must be >= 1"),
    ("backend", ["probe.backend=jax"], "probe.backend must be one of ['vmap', 'devinterp']"),
    ("name unsafe", ['name="../x"'], "name must be 1-128 letters"),
    ("schedule empty", ["probe.schedule=[]"], "probe.schedule must be 'log', 'linear'"),
]  # fmt: skip


@pytest.mark.parametrize(
    "overrides,text", [c[1:] for c in SPEC_CASES], ids=[c[0] for c in SPEC_CASES]
)
def test_spec_loader_names_the_bad_field(overrides, text, tmp_path):
    before = _snapshot(MODELS)
    with pytest.raises(SpecError) as err:
        load_spec(SPEC, overrides)
    assert text in str(err.value)
    assert _snapshot(MODELS) == before


def test_spec_file_missing_or_not_toml(tmp_path):
    with pytest.raises(FileNotFoundError, match="run spec .*nope.toml' not found"):
        load_spec(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\narch = 1\n")
    with pytest.raises(SpecError, match="bad.toml: not valid TOML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="model.arch is required"):
        load_spec({"data": {"kind": "modular"}, "train": {"steps": 1, "loss": "cross_entropy"}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    run_spec(SPEC, overrides=TINY, out_dir=out, progress=False)
    return out / "dln"


def _sets(overrides: dict) -> list[str]:
    return [a for k, v in overrides.items() for a in ("--set", f"{k}={json.dumps(v)}")]


# (id, argv after "slt-probe" with {run} for the fixture's run directory and {tmp} for the
#  test's folder, text stderr must contain)
CLI_CASES = [
    ("run: bad probe field", ["run", str(SPEC), "--set", "probe.num_chains=0", "--out", "{tmp}"],
     "probe.num_chains must be >= 1"),
    ("run: unknown key", ["run", str(SPEC), "--set", "train.lrr=1", "--out", "{tmp}"],
     "unknown spec key 'train.lrr'"),
    ("run: missing spec", ["run", "{tmp}/nope.toml", "--out", "{tmp}"], "nope.toml' not found"),
    ("run: arch not allowed", ["run", str(SPEC), "--set", 'model.arch="os:system"', "--out",
     "{tmp}"], "model.arch 'os:system' is not an allowed architecture"),
    ("llc: num_chains 0", ["llc", "{run}", "--num-chains", "0"], "num_chains must be >= 1"),
    ("llc: localization nan", ["llc", "{run}", "--localization", "nan"],
     "localization must be a finite number"),
    ("llc: nbeta inf", ["llc", "{run}", "--nbeta", "inf"], "nbeta must be a finite number"),
    ("llc: step size 0", ["llc", "{run}", "--step-size", "0"], "step_size must be a positive"),
    ("llc: no such step", ["llc", "{run}", "--steps", "7"], "no checkpoint at step 7"),
    ("llc: not a run dir", ["llc", "{tmp}"], "is not a run directory (no config.json)"),
    ("llc: model file not .py", ["llc", "{run}", "--model-file", "{run}/config.json"],
     "--model-file"),
]  # fmt: skip


@pytest.mark.parametrize("argv,text", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_exits_2_naming_the_field(argv, text, run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{run}", str(run_dir)).replace("{tmp}", str(tmp_path)) for a in argv]
    before_run, before_tmp = _snapshot(run_dir), _snapshot(tmp_path)
    assert cli_main(argv) == 2
    assert text in capsys.readouterr().err
    assert _snapshot(run_dir) == before_run and _snapshot(tmp_path) == before_tmp


def test_cli_unknown_sampler_is_an_argparse_error(run_dir, capsys):
    with pytest.raises(SystemExit) as err:
        cli_main(["llc", str(run_dir), "--sampler", "nuts"])
    assert err.value.code == 2 and "--sampler: invalid choice: 'nuts'" in capsys.readouterr().err


@pytest.mark.parametrize("corrupt", ['{"seed": 0, "model": ', "[1, 2]", ""])
def test_corrupt_config_json_on_resume_and_llc(corrupt, run_dir, tmp_path, capsys):
    copy = tmp_path / "dln"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns(".lock"))
    (copy / "config.json").write_text(corrupt)
    before = _snapshot(tmp_path)
    code = cli_main(["run", str(SPEC), "--out", str(tmp_path), "--resume", "--quiet", *_sets(TINY)])
    assert code == 2 and "config.json" in capsys.readouterr().err
    assert cli_main(["llc", str(copy)]) == 2
    assert "config.json" in capsys.readouterr().err
    assert _snapshot(tmp_path) == before


def test_cli_compute_dtype_is_checked_by_the_estimator_options(run_dir, capsys):
    assert cli_main(["llc", str(run_dir), "--compute-dtype", "int8"]) == 2
    assert "compute_dtype: compute_dtype must be a floating torch dtype" in capsys.readouterr().err
