"""`raynlp export`: trained model folder → ONNX fp32 + INT8 folders + a parity report."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from raynlp.data.readers import read_rows
from raynlp.export.onnx import export_onnx, pick_kernel_set, quantize_dynamic_int8
from raynlp.export.parity import parity_report
from raynlp.training.checkpoints import MODEL_META_FILE


class ParityError(RuntimeError):
    """The INT8 model disagrees with PyTorch more than the configured bound allows."""


def locate_model_dir(path: str | Path) -> Path:
    """Accept a run folder (``runs/NAME``) or a model folder (``runs/NAME/model``)."""
    path = Path(path)
    for candidate in (path, path / "model"):
        if (candidate / MODEL_META_FILE).is_file():
            return candidate
    raise FileNotFoundError(f"no trained raynlp model in {path} (looked for {MODEL_META_FILE})")


def export_model(
    path: str | Path,
    output: str | Path | None = None,
    kernel_set: str = "auto",
    data: str | None = None,
    max_rows: int | None = 500,
    min_agreement: float = 0.99,
    threads: int = 1,
) -> dict[str, Any]:
    """Export, quantize, check parity on validation rows; write ``export_report.json``.

    Validation rows come from ``data`` or, by default, the run's ``data/validation.jsonl``.
    Raises ParityError (after writing the report) when INT8 argmax agreement < ``min_agreement``.
    """
    started = time.perf_counter()
    model_dir = locate_model_dir(path)
    target = Path(output) if output else model_dir.parent / "export"
    target.mkdir(parents=True, exist_ok=True)
    kernels = pick_kernel_set(kernel_set)
    print(f"[raynlp] exporting {model_dir} to ONNX ...", flush=True)
    onnx_dir = export_onnx(model_dir, target / "onnx")
    variants = {"onnx_fp32": onnx_dir}
    if kernels != "none":
        print(f"[raynlp] dynamic INT8 quantization ({kernels}) ...", flush=True)
        variants["onnx_int8"] = quantize_dynamic_int8(onnx_dir, target / "int8", kernels)

    source = data or str(model_dir.parent / "data" / "validation.jsonl")
    rows = read_rows(source)[:max_rows] if max_rows else read_rows(source)
    print(f"[raynlp] parity check on {len(rows)} rows of {source} ...", flush=True)
    parity = parity_report(model_dir, variants, rows, threads=threads)
    chosen = "onnx_int8" if "onnx_int8" in variants else "onnx_fp32"
    report = {
        "model_dir": str(model_dir),
        "kernel_set": kernels,
        "data": source,
        "parity": parity,
        "serve_dir": str(variants[chosen]),
        "sizes_mb": {
            name: round(sum(f.stat().st_size for f in p.glob("*.onnx")) / 2**20, 1)
            for name, p in variants.items()
        },
        "wall_s": round(time.perf_counter() - started, 1),
    }
    (target / "export_report.json").write_text(json.dumps(report, indent=2))
    agreement = parity["variants"][chosen]["agreement"]
    if agreement < min_agreement:
        raise ParityError(
            f"{chosen} agrees with PyTorch on {agreement:.2%} of rows, below {min_agreement:.0%}; "
            f"see {target / 'export_report.json'}"
        )
    return report


def format_export_report(report: dict[str, Any]) -> str:
    parity = report["parity"]
    lines = [
        f"{'variant':<14}{'metric':>10}{'agreement':>11}{'p50 ms':>9}{'p99 ms':>9}{'MB':>8}",
    ]
    for name, row in parity["variants"].items():
        size = report["sizes_mb"].get(name, float("nan"))
        lines.append(
            f"{name:<14}{row['value']:>10.4f}{row['agreement']:>11.2%}{row['p50_ms']:>9.2f}"
            f"{row['p99_ms']:>9.2f}{size:>8.1f}"
        )
    lines.append(
        f"({parity['rows']} rows, {parity['threads']} thread(s), metric = "
        f"{next(iter(parity['variants'].values()))['metric']}; serving {report['serve_dir']})"
    )
    return "\n".join(lines)
