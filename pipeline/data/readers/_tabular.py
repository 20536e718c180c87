"""Streaming readers for the big published metadata files (tsv, parquet, json), chunk by chunk."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ...errors import UserError
from ._registry import existing_file

BLOCK_BYTES = 32 << 20


def expand_sources(dataset, base_dir: Path, suffix: str) -> list[Path]:
    """Each source is a file or a folder (its *suffix files, sorted); missing ones are a UserError."""
    paths: list[Path] = []
    for source in dataset.sources:
        path = existing_file(source, base_dir, dataset)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.name.endswith(suffix))
            if not found:
                raise UserError(f"{path}: no *{suffix} files in this folder (dataset {dataset.name}, field sources)")
            paths += found
        else:
            paths.append(path)
    return paths


def stream_tsv(path: Path, columns: list[str], dropped: dict[str, int] | None = None) -> Iterator[pa.RecordBatch]:
    """Headerless tsv (optionally .gz / .bz2) as string batches; rows with a wrong field count are skipped
    (the released files contain a few broken lines) and counted in dropped["malformed_line"]."""
    skipped = 0

    def skip(_row) -> str:
        nonlocal skipped
        skipped += 1
        return "skip"

    try:
        stream = pa.input_stream(str(path), compression="detect")
        reader = pacsv.open_csv(
            stream, read_options=pacsv.ReadOptions(column_names=columns, block_size=BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False, invalid_row_handler=skip),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in columns},
                                                 strings_can_be_null=False))
        yield from reader
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"{path}: cannot read as tsv with columns {', '.join(columns)} "
                        f"({str(exc).splitlines()[0]}) (field sources)") from None
    if skipped:
        print(f"{path}: skipped {skipped} malformed lines", flush=True)
        if dropped is not None:
            dropped["malformed_line"] = dropped.get("malformed_line", 0) + skipped


def first_line_fields(path: Path) -> int:
    """Number of tab-separated fields on the first line (to tell layouts of one format apart)."""
    with pa.input_stream(str(path), compression="detect") as f:
        line = f.read(1 << 16).split(b"\n", 1)[0]
    return len(line.split(b"\t"))


def parquet_batches(path: Path, wanted: dict[str, tuple[str, ...]]) -> Iterator[pa.Table]:
    """Parquet batches with columns renamed: wanted = {our name: (accepted source names, any case)}."""
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"{path}: not a parquet file ({exc}) (field sources)") from None
    by_lower = {n.lower(): n for n in pf.schema_arrow.names}
    picked = {}
    for ours, accepted in wanted.items():
        name = next((by_lower[a.lower()] for a in accepted if a.lower() in by_lower), None)
        if name is not None:
            picked[ours] = name
        elif ours in ("url", "caption"):
            raise UserError(f"{path}: no {' / '.join(accepted)} column (columns: {', '.join(pf.schema_arrow.names)})")
    for batch in pf.iter_batches(batch_size=200_000, columns=list(picked.values())):
        table = pa.Table.from_batches([batch])
        yield pa.table({ours: table[name].cast(pa.string()) for ours, name in picked.items()})


def load_json(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc}) (field sources)") from None
