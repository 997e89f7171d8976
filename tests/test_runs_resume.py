"""A run SIGKILLed at arbitrary moments and resumed ends with exactly the metric rows of an
uninterrupted run: no gaps, no duplicates, same numbers (training is deterministic)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slt_probe.runs.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]
SETS = [
    "train.steps=1000",
    "train.eval_every=10",
    "train.checkpoint_every=70",
    "train.batch_size=50",
    "train.threads=1",
    "data.n_train=500",
    "data.n_test=100",
    "probe.enabled=false",
]


def _cmd(out, name, resume=False):
    cmd = [sys.executable, "-m", "slt_probe", "run", str(ROOT / "models" / "dln.toml")]
    for s in SETS:
        cmd += ["--set", s]
    cmd += ["--out", str(out), "--name", name, "--no-report", "--quiet"]
    return cmd + (["--resume"] if resume else [])


def _count_rows(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _run_and_kill(cmd, metrics: Path, after_rows: int, timeout=120) -> bool:
    """Start cmd, SIGKILL it once metrics.jsonl has after_rows rows; False if it finished first."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                assert proc.returncode == 0, proc.stderr.read().decode()
                return False
            if _count_rows(metrics) >= after_rows:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.002)
        raise AssertionError("run neither finished nor reached the kill point in time")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def test_sigkill_and_resume_matches_an_uninterrupted_run(tmp_path):
    env_ok = subprocess.run(_cmd(tmp_path, "full"), cwd=ROOT, capture_output=True, text=True)
    assert env_ok.returncode == 0, env_ok.stderr
    full = RunDir(tmp_path / "full").metrics_rows()
    assert [r["step"] for r in full] == list(range(0, 1001, 10))

    rd = RunDir(tmp_path / "killed")
    kills = 0
    # kill at several points (before and after checkpoints), resuming each time
    for i, after in enumerate((3, 41, 77)):
        killed = _run_and_kill(_cmd(tmp_path, "killed", resume=i > 0), rd.metrics, after)
        kills += killed
        if killed:
            assert rd.read_summary() is None or rd.read_summary()["status"] == "partial"
    assert kills == 3, "a kill came too late to test anything"
    done = subprocess.run(
        _cmd(tmp_path, "killed", resume=True), cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr

    again = rd.metrics_rows()
    assert [r["step"] for r in again] == [r["step"] for r in full]  # no gaps, no duplicates
    for a, b in zip(full, again):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-6, abs=1e-12)
        assert b["test_loss"] == pytest.approx(a["test_loss"], rel=1e-6, abs=1e-12)
    summary = rd.read_summary()
    assert summary["status"] == "complete" and summary["steps_done"] == 1000
