"""Files that survive a kill at any moment: the one home of the package's file I/O helpers.

- JSON files (configs, summaries, reports) are written to a temporary name in the same folder,
  fsynced and renamed over the old one (atomic on POSIX), then the folder is fsynced: a reader
  sees the old file or the new one, never half of one.
- JSON-lines files are append-only, one row per line, flushed and fsynced before the call
  returns. A process killed mid-write leaves at most one torn last line, which ``read_jsonl``
  skips.
- Names that become folder names (runs, studies, trials) must match :data:`SAFE_NAME`, so a
  name can never point outside the folder it is meant for.

This module sits below every other layer (it imports nothing from the package).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

TOMLDecodeError = tomllib.TOMLDecodeError

#: Run, study and trial names: letters, digits, ``.``, ``_`` and ``-``, not starting with a dot
#: (so neither ``..`` nor a hidden file), at most 128 characters.
SAFE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")


def check_safe_name(value: Any, field: str) -> str:
    """``value`` if it is a safe folder name (:data:`SAFE_NAME`), else a ``ValueError`` that
    names ``field``. Names become folders under an output directory; ``../x`` or ``/abs/x``
    would write outside it."""
    if not isinstance(value, str) or not SAFE_NAME.match(value):
        raise ValueError(
            f"{field} must be 1-128 letters, digits, '.', '_' or '-' (not starting with '.'), "
            f"got {value!r}"
        )
    return value


def json_clean(obj: Any) -> Any:
    """JSON-safe values: NaN/inf become ``None`` (JSON has no NaN), numpy and torch arrays and
    scalars become Python lists and numbers, dict keys become strings."""
    if isinstance(obj, dict):
        return {str(k): json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_clean(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return json_clean(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _new_file_mode(path: Path) -> int:
    """The mode ``open(path, "w")`` would give: the old file's, else 0o666 less the umask
    (``mkstemp`` makes its files 0o600, which would hide reports and runs from other users)."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        mask = os.umask(0)  # read the umask: os has no getter
        os.umask(mask)
        return 0o666 & ~mask


def atomic_write_bytes(path: str | Path, writer: Callable[[IO[bytes]], Any]) -> None:
    """``writer(fileobj)`` into a unique temporary file next to ``path``, fsync, rename over
    ``path``, fsync the folder. On any error the temporary file is removed and ``path`` is
    untouched. The file gets the mode a plain write would give it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _new_file_mode(path))
        with os.fdopen(fd, "wb") as fh:
            writer(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        _name_file(exc, path)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, lambda fh: fh.write(text.encode("utf-8")))


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically, after :func:`json_clean`."""
    atomic_write_text(path, json.dumps(json_clean(obj), indent=2) + "\n")


def append_jsonl(path: str | Path, row: dict) -> None:
    """Append one row (one line) and fsync it.

    A last line without its newline is what a kill mid-append leaves: a row that was never
    completely written (its writer never returned). It is cut off before the new row goes in, so
    the file stays one valid row per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(json_clean(row), allow_nan=False) + "\n").encode("utf-8")
    try:
        with open(path, "ab+") as fh:
            _drop_torn_tail(fh)
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        _name_file(exc, path)
        raise


def _name_file(exc: BaseException, path: Path) -> None:
    """Put ``path`` into an OSError raised by a write to a file object (a full disk: "[Errno 28]
    No space left on device" alone does not say which file)."""
    if isinstance(exc, OSError) and exc.filename is None:
        exc.filename = str(path)


def _drop_torn_tail(fh: IO[bytes]) -> None:
    """Truncate an append-mode file back to just after its last newline (a no-op when the file
    is empty or ends with one)."""
    end = fh.seek(0, os.SEEK_END)
    if end == 0:
        return
    fh.seek(end - 1)
    if fh.read(1) == b"\n":
        return
    pos = end
    while pos > 0:
        step = min(4096, pos)
        fh.seek(pos - step)
        cut = fh.read(step).rfind(b"\n")
        if cut >= 0:
            fh.truncate(pos - step + cut + 1)
            return
        pos -= step
    fh.truncate(0)


def read_jsonl(path: str | Path) -> Iterator[dict]:
    """Rows of a JSON-lines file (none if it does not exist); a torn (unparsable) last line from
    a kill is skipped."""
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
    text = "".join(json.dumps(json_clean(r), allow_nan=False) + "\n" for r in rows)
    atomic_write_text(path, text)
    return len(rows)


def load_toml(path: str | Path) -> dict:
    """Parse a TOML file (``FileNotFoundError`` if it is not a file; ``TOMLDecodeError`` as
    :mod:`tomllib` raises it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} not found")
    with path.open("rb") as fh:
        return tomllib.load(fh)


def parse_toml_value(text: str) -> Any:
    """``text`` as a TOML literal (``1e-3``, ``true``, ``[1, 2]``, ``"x"``); raises
    ``TOMLDecodeError`` if it is not one."""
    return tomllib.loads(f"v = {text}")["v"]


class LockedError(RuntimeError):
    """The folder cannot be locked for writing: another live process holds its lock (the
    message names its pid), or the folder is not writable."""


class FolderLock:
    """An exclusive lock on a folder for the lifetime of one writer.

    ``fcntl.flock`` on ``<folder>/.lock``: the kernel releases it when the holder's process
    dies, however it dies, so a lock is never stale; a live holder is waited for up to
    ``timeout`` seconds (0: not at all) and then reported by pid. The holder's pid is written into
    the lock file so that the error can name it. Use as a context manager or with
    :meth:`acquire` / :meth:`release`.
    """

    def __init__(self, folder: str | Path, *, timeout: float = 0.0, poll: float = 0.05):
        self.folder = Path(folder)
        self.path = self.folder / ".lock"
        self.timeout = float(timeout)
        self.poll = float(poll)
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise LockedError(
                f"cannot lock {self.folder} for writing ({exc.strerror or exc}): a writer needs "
                "a writable folder; copy it somewhere writable or write elsewhere (--out)"
            ) from exc
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
                    os.close(fd)
                    who = (
                        "this process (close the earlier writer first)"
                        if holder == str(os.getpid())
                        else f"another process (pid {holder}); wait for it to finish or stop it"
                    )
                    raise LockedError(f"{self.folder} is being written by {who}") from None
                time.sleep(self.poll)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
