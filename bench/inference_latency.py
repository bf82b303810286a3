"""PyTorch fp32 vs ONNX fp32 vs ONNX INT8 (dynamic) on the same MiniLM classifier, one run.

    .venv/bin/python bench/inference_latency.py [--model runs/demo] [--threads 1]

Batch 1 at sequence 32 and 128: p50/p99 after warm-up, all runtimes on the same number of
threads. Batch 32 × 128 throughput with --batch-threads (default 2). Writes
bench/results/inference_latency.json (key int8_speedup_seq128 = PyTorch p50 / INT8 p50 at 128).
Without --model it exports the packaged MiniLM with a fresh 2-class head (latency does not
depend on the weights' values).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result

from raynlp.export.onnx import export_onnx, pick_kernel_set, quantize_dynamic_int8
from raynlp.export.parity import onnx_runner
from raynlp.export.pipeline import locate_model_dir
from raynlp.inference import torch_runner

TEXT = (
    "An unexpectedly moving film: the performances are warm and precise, the script takes its "
    "time, and the final act earns every one of its quiet, devastating moments. "
)


def fresh_model_dir(target: Path) -> Path:
    """The packaged MiniLM with an untrained 2-class head, saved as a raynlp model folder."""
    from transformers import AutoTokenizer

    from raynlp.models import resolve_model_path
    from raynlp.tasks import get_task

    base = resolve_model_path("minilm")
    model = get_task("classification").build_model(base, ["negative", "positive"], None)
    model.save_pretrained(str(target))
    AutoTokenizer.from_pretrained(base).save_pretrained(str(target))
    meta = {
        "task": "classification",
        "labels": ["negative", "positive"],
        "text_column": "text",
        "text_pair_column": None,
        "label_column": "label",
        "max_length": 128,
        "base_model": "minilm",
    }
    (target / "raynlp.json").write_text(json.dumps(meta))
    return target


def inputs(tokenizer, batch: int, length: int) -> dict[str, np.ndarray]:
    encoded = tokenizer(
        [TEXT * 8] * batch,
        truncation=True,
        max_length=length,
        padding="max_length",
        return_tensors="np",
    )
    return {k: v.astype(np.int64) for k, v in encoded.items()}


def timed(run, features, iterations: int, warmup: int = 10) -> list[float]:
    for _ in range(warmup):
        run(features)
    timings = []
    for _ in range(iterations):
        started = time.perf_counter()
        run(features)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="trained run or model folder (default: fresh MiniLM head)")
    parser.add_argument("--threads", type=int, default=1, help="threads for batch-1 latency")
    parser.add_argument("--batch-threads", type=int, default=2, help="threads for batch 32")
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()

    from transformers import AutoTokenizer

    work = Path(tempfile.mkdtemp(prefix="raynlp-latency-"))
    model_dir = locate_model_dir(args.model) if args.model else fresh_model_dir(work / "model")
    kernels = pick_kernel_set("auto")
    onnx_dir = export_onnx(model_dir, work / "onnx")
    int8_dir = quantize_dynamic_int8(onnx_dir, work / "int8", kernels)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))

    def runners(threads: int):
        torch.set_num_threads(threads)
        torch_run = torch_runner(model_dir)
        result = {"pytorch_fp32": torch_run}
        result["onnx_fp32"] = onnx_runner(onnx_dir, threads)
        result["onnx_int8"] = onnx_runner(int8_dir, threads)
        return result

    results: dict = {"batch1": {}, "batch32_seq128": {}}
    for name, run in runners(args.threads).items():
        for length in (32, 128):
            timings = timed(run, inputs(tokenizer, 1, length), args.iterations)
            results["batch1"].setdefault(name, {})[f"seq{length}"] = {
                "p50_ms": round(float(np.percentile(timings, 50)), 3),
                "p99_ms": round(float(np.percentile(timings, 99)), 3),
            }
            print(
                f"{name:<13} batch 1 seq {length:>3}: p50 {np.percentile(timings, 50):7.2f} ms"
                f"  p99 {np.percentile(timings, 99):7.2f} ms",
                flush=True,
            )
    for name, run in runners(args.batch_threads).items():
        timings = timed(run, inputs(tokenizer, 32, 128), iterations=10, warmup=2)
        throughput = 32 / (np.median(timings) / 1000)
        results["batch32_seq128"][name] = {"sequences_per_s": round(float(throughput), 1)}
        print(f"{name:<13} batch 32 seq 128: {throughput:7.1f} sequences/s", flush=True)

    batch1 = results["batch1"]
    speedup_128 = (
        batch1["pytorch_fp32"]["seq128"]["p50_ms"] / batch1["onnx_int8"]["seq128"]["p50_ms"]
    )
    speedup_32 = batch1["pytorch_fp32"]["seq32"]["p50_ms"] / batch1["onnx_int8"]["seq32"]["p50_ms"]
    summary = {
        "int8_speedup_seq128": round(speedup_128, 2),
        "int8_speedup_seq32": round(speedup_32, 2),
        "onnx_fp32_speedup_seq128": round(
            batch1["pytorch_fp32"]["seq128"]["p50_ms"] / batch1["onnx_fp32"]["seq128"]["p50_ms"], 2
        ),
        "kernel_set": kernels,
        "threads": args.threads,
        "batch_threads": args.batch_threads,
        "model": str(model_dir) if args.model else "packaged MiniLM, fresh 2-class head",
        "cpu": platform.processor() or platform.machine(),
        **results,
    }
    print(f"INT8 speedup vs PyTorch fp32 at seq 128: {speedup_128:.2f}× (goal ≥ 3×)")
    write_result("inference_latency", summary)


if __name__ == "__main__":
    main()
