"""Datasets: the MNIST subset split, IDX parsing, modular arithmetic, teacher data."""

import gzip
import struct

import numpy as np
import pytest
import torch

from slt_probe.runs.data import (
    find_idx_files,
    mnist_idx,
    mnist_subset,
    modular,
    read_idx,
    stratified_split,
    teacher_linear,
)


def test_stratified_split_is_balanced_disjoint_and_seeded():
    labels = np.repeat(np.arange(10), 50)
    tr, te = stratified_split(labels, 103, 200, seed=1)
    counts = np.bincount(labels[tr], minlength=10)
    assert counts.tolist() == [11, 11, 11] + [10] * 7
    assert len(te) == 200 and not set(tr) & set(te)
    tr2, te2 = stratified_split(labels, 103, 200, seed=1)
    assert (tr == tr2).all() and (te == te2).all()
    assert not (stratified_split(labels, 103, 200, seed=2)[0] == tr).all()


def test_mnist_subset():
    d = mnist_subset(1000, 4000, seed=0)
    assert d.x_train.shape == (1000, 784) and d.x_test.shape == (4000, 784)
    assert torch.bincount(d.y_train).tolist() == [100] * 10
    assert 0.0 <= float(d.x_train.min()) and float(d.x_train.max()) == 1.0
    assert d.num_classes == 10


def _write_idx(path, array, gz=False):
    codes = {np.uint8: 0x08}
    header = struct.pack(">BBBB", 0, 0, codes[array.dtype.type], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(">u1").tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def _mnist_dir(tmp_path, gz, n_train=12, n_test=6):
    rng = np.random.default_rng(0)
    data = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, (n, 4, 4), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        suffix = ".gz" if gz else ""
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", imgs, gz)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
        data[prefix] = (imgs, labels)
    return data


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_reads_the_files_back(tmp_path, gz):
    data = _mnist_dir(tmp_path, gz)
    d = mnist_idx(tmp_path)
    imgs, labels = data["train"]
    torch.testing.assert_close(
        d.x_train, torch.tensor(imgs.reshape(12, 16) / 255.0, dtype=torch.float32)
    )
    assert d.y_train.tolist() == labels.tolist()
    assert d.x_test.shape == (6, 16) and d.y_test.dtype == torch.long
    sub = mnist_idx(tmp_path, train_size=5, test_size=3, seed=0)
    assert sub.x_train.shape == (5, 16) and sub.x_test.shape == (3, 16)


def test_mnist_idx_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        mnist_idx(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        find_idx_files(tmp_path)
    bad = tmp_path / "x"
    bad.write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 10) + b"\x00" * 3)
    with pytest.raises(ValueError, match="truncated"):
        read_idx(bad)
    bad.write_bytes(b"PK\x03\x04")
    with pytest.raises(ValueError, match="not an IDX"):
        read_idx(bad)


@pytest.mark.parametrize(
    "op,fn",
    [
        ("add", lambda a, b, p: (a + b) % p),
        ("sub", lambda a, b, p: (a - b) % p),
        ("mul", lambda a, b, p: a * b % p),
        ("x2y2", lambda a, b, p: (a * a + b * b) % p),
    ],
)
def test_modular_labels(op, fn):
    p = 11
    d = modular(p, op, 0.3, seed=0)
    x = torch.cat([d.x_train, d.x_test])
    y = torch.cat([d.y_train, d.y_test])
    assert len(x) == p * p and d.x_train.shape == (round(0.3 * p * p), 3)
    assert (x[:, 2] == p).all()  # the "=" token
    assert len({tuple(r) for r in x.tolist()}) == p * p  # every pair exactly once
    for (a, b, _), c in zip(x.tolist(), y.tolist()):
        assert c == fn(a, b, p)


def test_modular_division_and_seed():
    d = modular(7, "div", 0.5, seed=3)
    for (a, b, _), c in zip(d.x_train.tolist(), d.y_train.tolist()):
        assert b != 0 and (c * b) % 7 == a
    assert torch.equal(
        modular(7, "add", 0.5, seed=3).x_train, modular(7, "add", 0.5, seed=3).x_train
    )
    assert not torch.equal(
        modular(7, "add", 0.5, seed=3).x_train, modular(7, "add", 0.5, seed=4).x_train
    )


def test_teacher_linear_has_the_requested_rank_and_noise():
    d = teacher_linear(6, 5, 2, n_train=4000, n_test=100, noise=0.1, seed=0)
    t = torch.tensor(d.info["teacher"], dtype=torch.float64)
    s = torch.linalg.svdvals(t)
    torch.testing.assert_close(s[:2], torch.tensor([2.0, 1.0], dtype=s.dtype))
    assert float(s[2:].max()) < 1e-10
    resid = d.y_train.double() - d.x_train.double() @ t.T
    assert abs(float(resid.std()) - 0.1) < 0.005
