"""GPU check of raynlp's training path: NCCL + bf16 + DeepSpeed ZeRO-2 on one GPU, and ORT CUDA.

    PYTHONPATH=src python bench/gpu_check.py --tokenizer DIR [--zero-stages 2 3] [--out results.json]

Runs raynlp's own pieces — the job config (scaling.use_gpu → NCCL + bf16, decided in
training/deepspeed.py), the classification task, the optimizer/scheduler/padding helpers of
training/steps.py, and the checkpoint save + consolidation of training/checkpoints.py — in one
process with an NCCL process group of world size 1, on a BERT-base-sized model (random init:
no weights can be downloaded on the device machine). Ray is not used here: the device machine
cannot install it (no network; the wheel is larger than what may be carried there).
Then: ONNX Runtime's CUDA provider on the exported model, if that provider exists there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[1]


def init_process_group(use_gpu: bool) -> None:
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29512")
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")
    if use_gpu:
        torch.cuda.set_device(0)
    dist.init_process_group("nccl" if use_gpu else "gloo", rank=0, world_size=1)


def base_model_dir(tokenizer_dir: Path, target: Path, small: bool = False) -> Path:
    """A BERT-base-sized encoder (12 × 768, random init) with the MiniLM tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    size = (
        {
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 128,
        }
        if small
        else {}
    )
    config = BertConfig(vocab_size=tokenizer.vocab_size, max_position_embeddings=512, **size)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    return target


def peak_tflops() -> float | None:
    """Dense bf16 peak of the GPU (model FLOPs utilization = achieved / this)."""
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    for key, peak in (("H200", 989.0), ("H100", 989.0), ("A100", 312.0), ("A10G", 125.0)):
        if key in name:
            return peak
    return None


def train_check(
    model_dir: Path,
    steps: int,
    batch_size: int,
    max_length: int,
    use_gpu: bool = True,
    zero_stage: int = 2,
) -> dict:
    import deepspeed
    from transformers import AutoTokenizer

    from raynlp.config import parse_job_config
    from raynlp.data.readers import read_rows
    from raynlp.tasks import get_task
    from raynlp.tasks.base import InputSpec
    from raynlp.training.checkpoints import consolidated_state_dict, save_checkpoint
    from raynlp.training.deepspeed import (
        build_deepspeed_config,
        distributed_backend,
        resolve_precision,
    )
    from raynlp.training.steps import trim_padding
    from raynlp.training.strategies import Strategy

    config = parse_job_config(
        {
            "name": "gpu-check",
            "model": {"name_or_path": str(model_dir), "max_length": max_length},
            "data": {
                "train": "sample://sst2_train.tsv",
                "text_column": "sentence",
                "label_names": ["negative", "positive"],
            },
            "training": {"batch_size": batch_size, "learning_rate": 5e-5},
            "scaling": {"num_workers": 1, "use_gpu": use_gpu},
            "deepspeed": {"zero_stage": zero_stage, "precision": "auto"},
        }
    )
    backend, precision = distributed_backend(config), resolve_precision(config)
    assert (backend, precision) == (("nccl", "bf16") if use_gpu else ("gloo", "fp32"))
    task = get_task("classification")
    labels = ["negative", "positive"]
    rows = read_rows("sample://sst2_train.tsv")
    features = task.encode(
        rows, AutoTokenizer.from_pretrained(str(model_dir)), InputSpec.from_config(config), labels
    )
    torch.manual_seed(0)
    model = task.build_model(str(model_dir), labels, config)
    strategy = Strategy(config, model, 1, steps)
    strategy.prepare(model)
    optimizer = strategy.build_optimizer(model)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=strategy.build_scheduler(optimizer),
        config=build_deepspeed_config(config),
    )
    device = torch.device("cuda", 0) if use_gpu else torch.device("cpu")
    synchronize = torch.cuda.synchronize if use_gpu else (lambda: None)
    params = sum(p.numel() for p in model.parameters())
    losses, tokens, timed_samples = [], 0, 0
    started = None
    total = len(features["labels"])
    for step in range(steps):
        start = (step * batch_size) % (total - batch_size)
        batch = {k: torch.from_numpy(v[start : start + batch_size]) for k, v in features.items()}
        batch = {k: v.to(device) for k, v in trim_padding(batch).items()}
        if step == 5:
            synchronize()
            started, tokens, timed_samples = time.perf_counter(), 0, 0
        loss = task.loss(engine, batch)
        engine.backward(loss)
        engine.step()
        losses.append(float(loss.detach()))
        tokens += int(batch["attention_mask"].sum())
        timed_samples += batch_size
    synchronize()
    seconds = time.perf_counter() - started
    # Training FLOPs ≈ 6 × parameters × tokens (dense transformer estimate).
    achieved_tflops = 6 * params * tokens / seconds / 1e12

    with tempfile.TemporaryDirectory() as directory:
        save_checkpoint(engine, Path(directory), {"epoch": 1, "step": steps, "history": []}, 0)
        state = consolidated_state_dict(Path(directory))
    fresh = task.build_model(str(model_dir), labels, config).to(device).eval()
    fresh.load_state_dict(state, strict=False)
    probe = {k: torch.from_numpy(v[:64]).to(device) for k, v in features.items() if k != "labels"}
    engine.eval()
    with torch.no_grad():
        engine_logits = engine(**probe).logits.float()
        consolidated_logits = fresh(**probe).logits.float()
    agreement = float((engine_logits.argmax(-1) == consolidated_logits.argmax(-1)).float().mean())
    return {
        "backend": dist.get_backend(),
        "precision": precision,
        "zero_stage": zero_stage,
        "parameters": params,
        "steps": steps,
        "batch_size": batch_size,
        "samples_per_s": round(timed_samples / seconds, 1),
        "achieved_tflops": round(achieved_tflops, 1),
        "peak_tflops": peak_tflops(),
        "mfu": round(achieved_tflops / peak_tflops(), 4) if peak_tflops() else None,
        "loss_first5": round(float(np.mean(losses[:5])), 4),
        "loss_last5": round(float(np.mean(losses[-5:])), 4),
        "consolidated_argmax_agreement_bf16_engine_vs_fp32": agreement,
        "max_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if use_gpu else None,
    }


