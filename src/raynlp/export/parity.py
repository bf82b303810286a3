"""Does an exported model still score like the PyTorch one? Metric, agreement and latency of
every variant on the same validation rows, through the same task code as training."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raynlp.data.readers import Row
from raynlp.inference import ModelRunner, batches


def latency_ms(
    runner: ModelRunner, features: dict[str, np.ndarray], samples: int, warmup: int = 3
) -> dict:
    """Batch-1 model latency percentiles (tokenized input → raw outputs) over ``samples`` rows."""
    rows = list(batches(features, 1))[:samples]
    for row in rows[:warmup]:
        runner.run(row, batch_size=1)
    timings = []
    for row in rows:
        started = time.perf_counter()
        runner.run(row, batch_size=1)
        timings.append((time.perf_counter() - started) * 1000)
    return {
        "p50_ms": float(np.percentile(timings, 50)),
        "p99_ms": float(np.percentile(timings, 99)),
        "latency_rows": len(timings),
    }


def parity_report(
    model_dir: Path,
    variants: dict[str, Path],
    rows: list[Row],
    threads: int = 1,
    batch_size: int = 32,
    latency_samples: int = 100,
) -> dict[str, Any]:
    """Score PyTorch and every ONNX variant on the same rows with the task's metric.

    ``agreement`` is the share of rows where a variant answers exactly as PyTorch does (the task
    defines "exactly": class, tag sequence, answer span, summary text, score within 0.1);
    ``metric_drop`` is PyTorch's metric minus the variant's.
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        reference = ModelRunner(model_dir, threads)
        task = reference.task
        features = reference.encode(rows, targets=False)
        report: dict[str, Any] = {"rows": len(rows), "threads": threads, "variants": {}}
        baseline: dict[str, Any] = {}
        for name, path in {"pytorch_fp32": model_dir, **variants}.items():
            runner = reference if name == "pytorch_fp32" else ModelRunner(path, threads)
            predictions = runner.predict_rows(rows, batch_size, features)
            metrics = task.compute_metrics(predictions, rows, runner.spec, runner.labels)
            baseline = baseline or {"predictions": predictions, "value": metrics[task.best_metric]}
            report["variants"][name] = {
                "metric": task.best_metric,
                "value": metrics[task.best_metric],
                "metric_drop": baseline["value"] - metrics[task.best_metric],
                "agreement": task.agreement(predictions, baseline["predictions"]),
                **latency_ms(runner, features, latency_samples),
            }
    finally:
        torch.set_num_threads(previous_threads)
    return report
