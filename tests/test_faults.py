"""Faults: unreadable checkpoints, a run killed before its first checkpoint, torn JSON lines and a
full disk (issue 19, defects 4 and 5 and the fault-injection list). Tiny DLN runs, seconds each."""

import json
import os
import random
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from slt_probe.files import read_jsonl
from slt_probe.probe import LLCProbe
from slt_probe.reports import write_run_report
from slt_probe.runs import run_spec
from slt_probe.runs.posthoc import POSTHOC_FILE, estimate_checkpoints
from slt_probe.runs.rundir import RunDir, RunDirError

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "models" / "dln.toml"
TINY = {
    "train.steps": 60,
    "train.eval_every": 10,
    "train.checkpoint_every": 20,
    "data.n_train": 200,
    "data.n_test": 20,
    "probe.enabled": False,
    "probe.start": 0,
    "train.threads": 1,
}


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` but the lock file, with its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def _same_rows(a: list[dict], b: list[dict]) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b]  # no gaps, no duplicates
    for x, y in zip(a, b):
        assert y["train_loss"] == pytest.approx(x["train_loss"], rel=1e-6, abs=1e-12)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    run_spec(SPEC, overrides=TINY, out_dir=out, progress=False)
    return RunDir(out / "dln")


def test_resume_with_every_checkpoint_unreadable_stops_and_lists_them(reference, tmp_path):
    run = run_spec(SPEC, overrides=TINY, out_dir=tmp_path, progress=False)
    rd = RunDir(tmp_path / run["name"])
    for _, path in rd.list_checkpoints():
        path.write_bytes(b"not a checkpoint")
    before = _snapshot(rd.path)
    with pytest.raises(RunDirError, match="none of its 4 checkpoint") as err:
        run_spec(SPEC, overrides=TINY, out_dir=tmp_path, resume=True, progress=False)
    for step in (0, 20, 40, 60):
        assert f"step_{step:08d}.pt" in str(err.value)
    assert "Nothing was changed" in str(err.value)
    assert _snapshot(rd.path) == before  # logs neither cleared nor truncated


def test_an_unreadable_newest_checkpoint_falls_back_one(reference, tmp_path, capsys):
    run_spec(SPEC, overrides=TINY, out_dir=tmp_path, progress=False)
    rd = RunDir(tmp_path / "dln")
    rd.checkpoint_path(60).write_bytes(b"torn")
    (rd.path / "summary.json").unlink()
    summary = run_spec(SPEC, overrides=TINY, out_dir=tmp_path, resume=True, progress=False)
    assert "unreadable checkpoint skipped (step_00000060.pt" in capsys.readouterr().err
    assert summary["status"] == "complete"
    _same_rows(reference.metrics_rows(), rd.metrics_rows())


def test_a_run_killed_before_its_first_checkpoint_restarts_cleanly(reference, tmp_path):
    """What a kill during the step-0 probe leaves: config.json and the step-0 metrics row."""
    rd = RunDir(tmp_path / "dln")
    rd.path.mkdir()
    (rd.path / "config.json").write_bytes((reference.path / "config.json").read_bytes())
    (rd.path / "metrics.jsonl").write_text(reference.metrics.read_text().splitlines()[0] + "\n")
    assert rd.is_started() and not rd.has_checkpoint()
    with pytest.raises(FileExistsError, match="pass --resume"):
        run_spec(SPEC, overrides=TINY, out_dir=tmp_path, progress=False)
    summary = run_spec(SPEC, overrides=TINY, out_dir=tmp_path, resume=True, progress=False)
    assert summary["status"] == "complete"
    _same_rows(reference.metrics_rows(), rd.metrics_rows())


def test_resume_with_a_corrupt_config_json_changes_nothing(reference, tmp_path):
    run_spec(SPEC, overrides=TINY, out_dir=tmp_path, progress=False)
    rd = RunDir(tmp_path / "dln")
    rd.config.write_text('{"seed": 0, "model": ')
    before = _snapshot(rd.path)
    with pytest.raises(RunDirError, match="config.json cannot be read"):
        run_spec(SPEC, overrides=TINY, out_dir=tmp_path, resume=True, progress=False)
    rd.config.write_text(json.dumps({"seed": 0, "model": {"arch": 3}}))
    with pytest.raises(RunDirError, match="config.json is not a valid spec"):
        run_spec(SPEC, overrides=TINY, out_dir=tmp_path, resume=True, progress=False)
    rd.config.write_bytes(before["config.json"])
    assert _snapshot(rd.path) == before


def test_posthoc_rows_repair_a_torn_tail(reference, tmp_path):
    out = tmp_path / POSTHOC_FILE
    out.write_text('{"step": 20, "llc_mean": 1.0, "settings": {}}\n{"step": 40, "llc_me')
    rows = estimate_checkpoints(
        reference.path, [20], out=out, num_chains=1, num_draws=5, num_burnin=0, step_size=1e-6
    )
    lines = out.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["step"] == 20  # torn row cut, new row whole
    assert [json.loads(line)["step"] for line in lines] == [20, 20]
    assert rows[0]["num_draws"] == 5


def test_probe_rows_repair_a_torn_tail(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    data = (torch.randn(64, 3), torch.randn(64, 1))
    (tmp_path / "llc.jsonl").write_text('{"step": 0, "llc_mean": 1.0}\n{"step": 5, "llc_m')
    with LLCProbe(
        nn.MSELoss(), data, schedule=[0, 5], run_dir=tmp_path, hessian=False,
        num_chains=1, num_draws=5, num_burnin=0, step_size=1e-4,
    ) as probe:  # fmt: skip
        assert not probe.due(0) and probe.due(5)  # the torn row does not count as measured
        probe.step(5, model)
    assert [r["step"] for r in read_jsonl(tmp_path / "llc.jsonl")] == [0, 5]
    assert (tmp_path / "llc.jsonl").read_text().endswith("\n")


FULL_DISK_CHILD = textwrap.dedent(
    """
    import resource, sys
    from slt_probe.runs import run_spec
    from slt_probe.runs.rundir import RunDirError

    limit, spec, out, overrides = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]

    def on_eval(step, metrics):
        if step == 50:  # the disk fills up between the checkpoints of steps 40 and 80
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    try:
        run_spec(spec, overrides=overrides, out_dir=out, on_eval=on_eval, progress=False)
    except RunDirError as exc:
        print(exc, file=sys.stderr)
        sys.exit(3)
    """
)

WIDE = {
    **TINY,
    "train.steps": 120,
    "train.checkpoint_every": 40,
    "model.kwargs.widths": [8, 64, 64, 8],
}


def test_a_full_disk_stops_with_a_clear_error_and_resume_recovers(tmp_path):
    sets = [f"{k}={json.dumps(v)}" for k, v in WIDE.items()]
    run_spec(SPEC, overrides=sets, out_dir=tmp_path / "ref", progress=False)
    full = RunDir(tmp_path / "ref" / "dln")
    ckpt_size = full.checkpoint_path(40).stat().st_size
    limit = 30_000  # above every log and JSON file of this run, below one checkpoint
    assert ckpt_size > limit > max(full.metrics.stat().st_size, full.summary.stat().st_size)
    child = subprocess.run(
        [sys.executable, "-c", FULL_DISK_CHILD, str(limit), str(SPEC), str(tmp_path), *sets],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert child.returncode == 3, child.stderr
    assert "cannot write checkpoint" in child.stderr and "step_00000080.pt" in child.stderr
    assert "is the disk full?" in child.stderr
    assert "intact (step_00000000.pt, step_00000040.pt)" in child.stderr
    rd = RunDir(tmp_path / "dln")
    assert [s for s, _ in rd.list_checkpoints()] == [0, 40]  # the last good one intact
    assert not list(rd.checkpoints.glob(".step_*"))  # no temporary left behind
    assert rd.read_summary()["status"] == "partial"
    _same_rows(full.metrics_rows()[:9], rd.metrics_rows()[:9])  # rows up to step 80 intact
    summary = run_spec(SPEC, overrides=sets, out_dir=tmp_path, resume=True, progress=False)
    assert summary["status"] == "complete"
    _same_rows(full.metrics_rows(), rd.metrics_rows())
    assert (
        resource.getrlimit(resource.RLIMIT_FSIZE)[0] == resource.RLIM_INFINITY
    )  # parent untouched


_REPORT_WRITER = textwrap.dedent(
    """
    import sys
    from slt_probe.reports import write_run_report

    run_dir, out = sys.argv[1], sys.argv[2]
    print("ready", flush=True)
    while True:
        write_run_report(run_dir, out)
    """
)


def test_sigkill_during_report_writes_never_leaves_a_torn_report(reference, tmp_path):
    """A report rewritten in a loop and SIGKILLed at seeded random moments: index.html is
    always a whole page (the atomic rename), never a prefix of one."""
    out = tmp_path / "report"
    whole = write_run_report(reference.path, out).read_text(encoding="utf-8")
    assert whole.rstrip().endswith("</html>")
    rng = random.Random(19)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", _REPORT_WRITER, str(reference.path), str(out)],
            stdout=subprocess.PIPE,
            env=env,
        )
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.05, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        page = (out / "index.html").read_text(encoding="utf-8")
        assert page.rstrip().endswith("</html>") and len(page) > 0.9 * len(whole)
