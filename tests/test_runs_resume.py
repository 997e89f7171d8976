"""A run SIGKILLed at arbitrary moments and resumed ends with exactly the metric rows of an
uninterrupted run: no gaps, no duplicates, same numbers (training is deterministic)."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

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


WIDE_STEPS = 300
WIDE_SETS = [
    f"train.steps={WIDE_STEPS}",
    "train.eval_every=10",
    "train.checkpoint_every=10",
    "train.batch_size=50",
    "train.threads=1",
    "data.n_train=500",
    "data.n_test=100",
    "model.kwargs.widths=[8, 128, 128, 8]",  # 200 kB checkpoints: writes take a while
    "probe.enabled=false",
]


def _wide_cmd(out, name, resume=False):
    cmd = [sys.executable, "-m", "slt_probe", "run", str(ROOT / "models" / "dln.toml")]
    for s in WIDE_SETS:
        cmd += ["--set", s]
    cmd += ["--out", str(out), "--name", name, "--no-report", "--quiet"]
    return cmd + (["--resume"] if resume else [])


def _kill_at_random(cmd, metrics: Path, delay: float) -> bool:
    """Start cmd; once it trains (a metrics row is there), SIGKILL it ``delay`` s later."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _count_rows(metrics) < 1 and proc.poll() is None:
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.002)
        time.sleep(delay)
        if proc.poll() is not None:
            assert proc.returncode == 0, proc.stderr.read().decode()
            return False
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return True
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def _consistent(rd: RunDir) -> int:
    """What a kill may leave: whole checkpoints (each loads), at most temporaries beside them,
    a parsable summary and rows; returns the number of temporaries (a kill mid-write)."""
    for _, path in rd.list_checkpoints():
        assert "model" in torch.load(path, map_location="cpu", weights_only=True)
    if rd.summary.exists():
        summary = json.loads(rd.summary.read_text())
        # a kill between the final summary and the process's exit finds a finished run
        finished = summary["status"] == "complete" and summary["steps_done"] == WIDE_STEPS
        assert summary["status"] == "partial" or finished, summary
    steps = [r["step"] for r in rd.metrics_rows()]
    assert steps == sorted(set(steps))
    return len(list(rd.checkpoints.glob(".step_*.tmp")))


def test_sigkill_at_random_moments_during_checkpoint_writes(tmp_path):
    """Kills at seeded random moments of a run that writes a 200 kB checkpoint every 10 steps
    leave whole files only; resuming after each ends with an uninterrupted run's rows."""
    full = subprocess.run(_wide_cmd(tmp_path, "full"), cwd=ROOT, capture_output=True, text=True)
    assert full.returncode == 0, full.stderr
    reference = RunDir(tmp_path / "full").metrics_rows()
    rd = RunDir(tmp_path / "killed")
    rng = random.Random(19)
    kills = 0
    for i in range(4):
        if _kill_at_random(
            _wide_cmd(tmp_path, "killed", resume=i > 0), rd.metrics, rng.uniform(0.05, 0.6)
        ):
            kills += 1
            _consistent(rd)
    assert kills >= 2, "the kills came too late to test anything"
    done = subprocess.run(
        _wide_cmd(tmp_path, "killed", resume=True), cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    again = rd.metrics_rows()
    assert [r["step"] for r in again] == [r["step"] for r in reference]
    for a, b in zip(reference, again):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-6, abs=1e-12)
    assert rd.read_summary()["status"] == "complete"
    assert not list(rd.checkpoints.glob(".step_*.tmp"))  # a resume clears the temporaries
