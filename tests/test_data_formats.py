"""Readers of the published metadata formats, on small real-format fixtures served from 127.0.0.1."""
from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest
import yaml

from _data_fixtures import (make_images, write_cc3m, write_cc12m, write_coco, write_laion, write_redcaps,
                            write_yfcc)
from pipeline.__main__ import main as pipeline_main
from pipeline.config import dataset_from_dict
from devtools.localserver import serve_directory
from pipeline.data.readers import get_reader
from pipeline.data.readers.yfcc import clean_text
from pipeline.errors import UserError

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
N = 8


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    names = make_images(root, N)
    with serve_directory(root, max_seconds=180) as base:
        yield {"root": root, "base": base, "names": names}


def read(tmp_path, reader, sources, **extra):
    ds = dataset_from_dict({"kind": "image_text", "reader": reader, "sources": sources, **extra}, reader, "t.yaml")
    url_list = get_reader(reader, "image_text").fn(dataset=ds, data_dir=tmp_path / "data", base_dir=tmp_path)
    return url_list, pq.read_table(url_list.path)


def test_cc3m_caption_then_url(tmp_path, site):
    captions = write_cc3m(tmp_path / "Train_GCC-training.tsv", site["base"], site["names"])
    url_list, table = read(tmp_path, "cc3m", ["Train_GCC-training.tsv"])
    assert table.column("caption").to_pylist() == captions
    assert table.column("url").to_pylist() == [f"{site['base']}/{n}" for n in site["names"]]
    assert table.column("key").to_pylist()[:2] == ["0_0", "0_1"] and url_list.rows == N


def test_cc12m_url_then_caption_quotes_verbatim(tmp_path, site):
    captions = write_cc12m(tmp_path / "cc12m.tsv", site["base"], site["names"])
    _, table = read(tmp_path, "cc12m", ["cc12m.tsv"], subset=5)
    assert table.column("caption").to_pylist() == captions[:5]


def test_redcaps_merges_subreddits_and_picks_caption(tmp_path, site):
    anns = write_redcaps(tmp_path / "annotations", site["base"], site["names"])
    _, processed = read(tmp_path, "redcaps", ["annotations"])
    by_key = {a["image_id"]: a for a in anns}
    assert sorted(processed.column("key").to_pylist()) == sorted(by_key)
    for key, cap, sub in zip(*(processed.column(c).to_pylist() for c in ("key", "caption", "subreddit"))):
        assert cap == by_key[key]["caption"] and sub == by_key[key]["subreddit"]
    _, raw = read(tmp_path, "redcaps", ["annotations/cats_2020.json"], redcaps_caption="raw")
    assert set(raw.column("caption").to_pylist()) == {a["raw_caption"] for a in anns if a["subreddit"] == "cats"}


def test_yfcc15m_joins_subset_and_cleans_captions(tmp_path, site):
    expected = write_yfcc(tmp_path / "yfcc", site["base"], site["names"])
    _, table = read(tmp_path, "yfcc15m", ["yfcc/yfcc100m_subset_data.tsv", "yfcc/yfcc100m_dataset.bz2"])
    got = dict(zip((int(k) for k in table.column("key").to_pylist()), table.column("caption").to_pylist()))
    assert got == expected  # not-in-subset photo and the video are dropped
    assert "title" in table.column_names and "description" in table.column_names


def test_yfcc_clean_text():
    assert clean_text("Hello+%26+bye+%3Ci%3Ex%3C%2Fi%3E+www.a.com/b") == "Hello & bye x"


def test_coco_one_sample_per_image_with_all_captions(tmp_path, site):
    expected = write_coco(tmp_path / "captions_train2017.json", site["base"], site["names"])
    _, table = read(tmp_path, "coco", ["captions_train2017.json"])
    keys = [int(k) for k in table.column("key").to_pylist()]
    assert keys == sorted(expected)  # image 999 has no caption: left out
    assert [json.loads(c) for c in table.column("captions").to_pylist()] == [expected[k] for k in keys]
    assert table.column("caption").to_pylist() == [expected[k][0] for k in keys]
    _, local = read(tmp_path, "coco", ["captions_train2017.json"], image_root=str(site["root"] / "img"))
    assert local.column("url").to_pylist()[0] == (site["root"] / "img" / "0.jpg").as_uri()


def test_laion400m_parquet_parts(tmp_path, site):
    texts = write_laion(tmp_path / "laion400m-meta", site["base"], site["names"])
    _, table = read(tmp_path, "laion400m", ["laion400m-meta"])
    assert table.column("caption").to_pylist() == texts
    assert table.column("key").to_pylist() == [str(7000 + i) for i in range(N)]


