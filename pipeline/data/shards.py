"""img2dataset from the url list to webdataset shards, then verification and failure accounting.

Runs img2dataset in incremental mode, so a rerun after a kill keeps every finished shard (one with its
NNNNN_stats.json) and fetches only the rest. Each tar's headers are then walked to its end; a truncated,
missing or short shard has its files removed and img2dataset is run again for just those shards. A good
shard gets its sample index (byte ranges in key order, pipeline.data.tarindex) written beside it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import to_dict
from ..errors import UserError
from .failures import fold_status
from .tarindex import INDEX_SUFFIX, build_index, write_index
from .urls import UrlList

SETTINGS_MARK = ".clipforge_settings"  # not *.json: img2dataset treats every *.json in the folder as a done shard
MAX_REDO = 2


@dataclass(frozen=True)
class ShardCheck:
    shard_id: int
    samples: int
    problem: str | None  # None = readable to the end and matching img2dataset's own count


def img2dataset_kwargs(settings, extra_columns: tuple[str, ...] = ()) -> dict:
    """Our schema's img2dataset block -> img2dataset.download keyword arguments."""
    return dict(
        image_size=settings.image_size, resize_mode=settings.resize_mode,
        encode_quality=settings.encode_quality, processes_count=settings.processes,
        thread_count=settings.threads, timeout=settings.timeout, retries=settings.retries,
        number_sample_per_shard=settings.samples_per_shard,
        max_image_area=float("inf") if settings.max_image_area is None else settings.max_image_area,
        distributor=settings.distributor,
        save_additional_columns=list(extra_columns) or None,  # reader extras -> each sample's .json
        input_format="parquet", url_col="url", caption_col="caption", output_format="webdataset",
        encode_format="jpg", extract_exif=False,  # exif of resized thumbnails is of no use to training
        enable_wandb=False, oom_shard_count=5,  # 5 digits: shards/00000.tar as the stats contract names them
        incremental_mode="incremental",
    )


def connect_distributor(distributor: str) -> None:
    """pyspark / ray must be installed (img2dataset's ray path silently does nothing without it) and,
    on a cluster, reachable: CLIPFORGE_SPARK_MASTER (spark://host:7077) or RAY_ADDRESS (host:6379)."""
    if distributor == "multiprocessing":
        return
    try:
        module = __import__(distributor)
    except ImportError:
        raise UserError(f"img2dataset.distributor: {distributor} is not installed (pip install {distributor}; "
                        f"see docs/data.md)") from None
    if distributor == "pyspark":
        from pyspark.sql import SparkSession

        builder = SparkSession.builder.appName("clipforge-data")
        if os.environ.get("CLIPFORGE_SPARK_MASTER"):
            builder = builder.master(os.environ["CLIPFORGE_SPARK_MASTER"])
        builder.getOrCreate()  # img2dataset uses the active session
    elif not module.is_initialized():
        # RAY_ADDRESS set: join that cluster (docs/data.md); else a local one. The workers run with the
        # cluster's environment, so the variables the download needs travel with the job.
        env = {"NO_ALBUMENTATIONS_UPDATE": "1"}  # img2dataset imports albumentations, which phones home
        try:
            module.init(address=os.environ.get("RAY_ADDRESS"), runtime_env={"env_vars": env})
        except ConnectionError as exc:
            raise UserError(f"img2dataset.distributor: ray: cannot reach the cluster at "
                            f"{os.environ.get('RAY_ADDRESS')} ({exc})") from None


