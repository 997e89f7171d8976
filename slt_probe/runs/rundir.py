"""The run directory (the contract reports and studies read):

    runs/<name>/config.json            resolved spec + seed, versions, spec_path, name
    runs/<name>/metrics.jsonl          one row per evaluation step (append-only)
    runs/<name>/llc.jsonl              one row per probe point (written by LLCProbe)
    runs/<name>/checkpoints/step_00001234.pt
    runs/<name>/summary.json           "partial" while running, "complete" at the end

Every file is written so that a SIGKILL at any moment leaves it readable: JSON files and
checkpoints are written to a temporary name, fsynced and renamed over the old one (atomic on
POSIX); JSONL rows are single appended lines, flushed and fsynced (a torn last line is skipped
by ``read_jsonl``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from slt_probe.files import (
    append_jsonl,
    atomic_write_bytes,
    json_clean,
    read_jsonl,
    truncate_jsonl,
    write_json,
)

CHECKPOINT_RE = re.compile(r"^step_(\d{8,})\.pt$")


class RunDir:
    """Paths and atomic I/O of one run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.metrics = self.path / "metrics.jsonl"
        self.llc = self.path / "llc.jsonl"
        self.summary = self.path / "summary.json"
        self.checkpoints = self.path / "checkpoints"

    def is_started(self) -> bool:
        return self.path.is_dir() and any(self.path.iterdir())

    def create(self) -> None:
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        # leftovers of a checkpoint write interrupted by a kill
        for tmp in self.checkpoints.glob(".step_*.tmp"):
            tmp.unlink(missing_ok=True)

    # JSON / JSONL
    def write_config(self, config: dict) -> None:
        write_json(self.config, config)

    def read_config(self) -> dict:
        return json.loads(self.config.read_text(encoding="utf-8"))

    def write_summary(self, summary: dict) -> None:
        write_json(self.summary, summary)

    def read_summary(self) -> dict | None:
        if not self.summary.exists():
            return None
        return json.loads(self.summary.read_text(encoding="utf-8"))

    def append_metrics(self, row: dict) -> None:
        append_jsonl(self.metrics, json_clean(row))

    def metrics_rows(self) -> list[dict]:
        return list(read_jsonl(self.metrics)) if self.metrics.exists() else []

    def llc_rows(self) -> list[dict]:
        return list(read_jsonl(self.llc)) if self.llc.exists() else []

    def truncate(self, max_step: int) -> None:
        """Drop metric and λ̂ rows after ``max_step`` (work lost with the process)."""
        for path in (self.metrics, self.llc):
            if path.exists():
                truncate_jsonl(path, max_step)

    def clear_logs(self) -> None:
        for path in (self.metrics, self.llc, self.summary):
            path.unlink(missing_ok=True)

    # checkpoints
    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoints / f"step_{int(step):08d}.pt"

    def list_checkpoints(self) -> list[tuple[int, Path]]:
        if not self.checkpoints.is_dir():
            return []
        out = []
        for p in self.checkpoints.iterdir():
            m = CHECKPOINT_RE.match(p.name)
            if m:
                out.append((int(m.group(1)), p))
        return sorted(out)

    def save_checkpoint(self, step: int, payload: dict) -> Path:
        path = self.checkpoint_path(step)
        atomic_write_bytes(path, lambda fh: torch.save(payload, fh))
        return path

    def load_latest_checkpoint(self) -> dict | None:
        """The newest checkpoint that loads (``weights_only=True``), or None."""
        for _step, path in reversed(self.list_checkpoints()):
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except Exception:  # an unreadable file (e.g. a disk error): fall back one
                continue
        return None

    def prune_checkpoints(self, keep: int, protect: set[int] = frozenset()) -> None:
        """Keep the newest ``keep`` checkpoints (0 = keep all) plus the steps in ``protect``."""
        if keep <= 0:
            return
        ckpts = self.list_checkpoints()
        for step, path in ckpts[:-keep]:
            if step not in protect:
                path.unlink(missing_ok=True)
