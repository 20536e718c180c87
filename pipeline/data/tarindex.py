"""Where each sample of a webdataset tar lies: its byte range, listed in key order.

Why an index: with every sample's byte range known, a reader fetches exactly the rows it is given (one
positioned read per sample), so across all ranks and workers each sample's bytes are read once per epoch,
and a resumed run reads nothing to get back to where it stopped. Why key order: img2dataset writes a
shard's samples in download completion order, which differs between two runs over one url list; the keys
do not (they come from the row position), so listing samples by key makes the training stream a function
of the url list alone, whatever order the downloads finished in.

The data stage walks each tar's headers when it verifies the shard (checksums, sizes, the closing zero
blocks) and writes the index beside it, `shards/NNNNN.idx.npy` (int64 [samples, 2]: start, end). The
loader walks a tar itself when its index is missing, stopping at the first damaged header.
"""
from __future__ import annotations

import os
import re
import tarfile
from pathlib import Path

import numpy as np

from ..utils.io import atomic_path

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
INDEX_SUFFIX = ".idx.npy"
_BLOCK = 512
_ZERO = bytes(_BLOCK)
_KEY_EXT = re.compile(rb"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's key / extension split


def _octal(field: bytes) -> int:
    """A numeric tar header field: octal text, or GNU base-256 when the top bit is set."""
    if field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def header(block: bytes | memoryview, offset: int) -> tuple[bytes, int, bytes]:
    """(typeflag, data size, ustar name) of one 512-byte header, checksum verified."""
    block = bytes(block)
    stored = _octal(block[148:156])
    if stored != sum(block[:148]) + 256 + sum(block[156:]):  # the checksum field counts as 8 spaces
        raise tarfile.ReadError(f"bad header checksum at byte {offset}")
    name = block[:100].split(b"\0", 1)[0]
    if block[257:262] == b"ustar" and block[345]:
        name = block[345:500].split(b"\0", 1)[0] + b"/" + name
    return block[156:157], _octal(block[124:136]), name


def long_name(typeflag: bytes, data: bytes) -> bytes | None:
    """The member name a pax ('x') or GNU long-name ('L') header gives the next member."""
    if typeflag == b"L":
        return data.split(b"\0", 1)[0]
    for record in data.split(b"\n"):
        _, _, keyvalue = record.partition(b" ")
        if keyvalue.startswith(b"path="):
            return keyvalue[5:]
    return None


def split_name(name: bytes) -> tuple[bytes, str] | None:
    """(key, extension) of a member name as webdataset groups them; None for names without an extension."""
    match = _KEY_EXT.match(name)
    return (match.group(1), match.group(2).decode("utf-8", "replace").lower()) if match else None


def _members(f, size: int, *, strict: bool) -> tuple[list[tuple[int, int, bytes]], bool]:
    """((member start, end, name) of every file member, whether the walk reached the end marker); a member's
    start is its first (pax / long-name) header. Strict: any damage raises tarfile.ReadError; else the walk
    stops before the first damaged header."""
    members: list[tuple[int, int, bytes]] = []
    offset, start, next_name = 0, 0, None
    limit = size - 2 * _BLOCK if strict else size  # strict: data must end before the closing zero blocks
    while offset + _BLOCK <= size:
        f.seek(offset)
        block = f.read(_BLOCK)
        if block == _ZERO:
            return members, True
        try:
            typeflag, length, name = header(block, offset)
        except tarfile.ReadError:
            if strict:
                raise
            return members, False
        end = offset + _BLOCK + -(-length // _BLOCK) * _BLOCK
        if end > limit:
            if strict:
                raise tarfile.ReadError(f"{name.decode(errors='replace')}: data runs past the end of the file")
            return members, False
        if typeflag in (b"x", b"L"):
            next_name = long_name(typeflag, f.read(length))
        elif typeflag in (b"0", b"\0", b"7"):
            members.append((start, end, next_name or name))
            next_name = None
        if typeflag not in (b"x", b"L"):
            start = end
        offset = end
    if strict:
        raise tarfile.ReadError("no end-of-archive marker (cut short)")
    return members, False


def build_index(path: str | Path, *, strict: bool = True) -> np.ndarray:
    """int64 [samples, 2] byte ranges (start, end) of the samples with an image member, by key.

    Strict (the data stage's verification): every header's checksum is verified, every member's data must lie
    inside the file before the two closing zero blocks; data is seeked over, so a 10,000-sample shard is
    checked without reading its images. Raises tarfile.ReadError on a cut or corrupt tar. Not strict (the
    loader, for a tar without an index): the samples wholly before the first damage."""
    path = Path(path)
    size = path.stat().st_size
    if strict and (size < 2 * _BLOCK or size % _BLOCK):
        raise tarfile.ReadError(f"size {size} is not a whole number of tar blocks")
    with open(path, "rb") as f:
        if strict:
            f.seek(size - 2 * _BLOCK)
            if f.read(2 * _BLOCK) != bytes(2 * _BLOCK):  # a closed tar ends with two zero blocks
                raise tarfile.ReadError("no end-of-archive marker (cut short)")
        members, whole = _members(f, size, strict=strict)
    named = [(start, end, split_name(name)) for start, end, name in members]
    named = [(start, end, parts) for start, end, parts in named if parts is not None]
    if not whole and named:  # the walk stopped at damage: the last sample may lack members, so drop it
        named = [m for m in named if m[2][0] != named[-1][2][0]]
    by_key: dict[bytes, list] = {}  # key -> [start, end, has image]
    for start, end, (key, ext) in named:
        entry = by_key.setdefault(key, [start, end, False])
        entry[0], entry[1] = min(entry[0], start), max(entry[1], end)
        entry[2] = entry[2] or ext in IMAGE_EXTENSIONS
    ranges = [(v[0], v[1]) for _, v in sorted(by_key.items()) if v[2]]
    return np.array(ranges, dtype=np.int64).reshape(-1, 2)


def index_path(tar: str | Path) -> Path:
    tar = Path(tar)
    return tar.with_name(tar.name.removesuffix(".tar") + INDEX_SUFFIX)


def write_index(tar: str | Path, ranges: np.ndarray) -> None:
    with atomic_path(index_path(tar)) as tmp, open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(ranges, dtype=np.int64), allow_pickle=False)


def read_index(tar: str | Path) -> tuple[np.ndarray, int] | None:
    """(ranges, bytes read) from the index file beside `tar`; None when there is none (or it is unusable)."""
    path = index_path(tar)
    try:
        ranges = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if ranges.ndim != 2 or ranges.shape[1] != 2 or ranges.dtype != np.int64:
        return None
    return ranges, os.path.getsize(path)


def sample_members(data: bytes | memoryview, offset: int = 0) -> tuple[bytes, dict[str, memoryview]]:
    """(key, extension -> member data) of one sample's byte range as build_index listed it; members of
    other keys inside the range (a tar not written sample by sample) are left out. The data stage verified
    every header; here the first one's checksum is checked again (a stale index would not point at one)."""
    view = memoryview(data)
    out: dict[str, memoryview] = {}
    key, position, next_name = None, 0, None
    while position + _BLOCK <= len(view):
        block = bytes(view[position:position + _BLOCK])
        if block == _ZERO:
            break
        if position == 0:
            typeflag, length, name = header(block, offset)
        else:
            typeflag, length = block[156:157], _octal(block[124:136])
            name = block[:100].split(b"\0", 1)[0]
            if block[257:262] == b"ustar" and block[345]:
                name = block[345:500].split(b"\0", 1)[0] + b"/" + name
        body = view[position + _BLOCK:position + _BLOCK + length]
        if len(body) < length:
            raise tarfile.ReadError(f"member at byte {offset + position} is cut short")
        position += _BLOCK + -(-length // _BLOCK) * _BLOCK
        if typeflag in (b"x", b"L"):
            next_name = long_name(typeflag, bytes(body))
            continue
        parts = split_name(next_name or name)
        next_name = None
        if typeflag in (b"0", b"\0", b"7") and parts is not None and parts[0] == (key or parts[0]):
            key = parts[0]
            out[parts[1]] = body
    return key or b"", out
