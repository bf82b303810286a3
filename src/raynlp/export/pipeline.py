"""`raynlp export`: trained model folder → ONNX fp32 + INT8 folders + a parity report."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from raynlp.config import ExportSection, load_job_config
from raynlp.data.readers import read_rows
from raynlp.export.onnx import (
    FEED_FORWARD_NODES,
    export_onnx,
    pick_kernel_set,
    quantize_dynamic_int8,
)
from raynlp.export.parity import parity_report
from raynlp.training.checkpoints import MODEL_META_FILE


class ParityError(RuntimeError):
    """Even the fp32 ONNX export disagrees with PyTorch more than the bound allows."""


SERVING_LINK = "serving"
"""``<export>/serving`` links to the chosen variant's folder."""

PREFERENCE = ("onnx_int8", "onnx_int8_attention", "onnx_fp32")
"""Fastest first: the first variant that holds both bounds is served (full INT8; INT8 with the
feed-forward MatMuls kept fp32; fp32 ONNX)."""


def choose_variant(
    variants: dict[str, Any],
    min_agreement: float,
    max_metric_drop: float = 1.0,
    gate_on_agreement: bool = True,
) -> tuple[str | None, str]:
    """The first variant of PREFERENCE whose agreement with PyTorch and metric drop hold.

    ``gate_on_agreement=False`` (regression scores, generated text: answers that are never
    bit-identical) gates on the metric drop alone; agreement is still reported.
    """
    rejected = []
    for name in PREFERENCE:
        if name not in variants:
            continue
        row = variants[name]
        agreement, drop = row["agreement"], row.get("metric_drop", 0.0)
        problems = []
        if gate_on_agreement and agreement < min_agreement:
            problems.append(f"{agreement:.2%} agreement < {min_agreement:.0%}")
        if drop > max_metric_drop:
            problems.append(f"{row['metric']} drop {drop:.4f} > {max_metric_drop:.4f}")
        if not problems:
            bound = f"bound {min_agreement:.0%}" if gate_on_agreement else "not gated for this task"
            why = (
                f"{name} agrees with PyTorch on {agreement:.2%} of rows ({bound}) "
                f"and its {row['metric']} drops {drop:+.4f} (bound {max_metric_drop:.4f})"
            )
            return name, "; ".join([*rejected, why])
        rejected.append(f"{name} rejected: {', '.join(problems)}")
    return None, "; ".join(rejected)


def export_settings(path: str | Path) -> ExportSection:
    """The ``export:`` section of the run's saved config.yaml (defaults when there is none)."""
    config_file = locate_model_dir(path).parent / "config.yaml"
    if config_file.is_file():
        return load_job_config(config_file, check_files=False).export
    return ExportSection()


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
    max_rows: int | None = None,
    min_agreement: float = 0.99,
    threads: int = 1,
    max_metric_drop: float = 0.005,
) -> dict[str, Any]:
    """Export, quantize, check parity on validation rows; write ``export_report.json``.

    Validation rows come from ``data`` or, by default, the run's ``data/validation.jsonl``.
    The served variant (``serve_dir``) is the fastest of full INT8, INT8 with the feed-forward
    layers kept fp32, and fp32 ONNX whose agreement with PyTorch is at least ``min_agreement``
    and whose metric drops by at most ``max_metric_drop``; ParityError (after writing the
    report) if none holds. ``max_rows`` defaults to the task's ``export_rows`` (500; fewer for
    summarization, whose every row is a beam search per variant).
    """
    from raynlp.tasks import get_task
    from raynlp.training.checkpoints import read_model_meta

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
        variants["onnx_int8_attention"] = quantize_dynamic_int8(
            onnx_dir, target / "int8_attention", kernels, keep_fp32=FEED_FORWARD_NODES
        )

    source = data or str(model_dir.parent / "data" / "validation.jsonl")
    task = get_task(read_model_meta(model_dir)["task"])
    limit = max_rows or getattr(task, "export_rows", 500)
    rows = read_rows(source)[:limit]
    print(f"[raynlp] parity check on {len(rows)} rows of {source} ...", flush=True)
    parity = parity_report(
        model_dir,
        variants,
        rows,
        threads=threads,
        latency_samples=getattr(task, "latency_rows", 100),
    )
    chosen, reason = choose_variant(
        parity["variants"],
        min_agreement,
        max_metric_drop,
        gate_on_agreement=getattr(task, "gate_on_agreement", True),
    )
    report = {
        "model_dir": str(model_dir),
        "kernel_set": kernels,
        "data": source,
        "parity": parity,
        "task": task.name,
        "min_agreement": min_agreement,
        "max_metric_drop": max_metric_drop,
        "chosen": chosen,
        "reason": reason,
        "serve_dir": str(variants[chosen]) if chosen else None,
        "sizes_mb": {
            name: round(sum(f.stat().st_size for f in p.glob("*.onnx*")) / 2**20, 1)
            for name, p in variants.items()
        },
        "wall_s": round(time.perf_counter() - started, 1),
    }
    (target / "export_report.json").write_text(json.dumps(report, indent=2))
    serving = target / SERVING_LINK
    if serving.is_symlink() or serving.exists():
        serving.unlink()
    if chosen is not None:  # a stable path for serve configs, whichever variant won
        serving.symlink_to(variants[chosen].name, target_is_directory=True)
    if chosen is None:
        raise ParityError(f"no exported variant holds the bound: {reason}")
    return report


def format_export_report(report: dict[str, Any]) -> str:
    parity = report["parity"]
    lines = [
        f"{'variant':<20}{'metric':>10}{'drop':>9}{'agreement':>11}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'MB':>8}",
    ]
    for name, row in parity["variants"].items():
        size = report["sizes_mb"].get(name, float("nan"))
        lines.append(
            f"{name:<20}{row['value']:>10.4f}{row.get('metric_drop', 0.0):>+9.4f}"
            f"{row['agreement']:>11.2%}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}{size:>8.1f}"
        )
    lines.append(
        f"({parity['rows']} rows, {parity['threads']} thread(s), metric = "
        f"{next(iter(parity['variants'].values()))['metric']})"
    )
    lines.append(f"serving {report['chosen']}: {report['reason']}")
    return "\n".join(lines)
