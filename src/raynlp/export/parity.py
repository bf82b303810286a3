"""Does the exported model still score like the PyTorch one? Agreement, metric and latency."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raynlp.data.readers import Row
from raynlp.inference import batches, logits_in_batches, torch_runner, trim_features
from raynlp.serving.predictor import find_onnx_file, make_session
from raynlp.tasks import get_task
from raynlp.tasks.base import InputSpec
from raynlp.training.checkpoints import read_model_meta


def onnx_runner(onnx_dir: Path, threads: int):
    session = make_session(find_onnx_file(onnx_dir), threads)
    names = [item.name for item in session.get_inputs()]
    return lambda features: session.run(None, {n: features[n] for n in names})[0]


def latency_ms(run, features: dict[str, np.ndarray], samples: int = 100, warmup: int = 5) -> dict:
    """Batch-1 latency percentiles over the first ``samples`` rows, after ``warmup`` calls."""
    rows = list(batches(features, 1))[:samples]
    for row in rows[:warmup]:
        run(trim_features(row))
    timings = []
    for row in rows:
        started = time.perf_counter()
        run(trim_features(row))
        timings.append((time.perf_counter() - started) * 1000)
    return {
        "p50_ms": float(np.percentile(timings, 50)),
        "p99_ms": float(np.percentile(timings, 99)),
    }


def parity_report(
    model_dir: Path,
    variants: dict[str, Path],
    rows: list[Row],
    threads: int = 1,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Score PyTorch and every ONNX variant on the same rows, with the task's metric.

    ``agreement`` is the share of rows where a variant's argmax equals PyTorch's.
    """
    meta = read_model_meta(model_dir)
    task = get_task(meta["task"])
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    features = task.encode(rows, tokenizer, InputSpec.from_meta(meta), meta["labels"])
    references = features["labels"]
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        runners = {"pytorch_fp32": torch_runner(model_dir)}
        runners.update({name: onnx_runner(path, threads) for name, path in variants.items()})
        report: dict[str, Any] = {"rows": len(rows), "threads": threads, "variants": {}}
        baseline = None
        for name, run in runners.items():
            logits = logits_in_batches(run, features, batch_size)
            metrics = task.compute_metrics({"logits": logits, "labels": references}, meta["labels"])
            predictions = logits.argmax(axis=-1)
            baseline = predictions if baseline is None else baseline
            report["variants"][name] = {
                "metric": task.best_metric,
                "value": metrics[task.best_metric],
                "agreement": float((predictions == baseline).mean()),
                **latency_ms(run, features),
            }
    finally:
        torch.set_num_threads(previous_threads)
    return report
