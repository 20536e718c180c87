"""A data stage killed mid-download and run again keeps its finished shards and fetches only the rest."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import yaml

from _data_fixtures import make_images
from pipeline.__main__ import main as pipeline_main
from devtools.localserver import serve_directory

ROWS, PER_SHARD = 24, 4


def shard_urls(tar_path: Path) -> list[str]:
    with tarfile.open(tar_path) as tar:
        return [json.load(tar.extractfile(m))["url"] for m in tar.getmembers() if m.name.endswith(".json")]


def test_killed_download_resumes_without_loss_or_duplicates(tmp_path):
    names = make_images(tmp_path / "site", ROWS)
    (tmp_path / "urls.csv").write_text("url,caption\n")  # filled in once the port is known
    (tmp_path / "config" / "datasets").mkdir(parents=True)
    (tmp_path / "config" / "datasets" / "inc.yaml").write_text(yaml.safe_dump({
        "kind": "image_text", "reader": "url_list", "sources": ["urls.csv"],
        "img2dataset": {"image_size": 16, "threads": 1, "processes": 1, "samples_per_shard": PER_SHARD}}))
    out = tmp_path / "data" / "inc" / "stats.json"
    argv = ["data", "--dataset", "inc", "--out", str(out), "--config-dir", str(tmp_path / "config")]
    shards = out.parent / "shards"
    with serve_directory(tmp_path / "site", max_seconds=150, delay=0.15) as base:
        (tmp_path / "urls.csv").write_text("url,caption\n" + "".join(f"{base}/{n},cap {n}\n" for n in names))
        env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", *argv], env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 90
            while len(list(shards.glob("*_stats.json"))) < 2 and time.time() < deadline and proc.poll() is None:
                time.sleep(0.05)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group: main process, pool worker, logger
            proc.wait()
        done = {p.name[:5]: (shards / f"{p.name[:5]}.tar").stat().st_mtime_ns for p in shards.glob("*_stats.json")}
        assert 2 <= len(done) < ROWS // PER_SHARD, f"kill did not land mid-way ({len(done)} shards done)"
        assert not out.exists()

        assert pipeline_main(argv) == 0

    stats = json.loads(out.read_text())
    assert stats["samples"] == ROWS and stats["failed"] == {}
    assert [s["path"] for s in stats["shards"]] == [f"shards/{i:05d}.tar" for i in range(ROWS // PER_SHARD)]
    for name, mtime in done.items():
        assert (shards / f"{name}.tar").stat().st_mtime_ns == mtime, f"finished shard {name} was fetched again"
    urls = [u for s in stats["shards"] for u in shard_urls(out.parent / s["path"])]
    assert len(urls) == ROWS and len(set(urls)) == ROWS  # nothing lost, nothing twice
