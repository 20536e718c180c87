"""The data stage on img2dataset's ray distributor, on a real local Ray cluster (head node started here, as
the SLURM recipe in docs/data.md starts one per allocation), against the loopback url server: stats.json
has the same counts as the multiprocessing run of the same url list."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

from devtools.localserver import serve_directory

ROWS = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_head(tmp: Path) -> tuple[subprocess.Popen, str]:
    """`ray start --head --block` in its own session (so it and its daemons can be stopped as one)."""
    port = free_port()
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", RAY_USAGE_STATS_ENABLED="0")
    head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", f"--port={port}",
                             "--num-cpus=2", "--include-dashboard=false", "--object-store-memory=100000000",
                             f"--temp-dir={tmp}", "--block"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and head.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return head, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    stop(head)
    raise RuntimeError("the ray head did not come up")


def stop(head: subprocess.Popen) -> None:
    head.send_signal(signal.SIGTERM)  # ray start --block drains and stops the daemons it started
    try:
        head.wait(timeout=60)
    finally:
        try:
            os.killpg(head.pid, signal.SIGKILL)  # whatever of its session is left
        except ProcessLookupError:
            pass


def data_stage(root: Path, distributor: str, env: dict) -> dict:
    config = root / f"config_{distributor}"
    (config / "datasets").mkdir(parents=True)
    (config / "datasets" / "web.yaml").write_text(yaml.safe_dump({
        "kind": "image_text", "reader": "url_list", "sources": [str(root / "urls.csv")],
        "img2dataset": {"image_size": 16, "threads": 4, "samples_per_shard": 6, "distributor": distributor}}))
    out = root / f"data_{distributor}" / "web" / "stats.json"
    done = subprocess.run([sys.executable, "-m", "pipeline", "data", "--dataset", "web", "--out", str(out),
                           "--config-dir", str(config)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_ray_distributor_gives_the_counts_of_multiprocessing(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    for i in range(ROWS):
        Image.new("RGB", (20 + i, 16), (10 * i, 90, 200)).save(site / f"{i}.jpg")
    (site / "page.jpg").write_text("<html>not an image</html>")
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: ray's unix sockets live under it
    head, address = ray_head(ray_tmp)
    try:
        with serve_directory(site, max_seconds=300) as base:
            rows = [f"{base}/{i}.jpg,caption {i}" for i in range(ROWS)]
            rows += [f"{base}/missing.jpg,gone", f"{base}/page.jpg,html", ",no url"]
            (tmp_path / "urls.csv").write_text("url,caption\n" + "\n".join(rows) + "\n")
            local = data_stage(tmp_path, "multiprocessing", env)
            cluster = data_stage(tmp_path, "ray", dict(env, RAY_ADDRESS=address))
    finally:
        stop(head)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    keys = ("samples", "input_rows", "failed", "shards")
    assert {k: cluster[k] for k in keys} == {k: local[k] for k in keys}
    assert local["samples"] == ROWS and local["input_rows"] == ROWS + 3
    assert local["failed"] == {"empty_url": 1, "http_404": 1, "not_an_image": 1}
    assert cluster["img2dataset"]["distributor"] == "ray"