def _bad_rows(tmp_path, reader, base, names):
    """Source files of `reader` with N good rows plus rows it must leave out; (sources, input rows, drops)."""
    import bz2

    import pyarrow as pa

    if reader in ("cc3m", "cc12m"):
        write = write_cc3m if reader == "cc3m" else write_cc12m
        write(tmp_path / "a.tsv", base, names)
        extra = ["broken line without a tab", f"\t{base}/x.jpg" if reader == "cc3m" else f"{base}/x.jpg\t",
                 "no url\t" if reader == "cc3m" else "\tno url"]
        with open(tmp_path / "a.tsv", "a") as f:
            f.write("\n".join(extra) + "\n")
        return ["a.tsv"], N + 3, {"malformed_line": 1, "missing_caption": 1, "empty_url": 1}
    if reader == "redcaps":
        anns = write_redcaps(tmp_path / "ann", base, names)
        more = [{"image_id": "x1", "caption": "no url here", "subreddit": "cats"},
                {"image_id": "x2", "url": f"{base}/{names[0]}", "caption": " ", "subreddit": "cats"},
                dict(anns[0])]  # a second file listing an image again
        (tmp_path / "ann" / "zzz_2021.json").write_text(json.dumps({"annotations": more}))
        return ["ann"], N + 3, {"empty_url": 1, "missing_caption": 1, "duplicate_key": 1}
    if reader == "yfcc15m":
        write_yfcc(tmp_path / "y", base, names)
        from _data_fixtures import yfcc_row

        meta = bz2.decompress((tmp_path / "y" / "yfcc100m_dataset.bz2").read_bytes()).decode()
        meta += yfcc_row(90, 6000, f"{base}/{names[1]}", "", "")  # neither title nor description
        (tmp_path / "y" / "yfcc100m_dataset.bz2").write_bytes(bz2.compress(meta.encode()))
        with open(tmp_path / "y" / "yfcc100m_subset_data.tsv", "a") as f:
            f.write("91\t6000\th\n92\t7000\th\n93\t1000\th\nbroken\n")  # 7000: not in metadata; 1000 again
        return (["y/yfcc100m_subset_data.tsv", "y/yfcc100m_dataset.bz2"], N + 5,
                {"not_a_photo": 1, "missing_caption": 1, "not_in_metadata": 1, "duplicate_key": 1,
                 "malformed_line": 1})
    if reader == "coco":
        write_coco(tmp_path / "c.json", base, names)
        return ["c.json"], N + 1, {"missing_caption": 1}
    if reader == "laion400m":
        write_laion(tmp_path / "l", base, names)
        pq.write_table(pa.table({"SAMPLE_ID": pa.array([9001, 9002, 7000], pa.int64()),
                                 "URL": [None, f"{base}/{names[0]}", f"{base}/{names[0]}"],
                                 "TEXT": ["no url", None, "id 7000 again"]}), tmp_path / "l" / "part-99999.parquet")
        return ["l"], N + 3, {"empty_url": 1, "missing_caption": 1, "duplicate_key": 1}
    (tmp_path / "u.csv").write_text("url,caption\n" + "".join(f"{base}/{n},c {n}\n" for n in names)
                                    + ",no url\nhttp://x/y.jpg,\n")
    return ["u.csv"], N + 2, {"empty_url": 1, "missing_caption": 1}


@pytest.mark.parametrize("reader", ["cc3m", "cc12m", "redcaps", "yfcc15m", "coco", "laion400m", "url_list"])
def test_every_input_row_is_accounted_for(tmp_path, site, reader):
    """samples + failed = input rows: every row a reader leaves out is counted, by reason."""
    sources, rows, drops = _bad_rows(tmp_path, reader, site["base"], site["names"])
    url_list, table = read(tmp_path, reader, sources)
    assert url_list.dropped == drops
    assert url_list.input_rows == rows and table.num_rows == url_list.rows == N


@pytest.mark.parametrize("reader, sources, needle", [
    ("cc3m", ["nothing.tsv"], "nothing.tsv: file not found"),
    ("yfcc15m", ["ids.tsv"], "needs the subset id list"),
    ("coco", ["bad.json"], "not a COCO captions file"),
    ("laion400m", ["bad.json"], "not a parquet file"),
])
def test_format_errors_are_one_line(tmp_path, reader, sources, needle):
    (tmp_path / "ids.tsv").write_text("1\t2\t3\n")
    (tmp_path / "bad.json").write_text('{"images": []}')
    with pytest.raises(UserError, match=needle) as info:
        read(tmp_path, reader, sources)
    assert "\n" not in str(info.value)


def test_coco_end_to_end_keeps_captions_in_shards(tmp_path, site, monkeypatch):
    """Through img2dataset: extra columns (all captions) land in each sample's json, and a url list in
    several part files gives shards numbered as our stats expect."""
    import webdataset as wds

    monkeypatch.setattr("pipeline.data.urls.TARGET_PART_ROWS", 4)

    expected = write_coco(tmp_path / "captions.json", site["base"], site["names"])
    (tmp_path / "config" / "datasets").mkdir(parents=True)
    (tmp_path / "config" / "datasets" / "coco_t.yaml").write_text(yaml.safe_dump({
        "kind": "image_text", "reader": "coco", "sources": ["captions.json"],
        "img2dataset": {"image_size": 16, "threads": 4, "samples_per_shard": 2}}))
    out = tmp_path / "data" / "coco_t" / "stats.json"
    assert pipeline_main(["data", "--dataset", "coco_t", "--out", str(out),
                          "--config-dir", str(tmp_path / "config")]) == 0
    stats = json.loads(out.read_text())
    assert stats["samples"] == N and len(stats["shards"]) == N // 2
    assert stats["failed"] == {"missing_caption": 1} and stats["input_rows"] == N + 1  # image 999: no caption
    assert len(list((out.parent / "source" / "urls").glob("part-*.parquet"))) == 2
    seen = {}
    for sample in wds.WebDataset([str(out.parent / s["path"]) for s in stats["shards"]], shardshuffle=False):
        meta = json.loads(sample["json"])
        seen[meta["url"]] = json.loads(meta["captions"])
        assert sample["txt"].decode() == seen[meta["url"]][0]
    assert sorted(seen.values()) == sorted(expected.values())
