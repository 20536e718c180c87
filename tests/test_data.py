"""Data stage end to end: url list on a loopback server -> img2dataset shards -> stats.json."""
from __future__ import annotations

import io
import json
import os
import tarfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from pipeline.__main__ import main as pipeline_main
from devtools.localserver import serve_directory
from pipeline.data.shards import check_shard, tar_samples

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

GOOD, MISSING, NOT_IMAGE = 24, 4, 3
BIG = 60  # side of the image that max_image_area (2000 px) rejects


def _redirect(target: str):
    def respond(handler):
        handler.send_response(302)
        handler.send_header("Location", target)
        handler.end_headers()
    return respond


def _slow(handler):
    time.sleep(2.5)  # longer than the dataset's 1 s timeout
    try:
        handler.send_response(200)
        handler.end_headers()
    except OSError:
        pass


def _truncated(handler):
    """Promises a whole JPEG, sends half of it, hangs up."""
    buf = io.BytesIO()
    Image.new("RGB", (30, 30), (1, 2, 3)).save(buf, format="JPEG")
    data = buf.getvalue()
    handler.send_response(200)
    handler.send_header("Content-Type", "image/jpeg")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data[: len(data) // 2])


ROUTES = {"/redirect-ok": _redirect("/img1.png"), "/redirect-loop": _redirect("/redirect-loop"),
          "/slow.jpg": _slow, "/truncated.jpg": _truncated}
EXPECTED_FAILED = {"http_404": MISSING, "not_an_image": NOT_IMAGE, "redirect_loop": 1, "timeout": 1,
                   "too_large": 1, "truncated_image": 1,
                   "empty_url": 1, "missing_caption": 1}  # left out by the reader, counted all the same
EXPECTED_OK = GOOD + 1  # the good redirect


def make_site(root: Path) -> list[tuple[str, str]]:
    """Files for the server plus (path, caption) rows: good images, 404s, text served as .jpg, a redirect
    that lands on an image, a redirect loop, a slow reply, a cut-short reply and an oversize image."""
    good = []
    for i in range(GOOD):
        ext = "png" if i % 2 else "jpg"
        Image.new("RGB", (20 + i, 16), (10 * i, 200 - 5 * i, 90)).save(root / f"img{i}.{ext}")
        good.append((f"img{i}.{ext}", f"caption {i}"))
    bad = [(f"missing{i}.jpg", f"gone {i}") for i in range(MISSING)]
    for i in range(NOT_IMAGE):
        (root / f"text{i}.jpg").write_text("<html>this is not an image</html>")
        bad.append((f"text{i}.jpg", f"text {i}"))
    Image.new("RGB", (BIG, BIG), (9, 9, 9)).save(root / "big.jpg")
    bad += [("redirect-ok", "redirected"), ("redirect-loop", "loop"), ("slow.jpg", "slow"),
            ("truncated.jpg", "cut"), ("big.jpg", "big")]
    # spread the failures over the shards, and end on good rows so the last shard is not empty
    return [r for i, g in enumerate(good) for r in ([g] + ([bad[i]] if i < len(bad) else []))]


def write_config(config_dir: Path, name: str, body: dict) -> None:
    (config_dir / "datasets").mkdir(parents=True, exist_ok=True)
    (config_dir / "datasets" / f"{name}.yaml").write_text(yaml.safe_dump(body))


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """One real img2dataset run over 36 urls (25 fetchable, 11 failing for 6 reasons), 10 per shard."""
    repo = tmp_path_factory.mktemp("repo")
    site = repo / "site"
    site.mkdir()
    rows = make_site(site)
    with serve_directory(site, max_seconds=120, routes=ROUTES) as base:
        urls = [f"{base}/{p}" for p, _ in rows] + ["", f"{base}/img0.jpg"]
        table = pa.table({"url": urls, "caption": [c for _, c in rows] + ["a row without a url", "  "]})
        pq.write_table(table, repo / "urls.parquet")
        write_config(repo / "config", "web", {
            "kind": "image_text", "reader": "url_list", "sources": ["urls.parquet"],
            "img2dataset": {"image_size": 16, "resize_mode": "center_crop", "threads": 4,
                            "samples_per_shard": 10, "timeout": 1, "max_image_area": 2000}})
        out = repo / "data" / "web" / "stats.json"
        argv = ["data", "--dataset", "web", "--out", str(out), "--config-dir", str(repo / "config")]
        assert pipeline_main(argv) == 0
        yield {"repo": repo, "out": out, "argv": argv, "base": base, "rows": rows}


def test_failures_counted_by_reason_and_rest_sharded(web):
    stats = json.loads(web["out"].read_text())
    assert stats["kind"] == "image_text" and stats["dataset"] == "web"
    assert stats["input_rows"] == EXPECTED_OK + sum(EXPECTED_FAILED.values())
    assert stats["failed"] == EXPECTED_FAILED
    assert stats["samples"] == EXPECTED_OK
    assert sum(s["samples"] for s in stats["shards"]) == EXPECTED_OK
    assert [s["path"] for s in stats["shards"]] == [f"shards/{i:05d}.tar" for i in range(4)]
    assert stats["img2dataset"]["samples_per_shard"] == 10


def test_shards_hold_images_and_captions(web):
    import webdataset as wds

    stats = json.loads(web["out"].read_text())
    data_dir = web["out"].parent
    urls = [str(data_dir / s["path"]) for s in stats["shards"]]
    captions = set()
    for sample in wds.WebDataset(urls, shardshuffle=False).decode("pil"):
        assert sample["jpg"].size == (16, 16)
        captions.add(sample["txt"])
    assert captions == {f"caption {i}" for i in range(GOOD)} | {"redirected"}


def test_truncated_tar_detected_and_redone(web):
    shards = web["out"].parent / "shards"
    tar = shards / "00001.tar"
    before = tar_samples(tar)
    data = tar.read_bytes()
    tar.write_bytes(data[: len(data) // 2])
    assert check_shard(shards, 1).problem is not None
    stamp = (shards / "00000.tar").stat().st_mtime_ns
    assert pipeline_main(web["argv"]) == 0  # the fixture's server is still up: same urls, same url list
    assert (shards / "00000.tar").stat().st_mtime_ns == stamp  # good shards kept, only 00001 fetched again
    assert tar_samples(tar) == before
    assert json.loads(web["out"].read_text())["samples"] == EXPECTED_OK


def test_tar_cut_at_member_boundary_is_detected(tmp_path):
    path = tmp_path / "a.tar"
    with tarfile.open(path, "w") as tar:
        for name in ("k1.jpg", "k1.txt"):
            src = tmp_path / name
            src.write_bytes(b"x" * 600)
            tar.add(src, arcname=name)
    assert tar_samples(path) == 1
    data = path.read_bytes()
    path.write_bytes(data[: 512 + 1024])  # header + padded data of the first member, no end marker
    with pytest.raises(tarfile.ReadError):
        tar_samples(path)


@pytest.mark.parametrize("body, needle", [
    ({"kind": "image_text", "reader": "url_list", "colour": 1}, "colour: unknown key"),
    ({"kind": "image_text", "reader": "nope"}, "reader"),
    ({"kind": "image_text", "reader": "url_list", "img2dataset": {"threads": 0}}, "img2dataset.threads"),
    ({"kind": "image_text", "reader": "url_list", "sources": ["nothing.parquet"]}, "nothing.parquet: file not found"),
    ({"kind": "image_text", "reader": "url_list"}, "sources"),
    ({"kind": "classification", "reader": "url_list", "classnames": "x"}, "does not make classification"),
])
def test_bad_dataset_config_one_line_error(tmp_path, capsys, body, needle):
    write_config(tmp_path / "config", "bad", body)
    argv = ["data", "--dataset", "bad", "--out", str(tmp_path / "data" / "bad" / "stats.json"),
            "--config-dir", str(tmp_path / "config")]
    assert pipeline_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "data" / "bad" / "stats.json").exists()


def test_unknown_dataset_names_known_ones(tmp_path, capsys):
    write_config(tmp_path / "config", "exists", {"kind": "image_text", "reader": "url_list"})
    argv = ["data", "--dataset", "nope", "--out", str(tmp_path / "s.json"), "--config-dir", str(tmp_path / "config")]
    assert pipeline_main(argv) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "exists" in err


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_tar_walker_reads_long_names_and_rejects_bad_headers(tmp_path, fmt):
    path = tmp_path / "a.tar"
    names = ["d" * 60 + "/" + "e" * 50 + "/k1.jpg", "k1.txt", "k2.jpg", "k2.json", "k3.txt"]
    with tarfile.open(path, "w", format=fmt) as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 700
            tar.addfile(info, io.BytesIO(b"z" * 700))
    assert tar_samples(path) == 2
    data = bytearray(path.read_bytes())
    data[512 * 4 + 3] ^= 0xFF  # inside a later header (or its data: then the count still holds)
    path.write_bytes(bytes(data))
    try:
        assert tar_samples(path) == 2
    except tarfile.ReadError as exc:
        assert "checksum" in str(exc)
    data[0] ^= 0xFF  # the first header's name: always a checksum error
    path.write_bytes(bytes(data))
    with pytest.raises(tarfile.ReadError, match="checksum"):
        tar_samples(path)
