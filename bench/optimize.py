"""Deployment variants of a fine-tuned MiniLM on SST-2, scored and timed side by side, one run.

    .venv/bin/python bench/optimize.py --data-dir ../shared/data
    .venv/bin/python bench/report.py        # puts the table into the README

1. Fine-tune the packaged MiniLM-L6 (the teacher) on an SST-2 subset (`raynlp train`).
2. `raynlp optimize` on that run with every variant on: ONNX fp32, O2 graph fusions, dynamic
   INT8 (full; feed-forward kept fp32), static INT8 (calibrated on training rows), TorchScript,
   a distilled 3-layer student (Ray Train + DeepSpeed on the teacher's soft targets) and a
   pruned model (30% of heads and FFN neurons removed, one recovery epoch); each scored on the
   first --max-rows rows of SST-2 dev (default 500, the gate's default) and timed at batch 1
   (seq 32 and 128, one thread), batch 32 throughput.

Writes bench/results/optimize.json with every variant's accuracy, Δ, p50 at seq 128 and size,
and: int8_speedup (the fastest INT8 variant that holds the accuracy bound, else the fastest
INT8, vs PyTorch fp32, batch 1, seq 128, same threads), int8_accuracy_drop (fraction),
student_speedup and student_accuracy_ratio (student / teacher, both PyTorch fp32).
Goals: INT8 ≥ 4× at ≤ 0.003 drop; student ≥ 1.8× faster at ≥ 0.97 of the teacher's accuracy.
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

from raynlp.config import DEFAULT_EXPORT_VARIANTS

INT8 = ("onnx_int8", "onnx_int8_attention", "onnx_int8_static")


def teacher_job(data_dir: Path, output: str, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "name": "teacher",
        "task": "classification",
        "model": {"name_or_path": "minilm", "max_length": 128},
        "data": sst2_data(data_dir, args.train_rows, None),
        "training": {
            "batch_size": 32,
            "epochs": args.epochs,
            "learning_rate": 5e-5,
            "warmup_ratio": 0.06,
            "log_every_steps": 50,
            "seed": 42,
        },
        "scaling": {"num_workers": 2},
        "deepspeed": {"zero_stage": 2},
        "output": {"dir": output, "tensorboard": False},
        "export": {
            "variants": list(DEFAULT_EXPORT_VARIANTS),
            "max_metric_drop": args.max_drop,
            "threads": 1,
            "latency_samples": args.latency_samples,
            "distill": {
                "enabled": True,
                "layers": 3,
                "epochs": args.student_epochs,
                "learning_rate": 1e-4,
                "temperature": 2.0,
                "alpha": 0.5,
            },
            "prune": {
                "enabled": True,
                "heads_fraction": 0.3,
                "ffn_fraction": 0.3,
                "recovery_epochs": 1,
                "learning_rate": 3e-5,
            },
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder with sst2/train.tsv, dev.tsv")
    parser.add_argument("--train-rows", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--student-epochs", type=int, default=3)
    parser.add_argument("--max-drop", type=float, default=0.003, help="the gate's bound")
    parser.add_argument("--latency-samples", type=int, default=50)
    parser.add_argument("--max-rows", type=int, default=500, help="dev rows scored (872 = all)")
    parser.add_argument("--keep", help="keep the runs in this folder (default: a temp folder)")
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    if not (data_dir / "sst2" / "train.tsv").is_file():
        parser.error(f"no sst2/train.tsv under {data_dir}")

    from raynlp.config import parse_job_config
    from raynlp.export.onnx import pick_kernel_set
    from raynlp.export.pipeline import export_model, format_export_report
    from raynlp.runtime import ray_session
    from raynlp.training.trainer import train

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    output = args.keep or tempfile.mkdtemp(prefix="raynlp-bench-")
    started = time.perf_counter()
    config = parse_job_config(teacher_job(data_dir, output, args))
    with ray_session(num_cpus=2):
        teacher = train(config, overwrite=True)
        report = export_model(teacher.run_dir, max_rows=args.max_rows)  # export: section above
    print(format_export_report(report))

    variants = report["parity"]["variants"]
    torch_fp32 = variants["pytorch_fp32"]
    held = [n for n in INT8 if n in variants and variants[n]["metric_drop"] <= args.max_drop]
    pool = held or [n for n in INT8 if n in variants]
    int8 = min(pool, key=lambda n: variants[n]["p50_ms"])
    student = variants["student"]
    result = {
        "int8_variant": int8,
        "int8_speedup": round(torch_fp32["p50_ms"] / variants[int8]["p50_ms"], 3),
        "int8_accuracy_drop": round(variants[int8]["metric_drop"], 4),
        "student_speedup": round(torch_fp32["p50_ms"] / student["p50_ms"], 3),
        "student_accuracy_ratio": round(student["value"] / torch_fp32["value"], 4),
        "chosen": report["chosen"],
        "reason": report["reason"],
        "variants": {
            name: {
                "accuracy": round(row["value"], 4),
                "delta": round(-row["metric_drop"], 4),
                "agreement": round(row["agreement"], 4),
                "p50_ms_seq128": row["latency"]["seq128"]["p50_ms"],
                "p50_ms_seq32": row["latency"]["seq32"]["p50_ms"],
                "throughput_seq_per_s": row["throughput_seq_per_s"],
                "size_mb": row["size_mb"],
                "peak_memory_mb": row["peak_memory_mb"],
            }
            for name, row in variants.items()
        },
        "skipped": report["skipped"],
        "compression": report["compression"],
        "wall_s": round(time.perf_counter() - started, 1),
        "setup": {
            "data": "GLUE SST-2: first N rows of train after a seeded shuffle; first M of dev",
            "train_rows": args.train_rows,
            "validation_rows": report["parity"]["rows"],
            "teacher_epochs": args.epochs,
            "student": "3 layers (teacher layers 1, 3, 5), T=2, alpha=0.5, "
            f"{args.student_epochs} epochs",
            "pruning": "30% of heads and FFN neurons, 1 recovery epoch",
            "threads": 1,
            "kernel_set": pick_kernel_set("auto"),
            "model": "packaged all-MiniLM-L6-v2 (6 layers, 22.7M params)",
        },
    }
    print(
        f"int8 ({int8}) ×{result['int8_speedup']:.2f} at drop {result['int8_accuracy_drop']:+.4f}"
        f" (goal ≥ 4× at ≤ 0.003); student ×{result['student_speedup']:.2f} at "
        f"{result['student_accuracy_ratio']:.3f} of the teacher (goal ≥ 1.8× at ≥ 0.97)"
    )
    write_result("optimize", result)


if __name__ == "__main__":
    main()