def ray_train_check(model_dir: Path, work: Path) -> dict:
    """The real `raynlp train` path: TorchTrainer, 1 GPU worker, NCCL + bf16 + ZeRO-2."""
    from raynlp.config import parse_job_config
    from raynlp.runtime import ray_session
    from raynlp.training.trainer import train

    config = parse_job_config(
        {
            "name": "gpu-ray",
            "model": {"name_or_path": str(model_dir), "max_length": 128},
            "data": {
                "train": "sample://sst2_train.tsv",
                "validation": "sample://sst2_validation.tsv",
                "text_column": "sentence",
                "label_names": ["negative", "positive"],
            },
            "training": {
                "batch_size": 32,
                "learning_rate": 5e-5,
                "epochs": 2,
                "log_every_steps": 20,
            },
            "scaling": {
                "num_workers": 1,
                "use_gpu": True,
                "resources_per_worker": {"CPU": 4, "GPU": 1},
            },
            "deepspeed": {"zero_stage": 2, "precision": "auto"},
            "output": {"dir": str(work)},
        }
    )
    with ray_session():
        result = train(config)
    return {
        "wall_s": result.metrics["wall_s"],
        "history": result.metrics["history"],
        "model_files": sorted(p.name for p in result.model_dir.iterdir()),
    }


def ort_cuda_check(model_dir: Path) -> dict:
    import onnxruntime as ort

    providers = ort.get_available_providers()
    result = {"onnxruntime": ort.__version__, "providers": providers}
    if "CUDAExecutionProvider" not in providers:
        result["cuda_provider"] = "not available in this onnxruntime build"
        return result
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), num_labels=2).eval()
    onnx_file = Path(tempfile.mkdtemp()) / "model.onnx"
    ids = torch.randint(1000, 2000, (1, 128))
    torch.onnx.export(
        model,
        (ids, torch.ones_like(ids)),
        str(onnx_file),
        input_names=["input_ids", "attention_mask"],
        output_names=["logits"],
        dynamic_axes={"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"}},
    )
    session = ort.InferenceSession(str(onnx_file), providers=["CUDAExecutionProvider"])
    feed = {"input_ids": ids.numpy(), "attention_mask": np.ones_like(ids.numpy())}
    for _ in range(10):
        session.run(None, feed)
    timings = []
    for _ in range(100):
        started = time.perf_counter()
        session.run(None, feed)
        timings.append((time.perf_counter() - started) * 1000)
    with torch.no_grad():
        reference = model(ids, torch.ones_like(ids)).logits.numpy()
    result.update(
        cuda_provider="used",
        p50_ms_batch1_seq128=round(float(np.median(timings)), 3),
        max_abs_diff_vs_torch=float(np.abs(session.run(None, feed)[0] - reference).max()),
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", required=True, help="folder with the MiniLM tokenizer files")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_check.json"))
    parser.add_argument(
        "--ray", action="store_true", help="also run `raynlp train` through Ray Train on the GPU"
    )
    parser.add_argument(
        "--zero-stages",
        type=int,
        nargs="+",
        default=[2],
        help="ZeRO stages to measure (samples/s, MFU) one after the other, e.g. 2 3",
    )
    parser.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="rehearse the script on CPU (gloo, fp32, a tiny model) before a GPU run",
    )
    args = parser.parse_args()

    use_gpu = not args.cpu_smoke
    result = {
        "gpu": torch.cuda.get_device_name(0) if use_gpu else "none (cpu smoke)",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
    }
    init_process_group(use_gpu)
    try:
        model_dir = base_model_dir(
            Path(args.tokenizer), Path(tempfile.mkdtemp()) / "bert", small=not use_gpu
        )
        result["zero"] = {}
        for stage in args.zero_stages:
            result["zero"][str(stage)] = train_check(
                model_dir, args.steps, args.batch_size, args.max_length, use_gpu, stage
            )
            print(json.dumps(result["zero"][str(stage)], indent=2), flush=True)
        result["train"] = result["zero"][str(args.zero_stages[0])]
        if args.ray:
            dist.destroy_process_group()  # Ray Train sets up its own NCCL group
            try:
                result["ray_train"] = ray_train_check(model_dir, Path(tempfile.mkdtemp()))
            except Exception as err:  # report, do not lose the other numbers
                result["ray_train"] = {"error": f"{type(err).__name__}: {err}"}
            print(json.dumps(result["ray_train"], indent=2), flush=True)
            init_process_group(use_gpu)
        try:
            result["ort"] = ort_cuda_check(model_dir)
        except Exception as err:  # report, do not lose the training numbers
            result["ort"] = {"error": f"{type(err).__name__}: {err}"}
        print(json.dumps(result["ort"], indent=2), flush=True)
    finally:
        dist.destroy_process_group()
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
