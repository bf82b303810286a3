"""Read tabular text data (CSV, TSV, JSON lines, JSON, Parquet) into a list of row dicts."""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
from pathlib import Path
from typing import Any

from raynlp.data.paths import resolve_data_path

Row = dict[str, Any]


def _format_of(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    suffixes = [s for s in path.suffixes if s != ".gz"]
    suffix = suffixes[-1].lstrip(".").lower() if suffixes else ""
    formats = {"csv": "csv", "tsv": "tsv", "jsonl": "jsonl", "json": "json", "parquet": "parquet"}
    if suffix not in formats:
        raise ValueError(
            f"cannot tell the format of {path.name}; set data.format to one of "
            "csv, tsv, jsonl, json, parquet"
        )
    return formats[suffix]


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def read_rows(value: str, data_format: str = "auto") -> list[Row]:
    """Read every row of a data file named in a config (a path or ``sample://NAME``)."""
    path = resolve_data_path(value)
    kind = _format_of(path, data_format)
    if kind == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    with _open_text(path) as handle:
        if kind in ("csv", "tsv"):
            delimiter = "\t" if kind == "tsv" else ","
            quoting = csv.QUOTE_NONE if kind == "tsv" else csv.QUOTE_MINIMAL
            return list(csv.DictReader(handle, delimiter=delimiter, quoting=quoting))
        if kind == "jsonl":
            return [json.loads(line) for line in handle if line.strip()]
        data = json.load(handle)
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        return data["data"]
    if not isinstance(data, list):
        raise ValueError(f"{path.name}: a .json data file must hold a list of rows")
    return data


def split_rows(rows: list[Row], validation_share: float, seed: int) -> tuple[list[Row], list[Row]]:
    """Shuffle with a fixed seed and hold out ``validation_share`` of the rows (80/20 default)."""
    if len(rows) < 2:
        raise ValueError(
            f"need at least 2 rows to split into train and validation, got {len(rows)}"
        )
    shuffled = list(rows)
    random.Random(seed).shuffle(shuffled)
    n_validation = min(len(rows) - 1, max(1, round(len(rows) * validation_share)))
    return shuffled[n_validation:], shuffled[:n_validation]


def write_jsonl(rows: list[Row], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
