"""`raynlp export`: trained model folder → ONNX fp32 + INT8 folders + a parity report."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raynlp.config import ExportSection, load_job_config
from raynlp.data.readers import read_rows
from raynlp.export.files import FOLDERS
from raynlp.export.onnx import (
    FEED_FORWARD_NODES,
    OPTIMIZATION_LEVELS,
    VariantSkipped,
    export_onnx,
    optimize_graph,
    pick_kernel_set,
    quantize_dynamic_int8,
    quantize_static_int8,
)
from raynlp.export.parity import parity_report
from raynlp.training.checkpoints import MODEL_META_FILE


class ParityError(RuntimeError):
    """Even the fp32 ONNX export disagrees with PyTorch more than the bound allows."""


SERVING_LINK = "serving"
"""``<export>/serving`` links to the chosen variant's folder."""


def choose_variant(
    variants: dict[str, Any],
    min_agreement: float,
    max_metric_drop: float = 1.0,
    gate_on_agreement: bool = True,
) -> tuple[str | None, str]:
    """The fastest variant (batch-1 p50 at the longest timed length) that holds the bounds.

    A variant holds them when its metric drops at most ``max_metric_drop`` against PyTorch fp32
    and, for tasks with exact answers (``gate_on_agreement``), it answers as PyTorch does on at
    least ``min_agreement`` of the rows. Other models (``compressed``: a distilled student, a
    pruned model) are held to the metric only. PyTorch fp32 itself always holds them, so it is
    served when nothing faster does. Variants without timings rank last, in the order given.
    """
    order = sorted(
        variants,
        key=lambda name: (variants[name].get("p50_ms") is None, variants[name].get("p50_ms", 0)),
    )
    rejected = []
    for name in order:
        row = variants[name]
        agreement, drop = row["agreement"], row.get("metric_drop", 0.0)
        by_agreement = gate_on_agreement and not row.get("compressed")
        problems = []
        if by_agreement and agreement < min_agreement:
            problems.append(f"{agreement:.2%} agreement < {min_agreement:.0%}")
        if drop > max_metric_drop:
            problems.append(f"{row['metric']} drop {drop:.4f} > {max_metric_drop:.4f}")
        if not problems:
            if by_agreement:
                held = f"agrees with PyTorch on {agreement:.2%} of rows (bound {min_agreement:.0%})"
            else:
                held = f"agreement {agreement:.2%} (not gated: {'another model' if row.get('compressed') else 'not exact for this task'})"
            speed = f", p50 {row['p50_ms']:.2f} ms" if row.get("p50_ms") is not None else ""
            why = (
                f"{name} is the fastest that holds the bounds{speed}: it {held} and its "
                f"{row['metric']} drops {drop:+.4f} (bound {max_metric_drop:.4f})"
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


def build_variants(
    model_dir: Path,
    target: Path,
    settings: ExportSection,
    kernels: str,
    calibration: Callable[[], dict[str, Any]],
) -> tuple[dict[str, Path], dict[str, str]]:
    """Build every variant of ``settings.variants`` that applies; ``{name: reason}`` for the
    others (e.g. graph fusions for an unknown architecture, static INT8 of a seq2seq model)."""
    from raynlp.export.torchscript import export_torchscript

    built: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    wanted = list(dict.fromkeys(["onnx_fp32", *settings.variants]))  # the others need it
    for name in wanted:
        folder = target / FOLDERS[name]
        print(f"[raynlp] building {name} ...", flush=True)
        started = time.perf_counter()
        try:
            if name == "onnx_fp32":
                built[name] = export_onnx(model_dir, folder)
            elif name in OPTIMIZATION_LEVELS:
                built[name] = optimize_graph(built["onnx_fp32"], folder, OPTIMIZATION_LEVELS[name])
            elif name in ("onnx_int8", "onnx_int8_attention", "onnx_int8_static") and (
                kernels == "none"
            ):
                raise VariantSkipped("export.quantization is 'none'")
            elif name == "onnx_int8":
                built[name] = quantize_dynamic_int8(built["onnx_fp32"], folder, kernels)
            elif name == "onnx_int8_attention":
                built[name] = quantize_dynamic_int8(
                    built["onnx_fp32"], folder, kernels, keep_fp32=FEED_FORWARD_NODES
                )
            elif name == "onnx_int8_static":
                static = settings.static_int8
                built[name] = quantize_static_int8(
                    built["onnx_fp32"],
                    folder,
                    kernels,
                    calibration(),
                    static.method,
                    static.percentile,
                    tuple(static.exclude),
                )
            elif name == "torchscript":
                built[name] = export_torchscript(model_dir, folder)
        except VariantSkipped as err:
            skipped[name] = str(err)
            print(f"[raynlp] {name} skipped: {err}", flush=True)
            continue
        print(f"[raynlp] {name} built in {time.perf_counter() - started:.1f}s", flush=True)
    if "onnx_fp32" not in settings.variants:
        built.pop("onnx_fp32", None)
    return built, skipped


def compress(
    model_dir: Path, target: Path, settings: ExportSection, kernels: str
) -> tuple[dict[str, Path], dict[str, Any]]:
    """The distilled student and the pruned model (when enabled), each as PyTorch fp32 and as
    dynamic INT8 ONNX. Their training runs on the current Ray cluster (or a local one)."""
    from raynlp.optimize.compress import distill, prune
    from raynlp.runtime import ray_session

    steps = {"student": (settings.distill, distill), "pruned": (settings.prune, prune)}
    steps = {name: step for name, step in steps.items() if step[0].enabled}
    if not steps:
        return {}, {}
    built: dict[str, Path] = {}
    info: dict[str, Any] = {}
    with ray_session():
        for name, (section, run) in steps.items():
            built[name], info[name] = run(model_dir, section)
    for name in list(built):
        onnx_dir = export_onnx(built[name], target / f"{name}_onnx")
        if kernels != "none":
            built[f"{name}_onnx_int8"] = quantize_dynamic_int8(
                onnx_dir, target / f"{name}_int8", kernels
            )
    return built, info


def calibration_features(model_dir: Path, rows: int, seed: int = 0) -> dict[str, Any]:
    """Model inputs of a seeded sample of the run's own training rows (never validation rows:
    the gate scores on those). VariantSkipped when the training data cannot be read."""
    import random

    from raynlp.inference import ModelRunner
    from raynlp.training.trainer import prepare_data

    config_file = model_dir.parent / "config.yaml"
    if not config_file.is_file():
        raise VariantSkipped(f"static INT8 calibrates on training rows: no {config_file}")
    try:
        train = prepare_data(load_job_config(config_file, check_files=False)).train_rows
    except (OSError, ValueError) as err:
        raise VariantSkipped(f"static INT8 needs the run's training rows: {err}") from None
    sample = random.Random(seed).sample(train, min(rows, len(train)))
    return ModelRunner(model_dir).encode(sample, targets=False)


def export_model(
    path: str | Path,
    output: str | Path | None = None,
    kernel_set: str | None = None,
    data: str | None = None,
    max_rows: int | None = None,
    min_agreement: float | None = None,
    threads: int | None = None,
    max_metric_drop: float | None = None,
    settings: ExportSection | None = None,
    variants: list[str] | None = None,
) -> dict[str, Any]:
    """``raynlp optimize``: build the variants, score and time each on validation rows, serve
    the fastest that holds the bounds; write ``export_report.json`` and ``.md``.

    ``settings`` defaults to the run's saved ``export:`` section; the keyword arguments
    override its fields. Validation rows come from ``data`` or, by default, the run's
    ``data/validation.jsonl`` (``max_rows`` of them; default: the task's ``export_rows``). The
    served folder is linked as ``<export>/serving``; ParityError (after writing the report) if
    no variant, not even PyTorch fp32, holds the bounds.
    """
    from raynlp.tasks import get_task
    from raynlp.training.checkpoints import read_model_meta

    started = time.perf_counter()
    model_dir = locate_model_dir(path)
    settings = (settings or export_settings(model_dir)).model_copy(deep=True)
    overrides = {
        "quantization": kernel_set,
        "min_argmax_agreement": min_agreement,
        "threads": threads,
        "max_metric_drop": max_metric_drop,
        "variants": variants,
    }
    for key, value in overrides.items():
        if value is not None:
            setattr(settings, key, value)
    target = Path(output) if output else model_dir.parent / "export"
    target.mkdir(parents=True, exist_ok=True)
    kernels = pick_kernel_set(settings.quantization)
    built, skipped = build_variants(
        model_dir,
        target,
        settings,
        kernels,
        lambda: calibration_features(model_dir, settings.static_int8.calibration_rows),
    )

    compressed, compression = compress(model_dir, target, settings, kernels)
    built.update(compressed)

    source = data or str(model_dir.parent / "data" / "validation.jsonl")
    task = get_task(read_model_meta(model_dir)["task"])
    limit = max_rows or getattr(task, "export_rows", 500)
    rows = read_rows(source)[:limit]
    print(f"[raynlp] scoring and timing {len(built) + 1} variants on {len(rows)} rows ...")
    parity = parity_report(
        model_dir,
        built,
        rows,
        threads=settings.threads,
        latency_samples=min(settings.latency_samples, getattr(task, "latency_rows", 100)),
        lengths=tuple(settings.latency_lengths),
        batch_size=settings.throughput_batch,
        compressed=tuple(compressed),
    )
    chosen, reason = choose_variant(
        parity["variants"],
        settings.min_argmax_agreement,
        settings.max_metric_drop,
        gate_on_agreement=getattr(task, "gate_on_agreement", True),
    )
    folders = {"pytorch_fp32": model_dir, **built}
    report = {
        "model_dir": str(model_dir),
        "kernel_set": kernels,
        "data": source,
        "parity": parity,
        "task": task.name,
        "min_agreement": settings.min_argmax_agreement,
        "max_metric_drop": settings.max_metric_drop,
        "chosen": chosen,
        "reason": reason,
        "serve_dir": str(folders[chosen]) if chosen else None,
        "skipped": skipped,
        "compression": compression,
        "sizes_mb": {name: row["size_mb"] for name, row in parity["variants"].items()},
        "settings": settings.model_dump(mode="json"),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    (target / "export_report.json").write_text(json.dumps(report, indent=2))
    (target / "export_report.md").write_text(markdown_report(report))
    serving = target / SERVING_LINK
    if serving.is_symlink() or serving.exists():
        serving.unlink()
    if chosen is not None:  # a stable path for serve configs, whichever variant won
        link = os.path.relpath(folders[chosen], target)
        serving.symlink_to(link, target_is_directory=True)
    if chosen is None:
        raise ParityError(f"no variant holds the bounds: {reason}")
    return report


def markdown_report(report: dict[str, Any]) -> str:
    """The report as a Markdown table (``export_report.md``; ``raynlp bench`` prints it)."""
    parity = report["parity"]
    lengths = parity.get("lengths", [])
    first = next(iter(parity["variants"].values()))
    head = ["variant", first["metric"], "Δ", "agreement"]
    head += [f"p50/p99 ms @{n}" for n in lengths]
    head += ["batch seq/s", "MB", "peak MB", "gate"]
    lines = [
        f"# {report['task']}: {Path(report['model_dir']).parent.name}",
        "",
        f"{parity['rows']} validation rows, {parity['threads']} thread(s), INT8 kernels "
        f"{report['kernel_set']}; bound: {first['metric']} drop ≤ {report['max_metric_drop']}"
        f" and agreement ≥ {report['min_agreement']:.0%} where answers are exact.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    rejected = {
        part.split(" rejected: ")[0]: part.split(" rejected: ")[1]
        for part in report["reason"].split("; ")
        if " rejected: " in part
    }
    for name, row in parity["variants"].items():
        gate = "**served**" if name == report["chosen"] else rejected.get(name, "holds")
        cells = [
            name,
            f"{row['value']:.4f}",
            f"{-row['metric_drop']:+.4f}",
            f"{row['agreement']:.2%}",
            *(
                f"{row['latency'][f'seq{n}']['p50_ms']:.2f} / {row['latency'][f'seq{n}']['p99_ms']:.2f}"
                for n in lengths
            ),
            f"{row['throughput_seq_per_s']:.1f}",
            f"{row['size_mb']:.1f}",
            f"{row['peak_memory_mb']:.0f}",
            gate,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    for name, why in report.get("skipped", {}).items():
        lines.append(
            f"| {name} | — | | | " + " | ".join("" for _ in lengths) + f" | | | | skipped: {why} |"
        )
    lines += ["", f"Served: **{report['chosen']}**. {report['reason']}.", ""]
    return "\n".join(lines)


def format_export_report(report: dict[str, Any]) -> str:
    """The report as a console table."""
    parity = report["parity"]
    lengths = parity.get("lengths", [])
    lines = [
        f"{'variant':<22}{'metric':>8}{'drop':>9}{'agree':>8}"
        + "".join(f"{f'p50@{n}':>9}{f'p99@{n}':>9}" for n in lengths)
        + f"{'seq/s':>8}{'MB':>8}{'peakMB':>8}"
    ]
    for name, row in parity["variants"].items():
        marker = " *" if name == report["chosen"] else ""
        lines.append(
            f"{name + marker:<22}{row['value']:>8.4f}{row.get('metric_drop', 0.0):>+9.4f}"
            f"{row['agreement']:>8.1%}"
            + "".join(
                f"{row['latency'][f'seq{n}']['p50_ms']:>9.2f}"
                f"{row['latency'][f'seq{n}']['p99_ms']:>9.2f}"
                for n in lengths
            )
            + f"{row['throughput_seq_per_s']:>8.1f}{row['size_mb']:>8.1f}"
            f"{row['peak_memory_mb']:>8.0f}"
        )
    for name, why in report.get("skipped", {}).items():
        lines.append(f"{name:<22}skipped: {why}")
    lines.append(
        f"({parity['rows']} rows, {parity['threads']} thread(s), metric = "
        f"{next(iter(parity['variants'].values()))['metric']}, latency in ms at batch 1, "
        "seq/s at batch 32; * = served)"
    )
    lines.append(f"serving {report['chosen']}: {report['reason']}")
    return "\n".join(lines)