def run_img2dataset(*, url_list: UrlList, shards_dir: Path, settings) -> None:
    """One img2dataset call; it installs its own SIGINT handler (which exits 0), so ours is restored after."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import img2dataset

    connect_distributor(settings.distributor)
    previous = signal.getsignal(signal.SIGINT)
    try:
        img2dataset.download(url_list=str(url_list.path), output_folder=str(shards_dir),
                             **img2dataset_kwargs(settings, url_list.extra_columns))
    except SystemExit:  # img2dataset's Ctrl-C handler exits 0; that must not look like success
        raise UserError(f"{shards_dir}: download interrupted; run the same command again to resume") from None
    finally:
        signal.signal(signal.SIGINT, previous)


def _settings_mark(url_list: UrlList, settings) -> str:
    digest = hashlib.sha256()
    files = sorted(url_list.path.glob("*.parquet")) if url_list.path.is_dir() else [url_list.path]
    for path in files:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return json.dumps({"url_list_sha256": digest.hexdigest(), "img2dataset": to_dict(settings)}, sort_keys=True)


def prepare_shards_dir(*, url_list: UrlList, shards_dir: Path, settings) -> None:
    """Keep earlier shards only if they came from the same url list and settings (else start over)."""
    mark = _settings_mark(url_list, settings)
    mark_path = shards_dir / SETTINGS_MARK
    if shards_dir.exists():
        if mark_path.is_file() and mark_path.read_text() == mark:
            return
        print(f"{shards_dir}: url list or img2dataset settings changed, starting the shards over", flush=True)
        shutil.rmtree(shards_dir)
    shards_dir.mkdir(parents=True)
    mark_path.write_text(mark)


def tar_samples(path: Path) -> int:
    """Samples (distinct keys with an image) in one webdataset tar, every header walked to the end
    (tarindex.build_index, strict). Raises tarfile.ReadError on a cut or corrupt tar."""
    return len(build_index(path))


def shard_name(shard_id: int) -> str:
    return f"{shard_id:05d}"


def check_shard(shards_dir: Path, shard_id: int) -> ShardCheck:
    name = shard_name(shard_id)
    stats_file = shards_dir / f"{name}_stats.json"
    try:
        expected = int(json.loads(stats_file.read_text())["successes"])
    except (OSError, ValueError, KeyError) as exc:
        return ShardCheck(shard_id, 0, f"{stats_file.name} missing or unreadable ({type(exc).__name__})")
    tar = shards_dir / f"{name}.tar"
    try:
        ranges = build_index(tar)
    except (OSError, tarfile.TarError) as exc:
        return ShardCheck(shard_id, 0, f"{tar.name} unreadable: {exc}")
    found = len(ranges)
    if found != expected:
        return ShardCheck(shard_id, found, f"{tar.name} holds {found} samples, img2dataset stored {expected}")
    write_index(tar, ranges)  # the loader reads samples by these byte ranges, in key order
    return ShardCheck(shard_id, found, None)


def remove_shard(shards_dir: Path, shard_id: int) -> None:
    """Drop every file of one shard so img2dataset's incremental mode fetches it again."""
    name = shard_name(shard_id)
    for suffix in ("_stats.json", ".tar", ".parquet", INDEX_SUFFIX):
        (shards_dir / f"{name}{suffix}").unlink(missing_ok=True)


def build_shards(*, url_list: UrlList, shards_dir: Path, settings) -> list[ShardCheck]:
    """Run img2dataset until every shard verifies (at most MAX_REDO reruns), returning the shard checks.

    Shards already complete from an earlier (killed) run are verified first and kept; img2dataset is only
    started when some shard is missing or bad, and its incremental mode then fetches just those.
    """
    expected_shards = sum(math.ceil(rows / settings.samples_per_shard) for rows in url_list.parts)
    prepare_shards_dir(url_list=url_list, shards_dir=shards_dir, settings=settings)
    for attempt in range(MAX_REDO + 2):
        checks = [check_shard(shards_dir, i) for i in range(expected_shards)]
        bad = [c for c in checks if c.problem]
        if not bad:
            return checks
        if attempt == MAX_REDO + 1:
            break
        print(f"{len(bad)} of {expected_shards} shards to fetch", flush=True)
        for c in bad:
            if (shards_dir / f"{shard_name(c.shard_id)}_stats.json").exists():
                print(f"shard {shard_name(c.shard_id)}: {c.problem}; fetching it again", flush=True)
            remove_shard(shards_dir, c.shard_id)
        started = time.time()
        run_img2dataset(url_list=url_list, shards_dir=shards_dir, settings=settings)
        print(f"img2dataset pass {attempt + 1} took {time.time() - started:.1f}s", flush=True)
    raise UserError(f"{shards_dir}: shard {shard_name(bad[0].shard_id)} still bad after {MAX_REDO} reruns: "
                    f"{bad[0].problem}")


def aggregate(*, shards_dir: Path, checks: list[ShardCheck], rows: int, dropped: dict[str, int] | None = None) -> dict:
    """Per-shard stats files -> samples, failures by reason, shard list (relative to the data folder).
    `rows` is the url list's length; `dropped` the input rows the reader left out, by reason: they are
    failures too, so samples + failed = input rows = rows + dropped."""
    failed: dict[str, int] = dict(dropped or {})
    samples = 0
    for c in checks:
        stats = json.loads((shards_dir / f"{shard_name(c.shard_id)}_stats.json").read_text())
        for reason, n in fold_status(stats.get("status_dict", {})).items():
            failed[reason] = failed.get(reason, 0) + n
        unaccounted = stats["count"] - stats["successes"] - stats["failed_to_download"] - stats["failed_to_resize"]
        if unaccounted > 0:  # img2dataset counts a sample whose write raised in none of its buckets
            failed["other"] = failed.get("other", 0) + unaccounted
        samples += c.samples
    input_rows = rows + sum((dropped or {}).values())
    if samples + sum(failed.values()) != input_rows:
        raise UserError(f"{shards_dir}: {samples} stored + {sum(failed.values())} failed != {input_rows} input rows")
    shards = [{"path": f"{shards_dir.name}/{shard_name(c.shard_id)}.tar", "samples": c.samples}
              for c in checks if c.samples > 0]
    return {"samples": samples, "input_rows": input_rows, "failed": dict(sorted(failed.items())), "shards": shards}
