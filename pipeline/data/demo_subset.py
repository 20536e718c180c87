"""Cut the shipped demo subset out of the Fashion-MNIST idx files (Debian dataset-fashion-mnist).

`python -m pipeline.data.demo_subset --idx-dir /usr/share/datasets/fashion-mnist
 --out pipeline/data/demo/fashion_mnist_subset.npz`

The subset is class-balanced and deterministic: the first 600 training images of each class and the first
100 test images of each class, each kept in the original file order. No randomness is involved, so the same
idx files always give a byte-identical array set.
"""
from __future__ import annotations

import argparse
import gzip
import io
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..utils.io import atomic_path

TRAIN_PER_CLASS = 600
TEST_PER_CLASS = 100
NUM_CLASSES = 10
_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one (optionally gzipped) idx file: big-endian magic (0, 0, dtype 0x08=uint8, ndim) then dims."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise UserError(f"{path}: cannot read idx file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path}: not a uint8 idx file (bad magic number)")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    start = 4 + 4 * ndim
    if len(raw) - start != int(np.prod(dims)):
        raise UserError(f"{path}: idx payload has {len(raw) - start} bytes, header says {int(np.prod(dims))}")
    return np.frombuffer(raw, dtype=np.uint8, offset=start).reshape(dims)


def first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first `per_class` samples of every class, in original order."""
    keep = []
    for c in range(NUM_CLASSES):
        idx = np.flatnonzero(labels == c)[:per_class]
        if len(idx) < per_class:
            raise UserError(f"class {c}: only {len(idx)} samples, need {per_class}")
        keep.append(idx)
    return np.sort(np.concatenate(keep))


def build_subset(idx_dir: str | Path, train_per_class: int = TRAIN_PER_CLASS,
                 test_per_class: int = TEST_PER_CLASS) -> dict[str, np.ndarray]:
    idx_dir = Path(idx_dir)
    arrays = {name: read_idx(idx_dir / fname) for name, fname in _IDX_FILES.items()}
    out = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        keep = first_per_class(arrays[f"{split}_labels"], per_class)
        out[f"{split}_images"] = np.ascontiguousarray(arrays[f"{split}_images"][keep])
        out[f"{split}_labels"] = np.ascontiguousarray(arrays[f"{split}_labels"][keep])
    return out


def write_subset(arrays: dict[str, np.ndarray], out: str | Path) -> None:
    """np.savez_compressed into memory first so the file lands atomically (and with a fixed name inside)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    with atomic_path(out) as tmp:
        tmp.write_bytes(buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.data.demo_subset", description=__doc__.split("\n")[0])
    parser.add_argument("--idx-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--out", default=str(Path(__file__).parent / "demo" / "fashion_mnist_subset.npz"))
    args = parser.parse_args(argv)
    arrays = build_subset(args.idx_dir)
    write_subset(arrays, args.out)
    sizes = ", ".join(f"{k} {list(v.shape)}" for k, v in arrays.items())
    print(f"wrote {args.out}: {sizes}")
    return 0


if __name__ == "__main__":
    import sys

    from ..errors import run_main

    sys.exit(run_main(main))
