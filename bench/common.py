"""Shared helpers for the benchmarks: where results go, and what machine produced them."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=RESULTS.parent
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write_result(name: str, result: dict[str, Any]) -> Path:
    """Write bench/results/<name>.json (with the machine it ran on) and say where."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({**result, "machine": machine()}, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def sst2_data(data_dir: Path, train_rows: int | None, validation_rows: int | None) -> dict:
    """The ``data:`` section of a job on the shared GLUE SST-2 files (train.tsv, dev.tsv)."""
    return {
        "train": str(data_dir / "sst2" / "train.tsv"),
        "validation": str(data_dir / "sst2" / "dev.tsv"),
        "text_column": "sentence",
        "label_column": "label",
        "label_names": ["negative", "positive"],
        "max_train_rows": train_rows,
        "max_validation_rows": validation_rows,
    }
