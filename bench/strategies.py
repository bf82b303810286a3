"""Full fine-tuning vs layer freezing vs progressive unfreezing on an SST-2 subset, in one run.

    .venv/bin/python bench/strategies.py --data-dir ../shared/data
    .venv/bin/python bench/report.py        # puts the table into the README

The packaged MiniLM (6 layers), the same rows, seed, batch, epochs and Ray Train + DeepSpeed
setup (2 CPU workers, ZeRO-2) for every strategy; only ``training.strategy`` (and the learning
rate each strategy is meant to use) differs:

- full: every parameter at 5e-5 (the rate the project's SST-2 job uses);
- freeze: embeddings + the lowest 4 layers frozen (the guide's "train the top 2 + head") at 1e-4;
- progressive: the guide's default schedule (head at 1e-3, then one more layer per stage at
  1e-4, then everything), spread over the same epochs.

Reported per strategy: validation accuracy (fraction) of the exported best checkpoint, wall time
of the whole `train()` call, trainable parameters (for progressive: per stage, and the largest),
peak resident memory of the largest worker process. Writes bench/results/strategies.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import sst2_data, write_result

STRATEGIES: dict[str, dict[str, Any]] = {
    "full": {"strategy": "full", "learning_rate": 5e-5},
    "freeze": {
        "strategy": "freeze",
        "learning_rate": 1e-4,
        "freeze": {"embeddings": True, "layers": 4},
    },
    "progressive": {"strategy": "progressive"},
}


def job(name: str, data_dir: Path, output: str, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "name": name,
        "task": "classification",
        "model": {"name_or_path": "minilm", "max_length": 64},
        "data": sst2_data(data_dir, args.train_rows, args.validation_rows),
        "training": {
            "batch_size": 32,
            "epochs": args.epochs,
            "warmup_ratio": 0.06,
            "log_every_steps": 20,
            "seed": 42,
            **STRATEGIES[name],
        },
        "scaling": {"num_workers": 2},
        "deepspeed": {"zero_stage": 2},
        "output": {"dir": output, "checkpoints_to_keep": 1, "tensorboard": False},
    }


def run_one(name: str, data_dir: Path, output: str, args: argparse.Namespace) -> dict[str, Any]:
    from raynlp.config import parse_job_config
    from raynlp.training.trainer import train

    config = parse_job_config(job(name, data_dir, output, args))
    started = time.perf_counter()
    result = train(config, overwrite=True)
    wall = time.perf_counter() - started
    history = result.metrics["history"]
    stages = result.metrics["stages"]
    return {
        "accuracy": round(result.metrics["validation"]["accuracy"], 4),
        "wall_s": round(wall, 1),
        "trainable_params": max(s["trainable"] for s in stages),
        "trainable_params_per_stage": [s["trainable"] for s in stages],
        "peak_mem_mb": max(h["peak_mem_mb"] for h in history),
        "train_samples_per_s": round(
            sum(h["train_samples_per_s"] for h in history) / len(history), 1
        ),
        "best_epoch": result.metrics["best_epoch"],
        "accuracy_per_epoch": [round(h["val_accuracy"], 4) for h in history],
        "learning_rate": config.training.learning_rate,
        "stages": [{"step": s["step"], "trainable": s["trainable"]} for s in stages],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder with sst2/train.tsv, dev.tsv")
    parser.add_argument("--train-rows", type=int, default=2000)
    parser.add_argument("--validation-rows", type=int, default=872, help="872 = all of SST-2 dev")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=list(STRATEGIES), default=list(STRATEGIES))
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    if not (data_dir / "sst2" / "train.tsv").is_file():
        parser.error(f"no sst2/train.tsv under {data_dir}")

    from raynlp.runtime import ray_session

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="raynlp-bench-") as output, ray_session(num_cpus=2):
        for name in args.only:
            print(f"=== {name} ===", flush=True)
            results[name] = run_one(name, data_dir, output, args)
            print(f"=== {name}: {results[name]}", flush=True)

    print("\nstrategy     accuracy  wall_s  trainable_params  peak_mem_mb")
    for name, row in results.items():
        print(
            f"{name:<12} {row['accuracy']:>8.4f} {row['wall_s']:>7.1f} "
            f"{row['trainable_params']:>17,} {row['peak_mem_mb']:>12.0f}"
        )
    if "full" in results:
        for name in ("freeze", "progressive"):
            if name in results:
                print(
                    f"{name} vs full: wall ×{results[name]['wall_s'] / results['full']['wall_s']:.2f}, "
                    f"accuracy {results[name]['accuracy'] - results['full']['accuracy']:+.4f}"
                )
    write_result(
        "strategies",
        {
            **results,
            "setup": {
                "data": "GLUE SST-2: first N rows of train after a seeded shuffle; dev",
                "train_rows": args.train_rows,
                "validation_rows": args.validation_rows,
                "epochs": args.epochs,
                "model": "packaged all-MiniLM-L6-v2 (6 layers, 22.7M params)",
                "workers": 2,
                "zero_stage": 2,
                "max_length": 64,
                "batch_size": 32,
            },
        },
    )


if __name__ == "__main__":
    main()
