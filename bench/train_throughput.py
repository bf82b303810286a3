"""raynlp training (Ray Train, 2 workers, DeepSpeed ZeRO-2) vs a plain single-process PyTorch loop.

    .venv/bin/python bench/train_throughput.py [--rows 1024] [--max-length 64]

Same model (packaged MiniLM + 2-class head), same rows, same global batch (32), same per-batch
padding trim, same optimizer (fused AdamW), same total cores (2 workers × 1 thread vs 1 process
× 2 threads), measured in one run. raynlp's samples/s is its own steady-state report (last epoch);
startup_s is the wall time from launching `raynlp train` to its first optimizer step.
Writes bench/results/train_throughput.json (keys ratio_vs_plain_loop, startup_s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result

BIN = Path(sys.executable).parent


def job_config(rows: int, max_length: int, epochs: int, output: Path, zero_stage: int) -> dict:
    return {
        "name": "throughput",
        "model": {"name_or_path": "minilm", "max_length": max_length},
        "data": {
            "train": "sample://sst2_train.tsv",
            "validation": "sample://sst2_validation.tsv",
            "text_column": "sentence",
            "label_names": ["negative", "positive"],
            "max_train_rows": rows,
            "max_validation_rows": 64,
        },
        "training": {"batch_size": 32, "epochs": epochs, "log_every_steps": 8},
        "scaling": {"num_workers": 2},
        "deepspeed": {"zero_stage": zero_stage},
        "output": {"dir": str(output)},
    }


def run_raynlp(job: dict, work: Path) -> dict:
    """Launch `raynlp train` as a user would; time to first step from its own output."""
    path = work / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(BIN / "raynlp"), "train", str(path), "--overwrite"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    startup_s = None
    assert process.stdout is not None
    for line in process.stdout:
        if startup_s is None and "first step after" in line:
            startup_s = time.perf_counter() - started
        if "[raynlp]" in line:
            print(line.rstrip(), flush=True)
    if process.wait() != 0:
        raise RuntimeError("raynlp train failed")
    metrics = json.loads((Path(job["output"]["dir"]) / "throughput" / "metrics.json").read_text())
    return {
        "samples_per_s": metrics["history"][-1]["train_samples_per_s"],
        "startup_s": startup_s,
        "wall_s": time.perf_counter() - started,
    }


def run_plain_loop(job: dict, threads: int) -> dict:
    """The hand-written baseline: one process, `threads` intra-op threads, no Ray, no DeepSpeed."""
    from transformers import AutoTokenizer

    from raynlp.config import parse_job_config
    from raynlp.inference import trim_features
    from raynlp.models import resolve_model_path
    from raynlp.tasks import get_task
    from raynlp.tasks.base import InputSpec
    from raynlp.training.trainer import prepare_data

    torch.set_num_threads(threads)
    config = parse_job_config(job)
    task = get_task("classification")
    prepared = prepare_data(config)
    base = resolve_model_path("minilm")
    features = task.encode(
        prepared.train_rows,
        AutoTokenizer.from_pretrained(base),
        InputSpec.from_config(config),
        prepared.labels,
    )
    torch.manual_seed(0)
    model = task.build_model(base, prepared.labels, config)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, fused=True)
    batch_size, total = config.training.batch_size, len(features["labels"])
    counted, started = 0, None
    for step, start in enumerate(range(0, total - batch_size + 1, batch_size)):
        if (
            step == 2
        ):  # exclude the first steps (allocator and kernel warm-up) as raynlp's epoch 2 does
            started, counted = time.perf_counter(), 0
        batch = trim_features({k: v[start : start + batch_size] for k, v in features.items()})
        loss = model(**{k: torch.from_numpy(v) for k, v in batch.items()}).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        counted += batch_size
    assert started is not None
    return {"samples_per_s": counted / (time.perf_counter() - started), "threads": threads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--zero-stage", type=int, default=2)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="raynlp-throughput-"))
    job = job_config(args.rows, args.max_length, args.epochs, work / "runs", args.zero_stage)
    print(f"== raynlp train (Ray Train, 2 workers × 1 CPU, DeepSpeed ZeRO-{args.zero_stage})")
    raynlp = run_raynlp(job, work)
    print("== plain PyTorch loop (1 process × 2 threads)")
    plain = run_plain_loop(job, threads=2)
    ratio = raynlp["samples_per_s"] / plain["samples_per_s"]
    print(
        f"raynlp {raynlp['samples_per_s']:.1f} samples/s, plain {plain['samples_per_s']:.1f} "
        f"samples/s → ratio {ratio:.2f} (goal ≥ 1.0); startup {raynlp['startup_s']:.1f}s "
        "(goal ≤ 10 s)"
    )
    write_result(
        "train_throughput",
        {
            "ratio_vs_plain_loop": round(ratio, 3),
            "startup_s": round(raynlp["startup_s"], 1),
            "raynlp_samples_per_s": round(raynlp["samples_per_s"], 1),
            "plain_samples_per_s": round(plain["samples_per_s"], 1),
            "raynlp_wall_s": round(raynlp["wall_s"], 1),
            "setup": {
                "model": "packaged MiniLM-L6 + 2-class head",
                "rows": args.rows,
                "global_batch": 32,
                "max_length": args.max_length,
                "epochs": args.epochs,
                "zero_stage": args.zero_stage,
                "raynlp_workers": 2,
                "plain_threads": 2,
            },
        },
    )


if __name__ == "__main__":
    main()
