"""How fast and how big a model variant is: batch-1 latency at fixed sequence lengths, batch
throughput, file size, and the memory it takes to load and run."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from raynlp.data.readers import Row
from raynlp.inference import ModelRunner, batches
from raynlp.tasks.base import Features

MODEL_FILE_SUFFIXES = (".onnx", ".onnx_data", ".pt", ".safetensors", ".bin")


def model_size_mb(directory: str | Path) -> float:
    """Size of the weight files of a model folder (not tokenizer or config files)."""
    files = [p for p in Path(directory).iterdir() if p.is_file() or p.is_symlink()]
    size = sum(p.stat().st_size for p in files if p.suffix in MODEL_FILE_SUFFIXES)
    return round(size / 2**20, 2)


def usable_length(runner: ModelRunner, length: int) -> int:
    """``length``, capped by the model's position embeddings (if it has any)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(runner.model_dir))
    encoder = getattr(config, "encoder", config)
    limit = getattr(encoder, "max_position_embeddings", None)
    return min(length, limit) if limit else length


def fixed_length_features(
    runner: ModelRunner, rows: list[Row], length: int, count: int
) -> Features:
    """``count`` model inputs of exactly ``length`` tokens from real rows: each is padded or cut
    to ``length`` and every position is attended, so each input costs ``length`` tokens."""
    options = dict(runner.spec.options)
    if "doc_stride" in options:  # QA windows: the overlap must fit a short window too
        options["doc_stride"] = min(int(options["doc_stride"]), max(1, length // 8))
    spec = dataclasses.replace(runner.spec, max_length=length, options=options)
    while len(rows) < count:  # few rows (tiny samples): reuse them
        rows = rows + rows
    features = runner.task.encode(
        rows[:count], runner.tokenizer, spec, runner.labels, targets=False, padding="max_length"
    )
    features = {key: value[:count] for key, value in features.items()}
    features["attention_mask"] = np.ones_like(features["attention_mask"])
    return features


def latency_ms(runner: ModelRunner, features: Features, warmup: int = 3) -> dict[str, float]:
    """Batch-1 latency percentiles (model inputs → raw outputs) over every input."""
    rows = list(batches(features, 1))
    for row in rows[:warmup]:
        runner.run(row, batch_size=1)
    timings = []
    for row in rows:
        started = time.perf_counter()
        runner.run(row, batch_size=1)
        timings.append((time.perf_counter() - started) * 1000)
    return {
        "p50_ms": round(float(np.percentile(timings, 50)), 3),
        "p99_ms": round(float(np.percentile(timings, 99)), 3),
        "runs": len(timings),
    }


def throughput(runner: ModelRunner, features: Features, batch_size: int, repeats: int = 3) -> float:
    """Sequences per second for batches of ``batch_size`` (best of ``repeats``)."""
    batch = next(batches(features, batch_size))
    runner.run(batch, batch_size=batch_size)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        runner.run(batch, batch_size=batch_size)
        best = min(best, time.perf_counter() - started)
    return round(len(batch["input_ids"]) / best, 2)


class PeakMemory:
    """Peak resident memory growth of this process while the block runs (sampled every 5 ms).

    Memory freed by earlier variants may be reused, so this is a lower bound of what a fresh
    process would need; it is comparable between variants measured the same way."""

    def __init__(self, interval_s: float = 0.005):
        import psutil

        self.process = psutil.Process()
        self.interval_s = interval_s
        self.peak = self.baseline = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakMemory:
        self.baseline = self.peak = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def growth_mb(self) -> float:
        return round((self.peak - self.baseline) / 2**20, 1)


def speed_profile(
    runner: ModelRunner,
    rows: list[Row],
    lengths: tuple[int, ...] = (32, 128),
    samples: int = 50,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Batch-1 p50/p99 at each sequence length and batch throughput at the longest."""
    profile: dict[str, Any] = {}
    longest = None
    for length in lengths:
        used = usable_length(runner, length)
        features = fixed_length_features(runner, rows, used, max(samples, batch_size))
        timed = {k: v[:samples] for k, v in features.items()}
        profile[f"seq{length}"] = {**latency_ms(runner, timed), "tokens": used}
        longest = features
    if longest is not None:
        profile[f"batch{batch_size}_seq_per_s"] = throughput(runner, longest, batch_size)
    return profile
