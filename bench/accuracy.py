"""SST-2 accuracy: fine-tune the packaged MiniLM on GLUE SST-2 train, score the official dev set.

    .venv/bin/python bench/accuracy.py --data-dir ../shared/data [--max-train-rows N] [--epochs E]

Runs the real pipeline (raynlp train → Ray Train 2 workers ZeRO-2 → consolidated model →
raynlp export INT8) and scores both the PyTorch and the INT8 model on all 872 dev rows.
Full SST-2 (67k rows) takes about an hour per epoch on 2 CPU cores; --max-train-rows bounds it.
Writes bench/results/accuracy.json (sst2_dev_accuracy and int8 accuracy as fractions).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = {"minilm_l6_h384_sst2_dev": 0.915}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder holding sst2/train.tsv, dev.tsv")
    parser.add_argument("--max-train-rows", type=int, help="a seeded random sample of N train rows")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=64)
    args = parser.parse_args()

    sst2 = Path(args.data_dir) / "sst2"
    job = yaml.safe_load((REPO / "jobs" / "sst2_full.yaml").read_text())
    job["data"].update(train=str(sst2 / "train.tsv"), validation=str(sst2 / "dev.tsv"))
    if args.max_train_rows:
        job["data"]["max_train_rows"] = args.max_train_rows
    job["training"].update(epochs=args.epochs, learning_rate=args.learning_rate)
    job["model"]["max_length"] = args.max_length
    work = Path(tempfile.mkdtemp(prefix="raynlp-accuracy-"))
    job["output"]["dir"] = str(work / "runs")
    (work / "job.yaml").write_text(yaml.safe_dump(job))
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}

    started = time.perf_counter()
    subprocess.run([str(bin_dir / "raynlp"), "train", str(work / "job.yaml")], check=True, env=env)
    train_s = time.perf_counter() - started
    run_dir = work / "runs" / job["name"]

    from raynlp.evaluation import evaluate_model
    from raynlp.export.pipeline import export_model

    dev = str(sst2 / "dev.tsv")
    pytorch = evaluate_model(run_dir / "model", dev)["metrics"]
    # The default bound, so served_* below is what `raynlp export` would really serve.
    report = export_model(run_dir, data=dev, max_rows=None)
    int8 = report["parity"]["variants"]["onnx_int8"]
    served = report["parity"]["variants"][report["chosen"]]
    print(
        f"SST-2 dev accuracy: PyTorch {pytorch['accuracy']:.4f}, INT8 {int8['value']:.4f} "
        f"(agreement {int8['agreement']:.2%}); published MiniLM-L6-H384 0.915"
    )
    write_result(
        "accuracy",
        {
            "sst2_dev_accuracy": round(pytorch["accuracy"], 4),
            "sst2_dev_accuracy_int8": round(int8["value"], 4),
            "sst2_dev_int8_agreement": round(int8["agreement"], 4),
            "served_variant": report["chosen"],
            "served_accuracy": round(served["value"], 4),
            "served_agreement": round(served["agreement"], 4),
            "sst2_dev_f1_macro": round(pytorch["f1_macro"], 4),
            "dev_rows": pytorch["num_examples"],
            "train_rows": args.max_train_rows or "all (67,349)",
            "epochs": args.epochs,
            "learning_rate": args.learning_rate,
            "max_length": args.max_length,
            "train_wall_s": round(train_s, 1),
            "published_reference": PUBLISHED,
        },
    )


if __name__ == "__main__":
    main()
