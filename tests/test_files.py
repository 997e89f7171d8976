"""slt_probe.files: torn JSON lines, the folder lock, safe names, atomic writes."""

import json
import multiprocessing as mp
import os
import time

import pytest

from slt_probe.files import (
    FolderLock,
    LockedError,
    append_jsonl,
    atomic_write_bytes,
    atomic_write_text,
    check_safe_name,
    read_jsonl,
    write_json,
)


def test_append_after_torn_line_keeps_file_parseable(tmp_path):
    path = tmp_path / "llc.jsonl"
    append_jsonl(path, {"step": 1, "llc": 2.0})
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"step": 2, "llc": 3.')  # a kill mid-append
    append_jsonl(path, {"step": 3, "llc": 4.0})
    rows = list(read_jsonl(path))
    assert [r["step"] for r in rows] == [1, 3]
    assert path.read_text().count("\n") == 2


def test_append_to_file_that_is_only_a_torn_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 0')
    append_jsonl(path, {"step": 5})
    assert list(read_jsonl(path)) == [{"step": 5}]


@pytest.mark.parametrize("name", ["../x", "/abs/x", "a/b", "", ".hidden", "..", "x" * 129, 3])
def test_unsafe_names_are_refused_naming_the_field(name):
    with pytest.raises(ValueError, match="run name"):
        check_safe_name(name, "run name")


@pytest.mark.parametrize("name", ["omnigrok_mnist", "a.b-c_1", "7"])
def test_safe_names_pass(name):
    assert check_safe_name(name, "run name") == name


def _hold(folder, ready, stop):
    with FolderLock(folder):
        ready.set()
        stop.wait(30)


def test_folder_lock_names_the_holder_and_is_released_when_it_dies(tmp_path):
    ctx = mp.get_context("fork")
    ready, stop = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold, args=(tmp_path, ready, stop))
    proc.start()
    assert ready.wait(30)
    with pytest.raises(LockedError, match=f"pid {proc.pid}"):
        FolderLock(tmp_path).acquire()
    os.kill(proc.pid, 9)
    proc.join(10)
    start = time.monotonic()
    with FolderLock(tmp_path, timeout=5):  # the kernel released the dead holder's lock
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
    assert time.monotonic() - start < 5


def test_atomic_write_leaves_old_file_on_error(tmp_path):
    path = tmp_path / "s.json"
    atomic_write_text(path, json.dumps({"a": 1}))

    class Boom(Exception):
        pass

    def writer(fh):
        fh.write(b"{")
        raise Boom

    with pytest.raises(Boom):
        atomic_write_bytes(path, writer)
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


def test_atomic_writes_get_the_mode_of_a_plain_write(tmp_path):
    mask = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
        (tmp_path / "a.json").chmod(0o600)
        write_json(tmp_path / "a.json", {"x": 2})  # an existing file keeps its mode
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(mask)


def test_an_unwritable_folder_is_a_clear_lock_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")  # even root cannot make a folder under a file
    with pytest.raises(LockedError, match="cannot lock .*file/run for writing"):
        FolderLock(blocker / "run").acquire()
