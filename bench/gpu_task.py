"""GPU accuracy run of any raynlp task with the packaged MiniLM: train, then score validation.

    PYTHONPATH=src python bench/gpu_task.py --task ner --base DIR --train FILE --validation FILE \
        [--epochs 3] [--batch-size 32] [--learning-rate 1e-4] [--max-length 128] [--out JSON]

The device machine has no Ray, so this is the loop of raynlp's Ray Train worker without Ray:
the task's own model, encoding, loss, `infer`, `predictions` and `compute_metrics`, DeepSpeed
ZeRO-2 with bf16 from `scaling.use_gpu` (training/deepspeed.py), an NCCL group of world size 1.
`--cpu-smoke` rehearses it on CPU with a tiny random model.
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
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from gpu_check import init_process_group  # noqa: E402
from gpu_summarization import tiny_base  # noqa: E402


def run(args: argparse.Namespace, use_gpu: bool) -> dict:
    import deepspeed
    from transformers import AutoTokenizer

    from raynlp.config import parse_job_config
    from raynlp.data.readers import read_rows
    from raynlp.inference import batches
    from raynlp.tasks import get_task
    from raynlp.tasks.base import InputSpec, merge_outputs
    from raynlp.training.deepspeed import build_deepspeed_config, resolve_precision
    from raynlp.training.steps import trim_padding
    from raynlp.training.strategies import Strategy

    base = Path(args.base) if use_gpu else tiny_base(Path(args.base))
    job = {
        "name": f"gpu-{args.task}",
        "task": args.task,
        "model": {"name_or_path": str(base), "max_length": args.max_length},
        "data": {"train": args.train, "validation": args.validation},
        "training": {
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "warmup_ratio": 0.1,
        },
        "scaling": {"num_workers": 1, "use_gpu": use_gpu},
        "deepspeed": {"zero_stage": 2, "precision": "auto"},
    }
    if args.task == "qa":
        job["qa"] = {"doc_stride": args.max_length // 3}
    config = parse_job_config(job)
    task, spec = get_task(args.task), InputSpec.from_config(config)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    train_rows, validation_rows = read_rows(args.train), read_rows(args.validation)
    if args.max_train_rows:
        train_rows = train_rows[: args.max_train_rows]
    if args.max_validation_rows:
        validation_rows = validation_rows[: args.max_validation_rows]
    labels = task.label_names(config, train_rows + validation_rows)
    features = task.encode(train_rows, tokenizer, spec, labels)
    total = len(features["example_index"])
    torch.manual_seed(0)
    model = task.build_model(str(base), labels, spec)
    steps_per_epoch = total // args.batch_size
    strategy = Strategy(config, model, 1, steps_per_epoch * args.epochs)
    strategy.prepare(model)
    optimizer = strategy.build_optimizer(model)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=strategy.build_scheduler(optimizer),
        config=build_deepspeed_config(config),
    )
    device = torch.device("cuda", 0) if use_gpu else torch.device("cpu")
    sync = torch.cuda.synchronize if use_gpu else (lambda: None)
    validation = task.encode(validation_rows, tokenizer, spec, labels, targets=False)

    def evaluate() -> dict:
        engine.eval()
        parts = []
        with torch.no_grad():
            for part in batches(validation, 128):
                batch = trim_padding(
                    {k: torch.from_numpy(v) for k, v in part.items()}, task.token_columns
                )
                parts.append(task.infer(engine, {k: v.to(device) for k, v in batch.items()}, spec))
        engine.train()
        predictions = task.predictions(
            merge_outputs(parts), validation_rows, spec, labels, tokenizer
        )
        metrics = task.compute_metrics(predictions, validation_rows, spec, labels)
        return {k: round(float(v), 4) for k, v in metrics.items() if isinstance(v, (int, float))}

    history, rng, samples = [], np.random.default_rng(0), 0
    sync()
    started = time.perf_counter()
    for epoch in range(args.epochs):
        order = rng.permutation(total)
        for step in range(steps_per_epoch):
            index = order[step * args.batch_size : (step + 1) * args.batch_size]
            batch = trim_padding(
                {k: torch.from_numpy(v[index]) for k, v in features.items()}, task.token_columns
            )
            loss = task.loss(engine, {k: v.to(device) for k, v in batch.items()})
            engine.backward(loss)
            engine.step()
            samples += len(index)
        sync()
        history.append({"epoch": epoch + 1, "loss": round(float(loss), 4), **evaluate()})
        print(json.dumps(history[-1]), flush=True)
    wall = time.perf_counter() - started
    return {
        "task": args.task,
        "precision": resolve_precision(config),
        "zero_stage": 2,
        "train_rows": len(train_rows),
        "train_features": total,
        "validation_rows": len(validation_rows),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "max_length": args.max_length,
        "wall_s_with_validation": round(wall, 1),
        "train_samples_per_s": round(samples / wall, 1),
        "best_metric": task.best_metric,
        "best": max(h[task.best_metric] for h in history),
        "history": history,
        "max_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if use_gpu else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--base", required=True, help="MiniLM folder (weights + tokenizer)")
    parser.add_argument("--train", required=True)
    parser.add_argument("--validation", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--max-train-rows", type=int)
    parser.add_argument("--max-validation-rows", type=int)
    parser.add_argument("--out")
    parser.add_argument("--cpu-smoke", action="store_true")
    args = parser.parse_args()

    use_gpu = not args.cpu_smoke
    result = {
        "gpu": torch.cuda.get_device_name(0) if use_gpu else "none (cpu smoke)",
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    init_process_group(use_gpu)
    try:
        result["run"] = run(args, use_gpu)
    finally:
        dist.destroy_process_group()
    out = Path(args.out or tempfile.mktemp(suffix=".json"))
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
