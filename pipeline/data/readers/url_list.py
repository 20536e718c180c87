"""`reader: url_list`: parquet / csv / tsv files that already have url and caption columns (sources, in order)."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ...errors import UserError
from ..urls import collect, url_table
from ._registry import UrlList, existing_file, register, require_sources


def read_table(path: Path) -> pa.Table:
    """Read one url file by extension (parquet, csv, tsv; .gz allowed for csv/tsv)."""
    name = path.name.lower().removesuffix(".gz")
    try:
        if name.endswith(".parquet"):
            return pq.read_table(path)
        if name.endswith(".tsv"):
            return pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter="\t"))
        if name.endswith(".csv"):
            return pacsv.read_csv(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"{path}: cannot read url list ({str(exc).splitlines()[0]}) (field sources)") from None
    raise UserError(f"{path}: url list must be .parquet, .csv or .tsv (field sources)")


def column(table: pa.Table, name: str, path: Path) -> list[str]:
    if name not in table.column_names:
        raise UserError(f"{path}: no column {name!r} (columns: {', '.join(table.column_names)}) (field sources)")
    return [("" if v is None else str(v)) for v in table.column(name).to_pylist()]


def _chunks(dataset, base_dir: Path):
    row = 0
    for source in dataset.sources:
        path = existing_file(source, base_dir, dataset)
        table = read_table(path)
        yield url_table(column(table, "url", path), column(table, "caption", path), first_row=row)
        row += table.num_rows


@register("url_list", kinds=("image_text",))
def read_url_list(*, dataset, data_dir: Path, base_dir: Path) -> UrlList:
    require_sources(dataset)
    return collect(_chunks(dataset, base_dir), data_dir=data_dir, dataset=dataset)
