"""ASHA vs running every configuration to the end (FIFO), same grid, same seeds, one run.

    .venv/bin/python bench/tune.py --data-dir ../shared/data
    .venv/bin/python bench/report.py        # puts the table into the README

The packaged MiniLM fine-tuned on an SST-2 subset by ``raynlp tune`` twice, over the same grid
(learning rate × batch size, 8 configurations, ``search_alg: grid``) with the same
``training.seed``: once with ``scheduler: fifo`` (every trial runs all its epochs) and once with
``scheduler: asha`` (trials below the rung cutoff stop at epoch rungs). Each trial is one 1-CPU
Ray Train + DeepSpeed worker; two trials run at a time on 2 CPUs, so ASHA runs as synchronous
successive halving (``tune.asha.synchronous: auto``): with grace 1 and factor 4 over 6 epochs,
8 trials train to epoch 1, the best 2 to epoch 4, the best one to epoch 6.

Reported: total optimizer steps of all trials, trial-epochs run, wall time and the best
validation accuracy of each search; ``compute_ratio`` = ASHA steps / FIFO steps and
``accuracy_gap`` = best FIFO accuracy − best ASHA accuracy (fractions). The issue's goal:
compute_ratio ≤ 0.4 for accuracy_gap ≤ 0.005. Writes bench/results/tune.json.
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

LEARNING_RATES = [1e-5, 3e-5, 1e-4, 3e-4]
BATCH_SIZES = [16, 32]


def job(scheduler: str, data_dir: Path, output: str, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "name": f"bench_{scheduler}",
        "task": "classification",
        "model": {"name_or_path": "minilm", "max_length": 64},
        "data": sst2_data(data_dir, args.train_rows, args.validation_rows),
        "training": {
            "epochs": args.epochs,
            "warmup_ratio": 0.06,
            "log_every_steps": 50,
            "seed": 42,
        },
        "scaling": {"num_workers": 1},
        "deepspeed": {"zero_stage": 2},
        "output": {"dir": output, "tensorboard": False},
        "tune": {
            "space": {
                "learning_rate": {"grid": LEARNING_RATES},
                "batch_size": {"grid": BATCH_SIZES},
            },
            "search_alg": "grid",
            "num_samples": 1,
            "scheduler": scheduler,
            "asha": {"grace_period": 1, "reduction_factor": args.reduction_factor},
            "checkpoints_to_keep": 1,
            "max_concurrent_trials": 2,
        },
    }


def run_one(scheduler: str, data_dir: Path, output: str, args: argparse.Namespace) -> dict:
    from raynlp.config import parse_job_config
    from raynlp.tuning.tuner import tune

    config = parse_job_config(job(scheduler, data_dir, output, args))
    started = time.perf_counter()
    result = tune(config, overwrite=True)
    wall = time.perf_counter() - started
    ok = [t for t in result.trials if t["status"] == "ok"]
    return {
        "best_accuracy": round(result.best["best"]["val_accuracy"], 4),
        "best_config": {
            "learning_rate": result.best["best"]["learning_rate"],
            "batch_size": result.best["best"]["batch_size"],
        },
        "total_steps": sum(t["steps"] for t in ok),
        "trial_epochs": sum(t["epochs_run"] for t in ok),
        "stopped_early": sum(t["stopped_early"] for t in ok),
        "trials": len(result.trials),
        "failed": len(result.trials) - len(ok),
        "wall_s": round(wall, 1),
        "per_trial": [
            {
                "learning_rate": t["learning_rate"],
                "batch_size": t["batch_size"],
                "accuracy": round(t["val_accuracy"], 4),
                "epochs_run": t["epochs_run"],
                "steps": t["steps"],
            }
            for t in ok
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder with sst2/train.tsv, dev.tsv")
    parser.add_argument("--train-rows", type=int, default=400)
    parser.add_argument("--validation-rows", type=int, default=None, help="default: all 872")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--reduction-factor", type=float, default=4.0)
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    if not (data_dir / "sst2" / "train.tsv").is_file():
        parser.error(f"no sst2/train.tsv under {data_dir}")

    from raynlp.runtime import ray_session

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="raynlp-bench-") as output, ray_session(num_cpus=2):
        for scheduler in ("fifo", "asha"):
            print(f"=== {scheduler} ===", flush=True)
            results[scheduler] = run_one(scheduler, data_dir, output, args)
            print(f"=== {scheduler}: {results[scheduler]}", flush=True)

    from raynlp.config import parse_job_config
    from raynlp.tuning.tuner import describe_scheduler

    plan = describe_scheduler(
        parse_job_config(job("asha", data_dir, "x", args)), args.epochs, parallel=2
    )
    fifo, asha = results["fifo"], results["asha"]
    compute_ratio = asha["total_steps"] / fifo["total_steps"]
    accuracy_gap = fifo["best_accuracy"] - asha["best_accuracy"]
    print("\nscheduler  best_acc  total_steps  trial_epochs  stopped_early  wall_s")
    for name, row in results.items():
        print(
            f"{name:<10} {row['best_accuracy']:>8.4f} {row['total_steps']:>12} "
            f"{row['trial_epochs']:>13} {row['stopped_early']:>14} {row['wall_s']:>7.1f}"
        )
    print(
        f"compute_ratio (ASHA steps / FIFO steps) {compute_ratio:.3f}; accuracy_gap "
        f"(best FIFO − best ASHA) {accuracy_gap:+.4f}; goal ≤ 0.4 for ≤ 0.005: "
        f"{'met' if compute_ratio <= 0.4 and accuracy_gap <= 0.005 else 'not met'}"
    )
    write_result(
        "tune",
        {
            "compute_ratio": round(compute_ratio, 4),
            "accuracy_gap": round(accuracy_gap, 4),
            "wall_ratio": round(asha["wall_s"] / fifo["wall_s"], 3),
            "goal_met": compute_ratio <= 0.4 and accuracy_gap <= 0.005,
            "fifo": fifo,
            "asha": asha,
            "setup": {
                "data": "GLUE SST-2: first N rows of train after a seeded shuffle; dev (all or first M)",
                "train_rows": args.train_rows,
                "validation_rows": args.validation_rows,
                "epochs": args.epochs,
                "grid": {"learning_rate": LEARNING_RATES, "batch_size": BATCH_SIZES},
                "asha": {"grace_period": 1, "reduction_factor": args.reduction_factor},
                "asha_plan": plan,
                "model": "packaged all-MiniLM-L6-v2 (6 layers, 22.7M params)",
                "trial": "1 Ray Train worker (1 CPU), DeepSpeed ZeRO-2; 2 trials at a time",
                "seed": 42,
            },
        },
    )


if __name__ == "__main__":
    main()
