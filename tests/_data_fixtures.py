"""Tiny files in each published metadata format (CC3M, CC12M, RedCaps, YFCC100M + OpenAI subset, COCO,
LAION-400M), written the way the releases lay them out, with urls pointing at a loopback server."""
from __future__ import annotations

import bz2
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image


def make_images(root: Path, count: int) -> list[str]:
    """`count` small JPEGs under root/img; returns their paths relative to root."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        Image.new("RGB", (24 + i, 20), (20 * i % 256, 100, 200 - 10 * i % 200)).save(root / "img" / f"{i}.jpg")
        names.append(f"img/{i}.jpg")
    return names


def write_cc3m(path: Path, base: str, names: list[str]) -> list[str]:
    captions = [f"actor attends the premiere of film number {i}" for i in range(len(names))]
    path.write_text("".join(f"{c}\t{base}/{n}\n" for c, n in zip(captions, names)))
    return captions


def write_cc12m(path: Path, base: str, names: list[str]) -> list[str]:
    captions = [f'<PERSON> wearing a "red" hat, photo {i}' for i in range(len(names))]  # quotes stay verbatim
    path.write_text("".join(f"{base}/{n}\t{c}\n" for c, n in zip(captions, names)))
    return captions


def write_redcaps(folder: Path, base: str, names: list[str]) -> list[dict]:
    """Two subreddit files, as in redcaps_v1.0_annotations/annotations/<subreddit>_<year>.json."""
    folder.mkdir(parents=True, exist_ok=True)
    anns = [{"image_id": f"id{i:03d}", "author": f"user{i}", "url": f"{base}/{n}",
             "raw_caption": f"My Cat #{i} sleeping 😺", "caption": f"my cat # {i} sleeping",
             "subreddit": "cats" if i % 2 else "itookapicture", "score": i, "created_utc": 1.5e9 + i,
             "permalink": f"/r/x/comments/{i}/"} for i, n in enumerate(names)]
    for sub in ("cats", "itookapicture"):
        part = [a for a in anns if a["subreddit"] == sub]
        (folder / f"{sub}_2020.json").write_text(json.dumps(
            {"info": {"subreddit": sub, "year": 2020}, "annotations": part}))
    return anns


def yfcc_row(line: int, photo_id: int, url: str, title: str, desc: str, marker: str = "0") -> str:
    """One line of the 25-column YFCC100M metadata release."""
    fields = [str(line), str(photo_id), f"hash{photo_id}", "12345@N00", "nick", "2010-01-01 00:00:00.0",
              "1262304000", "Canon+EOS", title, desc, "tag1,tag2", "", "", "", "",
              f"http://www.flickr.com/photos/x/{photo_id}/", url, "Attribution License",
              "http://creativecommons.org/licenses/by/2.0/", "1", "2", "abc", "def", "jpg", marker]
    assert len(fields) == 25
    return "\t".join(fields) + "\n"


def write_yfcc(folder: Path, base: str, names: list[str]) -> dict[int, str]:
    """Metadata (bz2) for len(names) + 2 photos, subset list naming all but one; returns id -> expected caption."""
    folder.mkdir(parents=True, exist_ok=True)
    lines, subset, expected = [], [], {}
    for i, n in enumerate(names):
        pid = 1000 + i
        title = f"Sunset+at+the+beach+{i}" if i % 3 else ""
        desc = f"Taken+from+%3Cb%3Eour%3C%2Fb%3E+hotel+<a+href=\"http://x.com\">link</a>+see+http://flickr.com/{i}"
        lines.append(yfcc_row(i, pid, f"{base}/{n}", title, desc))
        subset.append(f"{i}\t{pid}\thash{pid}\n")
        clean_desc = "Taken from our hotel link see"
        expected[pid] = f"Sunset at the beach {i}. {clean_desc}" if title else clean_desc
    lines.append(yfcc_row(len(names), 5000, f"{base}/missing.jpg", "not+in+subset", ""))
    lines.append(yfcc_row(len(names) + 1, 5001, f"{base}/video.mp4", "a+video", "", marker="1"))
    subset.append(f"{len(names) + 1}\t5001\thash5001\n")  # in the subset but a video: dropped
    (folder / "yfcc100m_dataset.bz2").write_bytes(bz2.compress("".join(lines).encode()))
    (folder / "yfcc100m_subset_data.tsv").write_text("".join(subset))
    return expected


def write_coco(path: Path, base: str, names: list[str]) -> dict[int, list[str]]:
    images = [{"id": 100 + i, "file_name": n.split("/")[-1], "coco_url": f"{base}/{n}", "width": 24 + i,
               "height": 20, "license": 1} for i, n in enumerate(names)]
    images.append({"id": 999, "file_name": "nocap.jpg", "coco_url": f"{base}/nocap.jpg", "width": 1, "height": 1})
    anns, expected = [], {}
    for i in range(len(names)):
        texts = [f"A dog number {i} runs.", f"  a  brown dog {i} "]
        expected[100 + i] = [" ".join(t.split()) for t in texts]
        for j, t in enumerate(texts):
            anns.append({"id": 10 * i + j, "image_id": 100 + i, "caption": t})
    path.write_text(json.dumps({"info": {}, "licenses": [], "images": images[::-1], "annotations": anns[::-1]}))
    return expected


def write_laion(folder: Path, base: str, names: list[str]) -> list[str]:
    """Two part files with the release's columns."""
    folder.mkdir(parents=True, exist_ok=True)
    half = len(names) // 2
    texts = [f"laion text {i}" for i in range(len(names))]
    for part, rows in enumerate((range(0, half), range(half, len(names)))):
        rows = list(rows)
        pq.write_table(pa.table({
            "SAMPLE_ID": pa.array([7000 + i for i in rows], pa.int64()),
            "URL": [f"{base}/{names[i]}" for i in rows], "TEXT": [texts[i] for i in rows],
            "HEIGHT": [20] * len(rows), "WIDTH": [24 + i for i in rows], "LICENSE": ["?"] * len(rows),
            "NSFW": ["UNLIKELY"] * len(rows), "similarity": [0.31] * len(rows)}),
            folder / f"part-{part:05d}-5114fd87-297e-42b0-9d11-50f1df323dfa-c000.snappy.parquet")
    return texts
