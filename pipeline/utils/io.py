"""Atomic writes and safe reads: every output appears whole or not at all, and no file's pickled code ever runs.

Writes go to a temp file in the same folder, are flushed to disk, then renamed onto the target, so a kill or a full
disk at any moment leaves either the previous file or nothing, never a half-written one a rerun would trust. A write
that the file system refuses (disk full, quota, read-only, no permission) is one UserError naming the path; the
temp file is removed. Torch files are read with weights_only=True only (torch_load), the one place that calls
torch.load.
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..errors import UserError

# errno -> what the user is told; these are the write failures a user (not the code) can fix
WRITE_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the file system",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def write_error(path: str | Path, exc: OSError) -> UserError:
    """The one-line error of a refused write of `path`."""
    reason = WRITE_ERRORS.get(exc.errno, exc.strerror or str(exc))
    return UserError(f"{path}: cannot write ({reason}); nothing was written there")


def refused_write(exc: BaseException) -> OSError | None:
    """The file system's refusal behind `exc`, if any: libraries re-raise it as their own error (torch's zip
    writer raises a RuntimeError while an OSError(ENOSPC) is being handled), so the chain is searched."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRORS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a node crash right after it keeps the new file)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)


def _temp_next_to(path: Path) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs must be readable like any other file
    return Path(tmp)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path next to `path`; on success it is flushed and renamed onto `path`, on any error (a full
    disk included: one UserError naming `path`) it is removed and `path` is left as it was."""
    path = Path(path)
    tmp = _temp_next_to(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # the body may have written through its own handle: flush that to disk
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except Exception as exc:
        refusal = refused_write(exc)
        if refusal is not None:
            raise write_error(path, refusal) from None
        raise
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only folder cannot have held a temp file in the first place


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_line(path: str | Path, line: str) -> None:
    """Append one line to a log (metrics.jsonl); a refused write is a UserError naming the file. A kill mid-append
    can leave a partial last line: readers of such logs skip an unparsable last line (see read_jsonl)."""
    try:
        with open(path, "a") as f:
            f.write(line.rstrip("\n") + "\n")
    except OSError as exc:
        if exc.errno in WRITE_ERRORS:
            raise write_error(path, exc) from None
        raise


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a JSON-lines log; a partial last line (an append cut by a kill or a full disk) is dropped,
    an unparsable line before it is a UserError naming the file and the line."""
    path = Path(path)
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise UserError(f"{path}: line {number}: not JSON") from None
    return records


def torch_save(obj: Any, path: str | Path) -> None:
    import torch

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a Python file object: a full disk raises OSError(ENOSPC) in its write
            torch.save(obj, f)


def _refused_global(message: str) -> str:
    """The line of torch's weights_only message that names what was refused."""
    for line in message.splitlines():
        if "GLOBAL" in line or "Unsupported" in line:
            return line.strip().rstrip(".")
    return message.strip().splitlines()[0] if message.strip() else "not a plain tensor file"


def torch_load(path: str | Path, what: str = "checkpoint", *, mmap: bool = False, safe_globals=()) -> Any:
    """Read a torch file with weights_only=True: tensors, numbers, strings, lists and dicts only (plus the named
    `safe_globals`, e.g. DeepSpeed's loss-scaler state), so no pickled code from a file ever runs. `mmap` maps the
    file instead of reading it (falls back for files torch cannot map). One-line UserErrors: missing, refused (it
    carries code or other objects), unreadable."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found")
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
            except RuntimeError as exc:  # files of torch < 1.6 cannot be mapped
                if not mmap or "mmap" not in str(exc):
                    raise
                return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(f"{path}: refused: the {what} carries pickled code or objects other than tensors, numbers, "
                        f"strings, lists and dicts ({_refused_global(str(exc))}); only load a file you trust "
                        f"yourself") from None
    except Exception as exc:  # truncated, not a torch file
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(f"{path}: unreadable {what} ({type(exc).__name__}: {first})") from None


def read_json(path: str | Path, what: str = "file", hint: str = "") -> Any:
    """Parse a JSON file; a missing or unparsable one is a one-line UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found{hint}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
