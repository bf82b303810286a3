"""GPU check of one task end to end: summarization training + beam-search generation.

    PYTHONPATH=src python bench/gpu_summarization.py --base DIR --train T.jsonl \
        --validation V.jsonl [--epochs 3] [--out results.json] [--cpu-smoke]

Runs raynlp's own pieces on one GPU (NCCL process group of world size 1, bf16, DeepSpeed ZeRO-2
decided by training/deepspeed.py from `scaling.use_gpu`): the summarization task warm-starts a
BERT2BERT encoder-decoder from the MiniLM folder DIR, trains teacher-forced on the XSum rows,
then generates a summary for every validation row with beam search (the task's own `infer`)
and scores ROUGE with the task's own metric, next to the lead-1 baseline. Ray is not used: the
device machine has no Ray (see bench/gpu_check.py). `--cpu-smoke` rehearses it on CPU with a
tiny random model.
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


def tiny_base(tokenizer_dir: Path) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertModel

    target = Path(tempfile.mkdtemp()) / "tiny"
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    BertModel(config).save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    return target


def run(args: argparse.Namespace, use_gpu: bool) -> dict:
    import deepspeed
    from transformers import AutoTokenizer

    from raynlp.config import parse_job_config
    from raynlp.data.readers import read_rows
    from raynlp.inference import batches
    from raynlp.metrics import lead_sentences, rouge_metrics
    from raynlp.tasks import get_task
    from raynlp.tasks.base import InputSpec, merge_outputs
    from raynlp.tasks.summarization import sentences_per_line
    from raynlp.training.deepspeed import build_deepspeed_config, resolve_precision
    from raynlp.training.steps import trim_padding
    from raynlp.training.strategies import Strategy

    base = Path(args.base) if use_gpu else tiny_base(Path(args.base))
    config = parse_job_config(
        {
            "name": "gpu-summarization",
            "task": "summarization",
            "model": {"name_or_path": str(base), "max_length": args.max_length},
            "data": {"train": args.train, "validation": args.validation},
            "training": {"batch_size": args.batch_size, "learning_rate": args.learning_rate},
            "summarization": {"max_target_length": 48, "num_beams": 4, "max_new_tokens": 40},
            "scaling": {"num_workers": 1, "use_gpu": use_gpu},
            "deepspeed": {"zero_stage": 2, "precision": "auto"},
        }
    )
    task, spec = get_task("summarization"), InputSpec.from_config(config)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    train_rows, validation_rows = read_rows(args.train), read_rows(args.validation)
    if args.max_validation_rows:
        validation_rows = validation_rows[: args.max_validation_rows]
    features = task.encode(train_rows, tokenizer, spec, None)
    torch.manual_seed(0)
    model = task.build_model(str(base), None, spec)
    steps_per_epoch = len(train_rows) // args.batch_size
    total_steps = steps_per_epoch * args.epochs
    strategy = Strategy(config, model, 1, total_steps)
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

    losses, samples = [], 0
    sync()
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    for _ in range(args.epochs):
        order = rng.permutation(len(train_rows))
        for step in range(steps_per_epoch):
            index = order[step * args.batch_size : (step + 1) * args.batch_size]
            batch = {k: torch.from_numpy(v[index]) for k, v in features.items()}
            batch = {k: v.to(device) for k, v in trim_padding(batch, task.token_columns).items()}
            loss = task.loss(engine, batch)
            engine.backward(loss)
            engine.step()
            losses.append(float(loss.detach()))
            samples += len(index)
    sync()
    train_s = time.perf_counter() - started

    module = engine.module.eval()
    validation = task.encode(validation_rows, tokenizer, spec, None, targets=False)
    parts = []
    sync()
    started = time.perf_counter()
    with torch.no_grad():
        for part in batches(validation, args.generate_batch_size):
            batch = trim_padding(
                {k: torch.from_numpy(v) for k, v in part.items()}, task.token_columns
            )
            batch = {k: v.to(device) for k, v in batch.items()}
            parts.append(task.infer(module, batch, spec))
    sync()
    generate_s = time.perf_counter() - started
    predictions = task.predictions(merge_outputs(parts), validation_rows, spec, None, tokenizer)
    metrics = task.compute_metrics(predictions, validation_rows, spec, None)
    lead = rouge_metrics(
        [sentences_per_line(lead_sentences(r["document"], 1)) for r in validation_rows],
        [sentences_per_line(r["summary"]) for r in validation_rows],
    )
    return {
        "model": "BERT2BERT warm-started from " + ("MiniLM" if use_gpu else "a tiny random BERT"),
        "parameters": sum(p.numel() for p in module.parameters()),
        "precision": resolve_precision(config),
        "zero_stage": 2,
        "train_rows": len(train_rows),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "train_s": round(train_s, 1),
        "train_samples_per_s": round(samples / train_s, 1),
        "loss_first10": round(float(np.mean(losses[:10])), 4),
        "loss_last10": round(float(np.mean(losses[-10:])), 4),
        "validation_rows": len(validation_rows),
        "generation": {**task.generation_kwargs(spec), "batch_size": args.generate_batch_size},
        "generate_s": round(generate_s, 1),
        "summaries_per_s": round(len(validation_rows) / generate_s, 2),
        "rouge": {k: round(metrics[k], 4) for k in ("rouge1", "rouge2", "rougeL")},
        "lead1_rouge": {k: round(lead[k], 4) for k in ("rouge1", "rouge2", "rougeL")},
        "example": {
            "reference": validation_rows[0]["summary"],
            "generated": predictions[0]["summary"],
        },
        "max_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if use_gpu else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="MiniLM folder (weights + tokenizer)")
    parser.add_argument("--train", required=True)
    parser.add_argument("--validation", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--generate-batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--max-validation-rows", type=int)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_summarization.json"))
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
        result["summarization"] = run(args, use_gpu)
    finally:
        dist.destroy_process_group()
    print(json.dumps(result, indent=2))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
