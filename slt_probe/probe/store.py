"""Append-only JSON-lines files that survive a kill at any moment.

Each row is one line, written, flushed and fsynced before the call returns, so what was
measured is on disk. A process killed mid-write leaves at most one torn last line, which
``read_jsonl`` skips. ``truncate_jsonl`` (used on resume) rewrites atomically: a temporary file
renamed over the original.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path


def _clean(obj):
    """JSON-safe values: NaN/inf become null, numpy and torch scalars become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return _clean(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def append_jsonl(path: str | Path, row: dict) -> None:
    """Append one row (one line) and fsync it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(_clean(row), allow_nan=False) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | Path) -> Iterator[dict]:
    """Rows of a JSON-lines file; a torn (unparsable) last line from a kill is skipped."""
    path = Path(path)
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                return  # torn by a kill mid-write
            raise ValueError(f"{path}: line {i + 1} is not valid JSON") from None


def truncate_jsonl(path: str | Path, max_step: int) -> int:
    """Keep the rows with ``step <= max_step`` (atomic rewrite); returns how many were kept."""
    path = Path(path)
    if not path.exists():
        return 0
    rows = [r for r in read_jsonl(path) if r.get("step", -1) <= max_step]
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(_clean(r), allow_nan=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return len(rows)
