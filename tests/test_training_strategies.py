"""Strategies under real Ray Train + DeepSpeed (2 gloo workers, tiny BERT): which weights move in
which stage, frozen weights without optimizer state, early stopping, keep-N, TensorBoard, curve."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_job
from safetensors.torch import load_file

from raynlp.config import parse_job_config
from raynlp.training.checkpoints import (
    consolidated_state_dict,
    read_checkpoint_meta,
    read_model_meta,
)
from raynlp.training.trainer import train

STEPS_PER_EPOCH = 8  # 256 rows / batch 32


def base_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    """The pre-trained weights, named as inside the classifier (``bert.`` prefix)."""
    return {f"bert.{k}": v for k, v in load_file(str(model_dir / "model.safetensors")).items()}


def block_of(name: str) -> str:
    if ".embeddings." in name:
        return "embeddings"
    for index in (0, 1):
        if f".layer.{index}." in name:
            return f"layer.{index}"
    return "head"


def moved_blocks(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    """Blocks with at least one tensor that changed (frozen ones must be bit-identical)."""
    return {
        block_of(name) for name, tensor in before.items() if not torch.equal(tensor, after[name])
    }


def epoch_states(result) -> dict[int, dict[str, torch.Tensor]]:
    states = {}
    for checkpoint, _ in result.ray_result.best_checkpoints:
        directory = Path(checkpoint.path)
        states[read_checkpoint_meta(directory)["epoch"]] = consolidated_state_dict(directory)
    return states


def read_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """TensorBoard scalars from the event files (TFRecord framing, tensorboardX protos)."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


@pytest.mark.timeout(420)
def test_progressive_unfreezing_moves_only_the_unfrozen_blocks(
    tmp_path: Path, tiny_base_model: Path, ray_local
):
    """ZeRO-3 (the hardest case: parameters are partitioned): stage 1 head only at 1e-3, stage 2
    + the top layer at 1e-4, stage 3 everything. Weights are compared epoch by epoch."""
    job = tiny_job(
        tmp_path,
        tiny_base_model,
        training={
            "strategy": "progressive",
            "lr_schedule": "constant",
            "progressive": {
                "stages": [
                    {"unfreeze": 0, "learning_rate": 1e-3, "epochs": 1},
                    {"unfreeze": 1, "learning_rate": 1e-4, "epochs": 1},
                    {"unfreeze": "all", "learning_rate": 1e-4},
                ]
            },
        },
        deepspeed={"zero_stage": 3},
        output={"checkpoints_to_keep": 3},
    )
    job["data"]["max_train_rows"] = 256
    result = train(parse_job_config(job))

    stages = result.metrics["stages"]
    assert [(s["stage"], s["step"]) for s in stages] == [(0, 0), (1, 8), (2, 16)]
    assert stages[0]["trainable"] < stages[1]["trainable"] < stages[2]["trainable"]
    # the optimizer's rates really changed: the report of epoch 1 is taken after the step that
    # entered stage 2 (layer 1 + head at 1e-4, the rest at exactly 0)
    lr = result.metrics["history"][0]["lr"]
    assert lr["head"] == pytest.approx(1e-4) and lr["layer.1"] == pytest.approx(1e-4)
    assert lr["layer.0"] == 0.0 and lr["embeddings"] == 0.0
    assert result.metrics["history"][-1]["lr"]["embeddings"] == pytest.approx(1e-4)

    base = base_weights(tiny_base_model)
    states = epoch_states(result)
    assert sorted(states) == [1, 2, 3]
    shared = {name: states[1][name] for name in base if name in states[1]}
    assert len(shared) == len(base)
    assert moved_blocks(base, states[1]) == {"head"}  # pooler moved; encoder untouched
    assert moved_blocks(states[1], states[2]) == {"head", "layer.1"}
    assert moved_blocks(states[2], states[3]) == {"head", "layer.1", "layer.0", "embeddings"}

    curve = result.run_dir / "learning_curve.png"
    assert curve.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.timeout(420)
def test_freeze_early_stopping_keep_n_and_tensorboard(
    tmp_path: Path, tiny_base_model: Path, ray_local
):
    """ZeRO-2, embeddings + layer 0 frozen; early stopping that cannot see a gain ≥ 0.5 stops
    after patience 1; one best checkpoint kept (+ the latest); TensorBoard and curve written."""
    job = tiny_job(
        tmp_path,
        tiny_base_model,
        training={
            "strategy": "freeze",
            "freeze": {"embeddings": True, "layers": 1},
            "epochs": 5,
            "dropout": 0.2,
            "early_stopping": {"enabled": True, "patience": 1, "min_delta": 0.5},
        },
        output={"checkpoints_to_keep": 1},
    )
    job["data"]["max_train_rows"] = 256
    result = train(parse_job_config(job))

    history = result.metrics["history"]
    assert [h["epoch"] for h in history] == [1, 2]  # stopped after epoch 2 of 5
    assert result.metrics["early_stopping"]["stopped_epoch"] == 2
    best = max(h["val_accuracy"] for h in history)
    best_epoch = result.metrics["best_epoch"]
    assert history[best_epoch - 1]["val_accuracy"] == best
    assert read_model_meta(result.model_dir)["epoch"] == best_epoch  # the best one is exported
    checkpoints = list((result.run_dir / "ray" / "train").glob("checkpoint_*"))
    assert 1 <= len(checkpoints) <= 2, checkpoints  # best 1 (+ the latest, kept for resuming)

    # frozen weights are bit-identical to the pre-trained ones; the layer above moved
    base = base_weights(tiny_base_model)
    final = consolidated_state_dict(Path(result.ray_result.checkpoint.path))
    assert moved_blocks(base, final) == {"layer.1", "head"}
    # ...and have no optimizer state: ZeRO-2's fp32 partitions hold only trainable parameters
    trainable = history[-1]["trainable_params"]
    total = sum(t.numel() for t in final.values())
    assert trainable < total
    partitions = 0
    for shard in (Path(result.ray_result.checkpoint.path) / "deepspeed").glob("*optim_states.pt"):
        state = torch.load(shard, map_location="cpu", weights_only=False)
        groups = state["optimizer_state_dict"]["single_partition_of_fp32_groups"]
        partitions += sum(g.numel() for g in groups)
    assert trainable <= partitions <= trainable + 64 * 8  # + ZeRO's alignment padding

    # the dropout override is in the saved model config
    config = json.loads((result.model_dir / "config.json").read_text())
    assert config["hidden_dropout_prob"] == 0.2

    # the callback runs in the Ray Train controller, which may still be writing the last
    # report's scalars when fit() returns: give it a few seconds
    deadline = time.monotonic() + 15
    scalars = read_scalars(result.run_dir / "tensorboard")
    while len(scalars.get("validation/accuracy", [])) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
        scalars = read_scalars(result.run_dir / "tensorboard")
    assert [step for step, _ in scalars["validation/accuracy"]] == [8, 16]
    assert [step for step, _ in scalars["train/train_loss"]] == [8, 16]
    assert scalars["validation/accuracy"][0][1] == pytest.approx(history[0]["val_accuracy"])
    assert "lr/head" in scalars and "train/peak_mem_mb" in scalars
    assert (result.run_dir / "learning_curve.png").stat().st_size > 10_000
