"""A full disk or a read-only results folder: one line naming the path, the previous file kept, no temp file left,
and a rerun with space resumes from what was whole. The file systems are small tmpfs mounts made by the test (root
only; skipped elsewhere, where a chmod'ed folder still checks the read-only case)."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from _train_fixtures import write_experiment, write_shards
from pipeline.errors import UserError
from pipeline.utils.io import append_line, read_jsonl, torch_save, write_json, write_text


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@contextlib.contextmanager
def tmpfs(folder: Path, size: str):
    """`folder` as a tmpfs of `size` (remount it with `resize(folder, size)` or `read_only(folder)`)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)):
        pytest.skip("needs root and tmpfs mounts")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def resize(folder: Path, size: str) -> None:
    assert _mount("-o", f"remount,size={size}", str(folder))


def read_only(folder: Path) -> None:
    assert _mount("-o", "remount,ro", str(folder))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*.tmp"))


def test_full_disk_keeps_the_previous_file_and_no_temp(tmp_path):
    with tmpfs(tmp_path / "disk", "256k") as disk:
        target = disk / "out" / "result.json"
        write_json(target, {"old": 1})
        with pytest.raises(UserError) as exc_info:
            write_json(target, {"values": list(range(200_000))})  # ~1.5 MB of JSON on a 256 KiB disk
        assert str(exc_info.value) == f"{target}: cannot write (no space left on the device); nothing was written there"
        assert json.loads(target.read_text()) == {"old": 1} and leftovers(disk) == []
        with pytest.raises(UserError, match=r"weights.pt: cannot write \(no space left on the device\)"):
            torch_save({"w": torch.zeros(200_000)}, disk / "weights.pt")  # 800 KB of tensor
        assert not (disk / "weights.pt").exists() and leftovers(disk) == []
        log = disk / "metrics.jsonl"
        append_line(log, json.dumps({"step": 1}))
        with pytest.raises(UserError, match=r"metrics.jsonl: cannot write \(no space left"):
            append_line(log, json.dumps({"step": 2, "pad": "x" * 400_000}))
        assert read_jsonl(log) == [{"step": 1}]  # the cut last line is dropped, not trusted


def test_read_only_folder_is_one_line(tmp_path):
    with tmpfs(tmp_path / "disk", "1m") as disk:
        write_text(disk / "table.md", "old\n")
        read_only(disk)
        for path in (disk / "table.md", disk / "new" / "stats.json"):
            with pytest.raises(UserError) as exc_info:
                write_text(path, "new\n")
            assert str(exc_info.value) == f"{path}: cannot write (read-only file system); nothing was written there"
        assert (disk / "table.md").read_text() == "old\n" and not (disk / "new").exists()


def test_read_only_folder_by_permissions(tmp_path):
    """The same error through a chmod'ed folder (for a user that is not root: root ignores permissions)."""
    if os.geteuid() == 0:
        pytest.skip("root writes into a read-only folder anyway; the tmpfs test covers root")
    folder = tmp_path / "results"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(UserError, match=r"x.json: cannot write \(permission denied\)"):
            write_json(folder / "x.json", {})
    finally:
        folder.chmod(0o755)


def test_pretrain_on_a_full_disk_fails_in_one_line_and_resumes_when_there_is_space(tmp_path, capsys):
    """The stage as the rule runs it (in-process: one process, no torchrun): the first resumable checkpoint does
    not fit, the stage exits 2 with one line naming it, nothing half-written stays; with space the same command
    completes from scratch."""
    from pipeline.__main__ import main
    from pipeline.train import checkpoint

    stats = write_shards(tmp_path / "data" / "tiny", shards=2, per_shard=8)
    exp = write_experiment(tmp_path / "config", epochs=1, checkpoint_every=1, log_every=1)
    with tmpfs(tmp_path / "results", "3m") as results:  # a checkpoint of the tiny model + AdamW is ~20 MB
        out = results / "tiny" / "pretrain" / "final.pt"
        argv = ["pretrain", "--experiment", str(exp), "--train-data", str(stats), "--out", str(out)]
        assert main(argv) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        first = out.parent / "checkpoints" / "step_00000001.pt"
        assert err == [f"error: {first}: cannot write (no space left on the device); nothing was written there"]
        assert not out.exists() and checkpoint.list_checkpoints(first.parent) == [] and leftovers(results) == []
        resize(results, "200m")
        assert main(argv) == 0
        assert [r["step"] for r in read_jsonl(out.parent / "metrics.jsonl")] == [1, 2]
        assert torch.load(out, weights_only=True)["step"] == 2 and leftovers(results) == []
