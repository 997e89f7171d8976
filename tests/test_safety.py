"""A run directory from someone else runs no code, names stay inside their folder, and one run
directory has one writer at a time (issue 19, defects 1-3)."""

import json
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path

import pytest

from slt_probe.cli import main as cli_main
from slt_probe.files import FolderLock, LockedError
from slt_probe.probe import LLCProbe
from slt_probe.runs import run_spec
from slt_probe.runs.posthoc import estimate_checkpoints
from slt_probe.runs.spec import SpecError, load_spec

MODELS = Path(__file__).resolve().parents[1] / "models"
TINY = {
    "train.steps": 20,
    "train.eval_every": 10,
    "data.n_train": 200,
    "data.n_test": 20,
    "probe.enabled": False,
    "probe.start": 0,
    "train.threads": 1,
}
CHEAP_LLC = ["--num-chains", "1", "--num-draws", "5", "--num-burnin", "0", "--step-size", "1e-6"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    run_spec(MODELS / "dln.toml", overrides=TINY, out_dir=out, progress=False)
    return out / "dln"


def _copy_run(src: Path, dst: Path, **config_changes) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock"))
    config = json.loads((dst / "config.json").read_text())
    for dotted, value in config_changes.items():
        node = config
        *parents, last = dotted.split("__")
        for part in parents:
            node = node[part]
        node[last] = value
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def test_a_run_directory_naming_os_system_is_refused_and_runs_nothing(
    tiny_run, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    hostile = _copy_run(
        tiny_run,
        tmp_path / "hostile",
        model__arch="os:system",
        model__kwargs={"command": "touch PWNED"},
    )
    assert cli_main(["llc", str(hostile), *CHEAP_LLC]) == 2
    err = capsys.readouterr().err
    assert "model.arch 'os:system' is not an allowed architecture" in err
    assert "--allow-arch os:system" in err and "--model-file" in err
    assert not (tmp_path / "PWNED").exists()
    assert not (hostile / "llc_posthoc.jsonl").exists()
    # even allowed by name, a function is not a model class
    assert cli_main(["llc", str(hostile), "--allow-arch", "os:system", *CHEAP_LLC]) == 2
    assert "not a torch.nn.Module subclass" in capsys.readouterr().err
    assert not (tmp_path / "PWNED").exists()


def test_the_spec_folder_recorded_in_a_run_directory_is_never_searched(tiny_run, tmp_path):
    evil = tmp_path / "evil"
    evil.mkdir()
    marker = tmp_path / "IMPORTED"
    (evil / "dln.py").write_text(f"open({str(marker)!r}, 'w').close()\nDLN = None\n")
    (evil / "net.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    run = _copy_run(tiny_run, tmp_path / "run", spec_path=str(evil / "spec.toml"))
    rows = estimate_checkpoints(run, [20], num_chains=1, num_draws=5, num_burnin=0, step_size=1e-6)
    assert rows[0]["step"] == 20  # slt_probe's own dln:DLN, not <spec folder>/dln.py
    assert not marker.exists()
    other = _copy_run(tiny_run, tmp_path / "other", spec_path=str(evil / "s.toml"))
    config = json.loads((other / "config.json").read_text())
    config["model"]["arch"] = "net:Net"
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(SpecError, match="'net:Net' is not an allowed architecture"):
        estimate_checkpoints(other, [20], num_draws=5)
    assert not marker.exists()


def test_a_model_file_the_user_names_is_allowed(tiny_run, tmp_path, capsys):
    (tmp_path / "mydln.py").write_text(
        "import torch\n"
        "class DLN(torch.nn.Module):\n"
        "    def __init__(self, widths):\n"
        "        super().__init__()\n"
        "        self.layers = torch.nn.ModuleList(\n"
        "            torch.nn.Linear(a, b, bias=False) for a, b in zip(widths, widths[1:]))\n"
        "    def forward(self, x):\n"
        "        for layer in self.layers:\n"
        "            x = layer(x)\n"
        "        return x\n"
    )
    run = _copy_run(tiny_run, tmp_path / "run", model__arch="mydln:DLN")
    assert cli_main(["llc", str(run), "--steps", "20", *CHEAP_LLC]) == 2
    assert "'mydln:DLN' is not an allowed architecture" in capsys.readouterr().err
    code = cli_main(
        ["llc", str(run), "--steps", "20", "--model-file", str(tmp_path / "mydln.py"), *CHEAP_LLC]
    )
    assert code == 0
    assert len((run / "llc_posthoc.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize("bad", ["../x", "/abs/x", "a/b", ".hidden", ""])
def test_unsafe_run_names_are_refused_where_parsed(bad, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SpecError, match="^name must be 1-128 letters"):
        run_spec(MODELS / "dln.toml", overrides=TINY, out_dir=out, name=bad, progress=False)
    with pytest.raises(SpecError, match="^name must be 1-128 letters"):
        load_spec(MODELS / "dln.toml", {"name": bad})
    with pytest.raises(SystemExit):
        cli_main(["run", str(MODELS / "dln.toml"), "--out", str(out), "--name", bad])
    assert "--name must be 1-128 letters" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "x").exists()


def test_an_unsafe_spec_file_name_is_refused_as_the_default_name(tmp_path):
    spec = tmp_path / "my spec.toml"
    shutil.copy(MODELS / "dln.toml", spec)
    text = spec.read_text().replace('name = "dln"\n', "")
    spec.write_text(text)
    with pytest.raises(SpecError, match=r"name \(default: the spec file's name\) must be"):
        load_spec(spec)


def _hold(folder, ready, release_after):
    with FolderLock(folder):
        ready.set()
        time.sleep(release_after)


def _holder(folder: Path, release_after: float):
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold, args=(folder, ready, release_after))
    proc.start()
    assert ready.wait(30)
    return proc


def test_a_second_writer_is_refused_naming_the_first(tiny_run, tmp_path, capsys):
    run = _copy_run(tiny_run, tmp_path / "dln")
    before = (run / "metrics.jsonl").read_bytes()
    proc = _holder(run, 30)
    try:
        with pytest.raises(LockedError, match=f"pid {proc.pid}"):
            run_spec(
                MODELS / "dln.toml", overrides=TINY, out_dir=tmp_path, resume=True, progress=False
            )
        code = cli_main(
            ["run", str(MODELS / "dln.toml"), "--out", str(tmp_path), "--resume", "--quiet",
             *[a for k, v in TINY.items() for a in ("--set", f"{k}={json.dumps(v)}")]]
        )  # fmt: skip
        assert code == 2 and f"pid {proc.pid}" in capsys.readouterr().err
        with pytest.raises(LockedError, match=f"pid {proc.pid}"):
            estimate_checkpoints(run, [20], num_draws=5)
        data = (__import__("torch").zeros(4, 8), __import__("torch").zeros(4, 8))
        with pytest.raises(LockedError, match=f"pid {proc.pid}"):
            LLCProbe(__import__("torch").nn.MSELoss(), data, schedule=[0], run_dir=run)
    finally:
        proc.kill()
        proc.join(10)
    assert (run / "metrics.jsonl").read_bytes() == before  # no writer got through


def test_a_writer_waits_for_the_lock_when_asked(tiny_run, tmp_path):
    run = _copy_run(tiny_run, tmp_path / "dln")
    proc = _holder(run, 1.0)
    start = time.monotonic()
    summary = run_spec(
        MODELS / "dln.toml",
        overrides=TINY,
        out_dir=tmp_path,
        resume=True,
        progress=False,
        lock_timeout=30,
    )
    assert time.monotonic() - start >= 0.5  # waited for the holder
    assert summary["status"] == "complete"
    proc.join(10)


def test_a_probe_holds_its_run_dir_until_closed(tmp_path):
    torch = __import__("torch")
    data = (torch.zeros(4, 8), torch.zeros(4, 8))
    probe = LLCProbe(torch.nn.MSELoss(), data, schedule=[0], run_dir=tmp_path, hessian=False)
    with pytest.raises(LockedError, match="this process"):
        LLCProbe(torch.nn.MSELoss(), data, schedule=[0], run_dir=tmp_path)
    probe.close()
    with LLCProbe(torch.nn.MSELoss(), data, schedule=[0], run_dir=tmp_path, hessian=False):
        pass
    assert os.path.exists(tmp_path / ".lock")
