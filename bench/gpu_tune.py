"""GPU check of `raynlp tune`: trials of Ray Train + DeepSpeed (NCCL, bf16) sharing one GPU.

    PYTHONPATH=src python bench/gpu_tune.py --base DIR [--trials 4] [--epochs 3] [--out F]

Each trial is one worker with half a GPU (``scaling.resources_per_worker: {GPU: 0.5}``), so
two trials train at once on one card; 4 learning rates under ASHA (grace 1, factor 2; with
fewer trials at once than in the search, raynlp's synchronous successive halving) on the
shipped SST-2 sample (2,000 rows, all 400 validation rows). Writes the trial table, the plan,
the wall time and the best accuracy as JSON. DIR is a BERT-family model folder (on the device
machine the packaged MiniLM in bf16, .gpu/minilm-bf16). Needs Ray on the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--gpu-per-trial", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=Path("bench/results/gpu_tune.json"))
    parser.add_argument(
        "--cpu", action="store_true", help="a dry run on CPU workers (1 CPU per trial, 400 rows)"
    )
    parser.add_argument(
        "--diagnose-after",
        type=float,
        default=0.0,
        help="print the cluster's free resources and placement groups every S seconds",
    )
    args = parser.parse_args()

    import ray
    import torch

    from raynlp.config import parse_job_config
    from raynlp.runtime import ray_session
    from raynlp.tuning.tuner import tune

    rates = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-6][: args.trials]
    job = {
        "name": "gpu-tune",
        "task": "classification",
        "model": {"name_or_path": str(args.base.resolve()), "max_length": 128},
        "data": {
            "train": "sample://sst2_train.tsv",
            "validation": "sample://sst2_validation.tsv",
            "text_column": "sentence",
            "label_names": ["negative", "positive"],
        },
        "training": {"batch_size": 32, "epochs": args.epochs, "log_every_steps": 20},
        "scaling": {
            "num_workers": 1,
            "use_gpu": not args.cpu,
            "resources_per_worker": (
                {"CPU": 1} if args.cpu else {"CPU": 2, "GPU": args.gpu_per_trial}
            ),
        },
        "deepspeed": {"zero_stage": 2, "precision": "auto"},
        "output": {"dir": tempfile.mkdtemp(prefix="gpu-tune-")},
        "tune": {
            "space": {"learning_rate": {"grid": rates}},
            "search_alg": "grid",
            "num_samples": 1,
            "scheduler": "asha",
            "asha": {"grace_period": 1, "reduction_factor": 2},
        },
    }
    if args.cpu:
        job["data"]["max_train_rows"] = 400
    config = parse_job_config(job)
    start = time.perf_counter()
    with ray_session():
        cluster = ray.cluster_resources()
        print(f"[gpu_tune] cluster {cluster}", flush=True)
        if args.diagnose_after:
            _watch(args.diagnose_after)
        result = tune(config)
    wall = time.perf_counter() - start
    keys = ("trial", "status", "learning_rate", "val_accuracy", "best_epoch", "epochs_run",
            "stopped_early", "steps", "error")  # fmt: skip
    trials = [{key: row[key] for key in keys if key in row} for row in result.trials]
    epochs_run = sum(int(row.get("epochs_run", 0)) for row in trials)
    out = {
        "gpu": torch.cuda.get_device_name(0) if not args.cpu else "none (--cpu)",
        "torch": torch.__version__,
        "ray": ray.__version__,
        "python": platform.python_version(),
        "cluster": {k: v for k, v in cluster.items() if k in ("CPU", "GPU")},
        "gpu_per_trial": args.gpu_per_trial,
        "trials": trials,
        "trial_epochs_run": epochs_run,
        "trial_epochs_full": args.trials * args.epochs,
        "best": {k: result.best["best"].get(k) for k in ("trial", "learning_rate", "val_accuracy")},
        "total_steps": result.best["total_steps"],
        "stopped_early": result.best["stopped_early"],
        "model_files": sorted(p.name for p in result.model_dir.iterdir()),
        "wall_s": round(wall, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2), flush=True)
    print(f"wrote {args.out}")


def _watch(every: float) -> None:
    """A daemon thread that prints what is free and which placement groups wait (a trial's
    Train run that cannot get its workers shows up as a PENDING group)."""
    import threading

    import ray
    from ray.util import placement_group_table

    def loop() -> None:
        while True:
            time.sleep(every)
            groups = [(g.get("state"), g.get("bundles")) for g in placement_group_table().values()]
            free = {k: v for k, v in ray.available_resources().items() if k in ("CPU", "GPU")}
            print(f"[gpu_tune] free {free} groups {groups}", flush=True)

    threading.Thread(target=loop, daemon=True).start()


if __name__ == "__main__":
    main()
