"""Does a variant still score like the PyTorch model, and what does it cost? Metric, agreement,
latency, throughput, size and memory of every variant on the same validation rows, through the
same task code as training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from raynlp.data.readers import Row
from raynlp.export.measure import PeakMemory, model_size_mb, speed_profile
from raynlp.inference import ModelRunner


def parity_report(
    model_dir: Path,
    variants: dict[str, Path],
    rows: list[Row],
    threads: int = 1,
    batch_size: int = 32,
    latency_samples: int = 50,
    lengths: tuple[int, ...] = (32, 128),
    compressed: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Score PyTorch and every variant on the same rows with the task's metric, and time them.

    ``agreement`` is the share of rows where a variant answers exactly as PyTorch does (the task
    defines "exactly": class, tag sequence, answer span, summary text, score within 0.1);
    ``metric_drop`` is PyTorch's metric minus the variant's. ``compressed`` names variants that
    are other models (a distilled student, a pruned model): they are compared on the metric.
    Latency is batch 1 at each of ``lengths`` tokens (``p50_ms``/``p99_ms``: the longest).
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with PeakMemory() as memory:
            reference = ModelRunner(model_dir, threads)
        task = reference.task
        features = reference.encode(rows, targets=False)
        report: dict[str, Any] = {
            "rows": len(rows),
            "threads": threads,
            "lengths": list(lengths),
            "variants": {},
        }
        baseline: dict[str, Any] = {}
        for name, path in {"pytorch_fp32": model_dir, **variants}.items():
            print(f"[raynlp] scoring and timing {name} ...", flush=True)
            if name == "pytorch_fp32":
                runner, load_memory = reference, memory
            else:
                with PeakMemory() as load_memory:
                    runner = ModelRunner(path, threads)
            own = name in compressed  # another model: encode with its own spec
            with PeakMemory() as run_memory:
                predictions = runner.predict_rows(rows, batch_size, None if own else features)
            metrics = task.compute_metrics(predictions, rows, runner.spec, runner.labels)
            baseline = baseline or {"predictions": predictions, "value": metrics[task.best_metric]}
            speed = speed_profile(runner, rows, lengths, latency_samples, batch_size)
            longest = speed[f"seq{lengths[-1]}"]
            report["variants"][name] = {
                "metric": task.best_metric,
                "value": metrics[task.best_metric],
                "metric_drop": baseline["value"] - metrics[task.best_metric],
                "agreement": task.agreement(predictions, baseline["predictions"]),
                "compressed": own,
                "p50_ms": longest["p50_ms"],
                "p99_ms": longest["p99_ms"],
                "latency": {k: v for k, v in speed.items() if k.startswith("seq")},
                "throughput_seq_per_s": speed[f"batch{batch_size}_seq_per_s"],
                "size_mb": model_size_mb(path),
                "peak_memory_mb": max(load_memory.growth_mb, 0.0) + max(run_memory.growth_mb, 0.0),
            }
    finally:
        torch.set_num_threads(previous_threads)
    return report
