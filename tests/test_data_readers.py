"""Readers (demo, url_list, imagefolder), demo subset builder, captions and failure reasons; no img2dataset."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.config import dataset_from_dict
from pipeline.data.captions import CAPTION_PHRASINGS, CLASS_SYNONYMS, CLASSNAMES, caption_for
from pipeline.data.demo_subset import build_subset, read_idx
from pipeline.data.failures import failure_reason, fold_status
from pipeline.data.readers import READERS, UrlList, get_reader
from pipeline.errors import UserError


def dataset(**raw):
    raw.setdefault("kind", "image_text")
    return dataset_from_dict(raw, raw.pop("name", "t"), "test.yaml")


def test_demo_reader_image_text_writes_pngs_urls_and_varied_captions(tmp_path):
    ds = dataset(reader="fashion_mnist_demo", subset=40)
    result = get_reader("fashion_mnist_demo", "image_text").fn(dataset=ds, data_dir=tmp_path, base_dir=tmp_path)
    assert isinstance(result, UrlList) and result.rows == result.input_rows == 40 and result.dropped == {}
    assert result.path == tmp_path / "source" / "urls.parquet"
    table = pq.read_table(result.path)
    assert table.column_names == ["url", "caption", "key"]
    urls = table.column("url").to_pylist()
    assert all(u.startswith("file://") for u in urls)
    first = Path(urls[0][len("file://"):])
    assert first.parent == (tmp_path / "source" / "images").resolve() and first.is_file()
    assert Image.open(first).size == (28, 28)
    assert len(list((tmp_path / "source" / "images").glob("*.png"))) == 40
    captions = table.column("caption").to_pylist()
    assert len(set(captions)) >= 20  # phrasing and synonym vary per image
    again = get_reader("fashion_mnist_demo", "image_text").fn(dataset=ds, data_dir=tmp_path, base_dir=tmp_path)
    assert pq.read_table(again.path).column("caption").to_pylist() == captions  # seeded: reproducible


def test_demo_reader_classification_writes_imagefolder(tmp_path):
    ds = dataset(kind="classification", reader="fashion_mnist_demo", split="test", classnames="fashion_mnist",
                 subset=30)
    stats = get_reader("fashion_mnist_demo", "classification").fn(dataset=ds, data_dir=tmp_path, base_dir=tmp_path)
    assert stats == {"samples": 30, "classes": list(CLASSNAMES)}
    folders = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert folders == [f"{i:03d}" for i in range(10)]
    assert sum(len(list((tmp_path / "images" / f).glob("*.png"))) for f in folders) == 30


def test_captions_cover_every_class_and_phrasing():
    assert len(CAPTION_PHRASINGS) >= 8 and len(CLASS_SYNONYMS) == len(CLASSNAMES) == 10
    texts = {caption_for(label, i) for label in range(10) for i in range(50)}
    assert len(texts) > 200
    assert all("{" not in t for t in texts)
    assert not any(p.lower().startswith("a photo of") for p in CAPTION_PHRASINGS)


def test_url_list_reader_reads_csv_and_parquet_in_order(tmp_path):
    (tmp_path / "a.csv").write_text("url,caption\nhttp://x/1.jpg,one\nhttp://x/2.jpg,two\n,empty url\n")
    (tmp_path / "b.tsv").write_text("caption\turl\nthree\thttp://x/3.jpg\n")
    ds = dataset(reader="url_list", sources=["a.csv", "b.tsv"], subset=3)
    result = READERS["url_list"].fn(dataset=ds, data_dir=tmp_path / "d", base_dir=tmp_path)
    table = pq.read_table(result.path)
    assert table.column("caption").to_pylist() == ["one", "two", "three"]
    assert result.rows == 3


def test_url_list_reader_names_missing_column(tmp_path):
    (tmp_path / "a.csv").write_text("link,text\nhttp://x/1.jpg,one\n")
    ds = dataset(reader="url_list", sources=["a.csv"])
    with pytest.raises(UserError, match=r"a.csv: no column 'url'"):
        READERS["url_list"].fn(dataset=ds, data_dir=tmp_path / "d", base_dir=tmp_path)


def test_imagefolder_reader_links_and_counts(tmp_path):
    for cls, n in (("cat", 2), ("dog", 3)):
        (tmp_path / "src" / cls).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (4, 4)).save(tmp_path / "src" / cls / f"{i}.png")
    ds = dataset(kind="classification", reader="imagefolder", sources=["src"], classnames="pets")
    stats = get_reader("imagefolder", "classification").fn(dataset=ds, data_dir=tmp_path / "d", base_dir=tmp_path)
    assert stats == {"samples": 5, "classes": ["cat", "dog"]}
    assert (tmp_path / "d" / "images").resolve() == (tmp_path / "src").resolve()


def _idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_demo_subset_is_balanced_first_per_class(tmp_path):
    labels = np.arange(60) % 10
    images = np.arange(60 * 4, dtype=np.uint8).reshape(60, 2, 2)
    for prefix in ("train", "t10k"):
        _idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        _idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    out = build_subset(tmp_path, train_per_class=3, test_per_class=2)
    assert out["train_images"].shape == (30, 2, 2) and out["test_labels"].shape == (20,)
    assert np.array_equal(out["train_images"], images[:30]) and np.bincount(out["test_labels"]).tolist() == [2] * 10
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x01" + b"\x00" * 8))
    with pytest.raises(UserError, match="bad magic"):
        read_idx(tmp_path / "bad.gz")


@pytest.mark.parametrize("message, reason", [
    ("HTTP Error 404: Not Found", "http_404"),
    ("HTTP Error 503: Service Unavailable", "http_503"),
    ("<urlopen error timed out>", "timeout"),
    ("The read operation timed out", "timeout"),
    ("Image decoding error", "not_an_image"),
    ("image area too large", "too_large"),
    ("IncompleteRead(100 bytes read, 900 more expected)", "truncated_image"),
    ("HTTP Error 302: The HTTP server returned a redirect error that would lead to an infinite loop.\n"
     "The last 30x error message was:\nFound", "redirect_loop"),
    ("<urlopen error [Errno 111] Connection refused>", "connection_refused"),
    ("<urlopen error [Errno 2] No such file or directory: '/x.png'>", "missing_file"),
    ("something new", "other"),
])
def test_failure_reasons(message, reason):
    assert failure_reason(message) == reason


def test_fold_status_drops_success_and_merges():
    assert fold_status({"success": 5, "HTTP Error 404: Not Found": 2, "HTTP Error 404: Gone": 1}) == {"http_404": 3}


def test_url_list_writer_parts_subset_and_layout(tmp_path):
    from pipeline.data.urls import UrlListWriter, url_table

    def chunk(start, n):
        return url_table([f"http://x/{i}" if i % 7 else "" for i in range(start, start + n)],
                         [f"c{i}" for i in range(start, start + n)], first_row=start)

    writer = UrlListWriter(tmp_path, samples_per_shard=4, subset=17, target_part_rows=10)
    assert writer.add(chunk(0, 12)) and not writer.add(chunk(12, 30))  # subset reached in the 2nd chunk
    url_list = writer.close()
    assert url_list.parts == (8, 8, 1) and url_list.rows == 17  # parts hold whole shards (8 = 2 x 4)
    assert url_list.path == tmp_path / "source" / "urls"
    captions = [c for p in sorted(url_list.path.glob("*.parquet")) for c in pq.read_table(p)["caption"].to_pylist()]
    assert len(captions) == 17 and "c0" not in captions and "c7" not in captions  # empty urls dropped ...
    assert url_list.dropped == {"empty_url": 3} and url_list.input_rows == 20  # ... and counted (0, 7, 14)
    small = UrlListWriter(tmp_path, samples_per_shard=4)
    small.add(chunk(1, 3))
    again = small.close()
    assert again.path == tmp_path / "source" / "urls.parquet" and not url_list.path.exists()


def test_distributor_without_its_package_is_one_line_error():
    import importlib.util

    from pipeline.data.shards import connect_distributor

    connect_distributor("multiprocessing")
    for name in ("ray", "pyspark"):
        if importlib.util.find_spec(name) is None:
            with pytest.raises(UserError, match=f"img2dataset.distributor: {name} is not installed"):
                connect_distributor(name)


def test_empty_url_list_is_a_user_error(tmp_path):
    from pipeline.data.build import build_dataset

    (tmp_path / "a.csv").write_text("url,caption\n,no url here\n")
    ds = dataset(reader="url_list", sources=["a.csv"])
    with pytest.raises(UserError, match="no rows with a url"):
        build_dataset(dataset=ds, data_dir=tmp_path / "d", base_dir=tmp_path, stats_path=tmp_path / "d" / "s.json")
    assert not (tmp_path / "d" / "s.json").exists()
