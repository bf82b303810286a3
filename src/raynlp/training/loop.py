"""The per-worker training function that Ray Train runs on every worker.

Lifecycle: set up (model, optimizer, DeepSpeed engine, data shards, resume state) → for each
epoch: train, validate, checkpoint + report → done. The task object answers every
task-specific question, so this loop is the same for every task.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import torch
import torch.distributed as dist

from raynlp.config import JobConfig
from raynlp.evaluation import scalar_metrics
from raynlp.tasks import Task, get_task
from raynlp.tasks.base import Features, InputSpec, merge_outputs
from raynlp.training.checkpoints import DEEPSPEED_TAG, read_checkpoint_meta, save_checkpoint
from raynlp.training.deepspeed import build_deepspeed_config
from raynlp.training.steps import build_optimizer, build_scheduler, trim_padding


@dataclass
class WorkerContext:
    rank: int
    world_size: int
    device: torch.device


def gather_outputs(parts: list[Features], ctx: WorkerContext) -> Features:
    """Merge this worker's eval outputs, then gather every worker's onto every worker."""
    local = merge_outputs(parts)
    if ctx.world_size == 1:
        return local
    everyone: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(everyone, local)
    return merge_outputs([part for part in everyone if part])


def validate(engine: Any, task: Task, setup: ValidationSetup, ctx: WorkerContext) -> dict:
    """Score the full validation set; each worker runs every world_size-th batch (exact, no drops).

    Under ZeRO-3 every forward is a collective (weights are gathered layer by layer), so a worker
    with fewer batches repeats its last one, discarding the result, until all have run as many.
    """
    config = setup.config
    dataset = ray.train.get_dataset_shard("validation")
    engine.eval()
    parts, last = [], None
    total_batches = math.ceil(setup.num_features / config.training.eval_batch_size)
    rounds = math.ceil(total_batches / ctx.world_size)
    mine = 0
    with torch.no_grad():
        batches = dataset.iter_torch_batches(batch_size=config.training.eval_batch_size)
        for index, batch in enumerate(batches):
            if index % ctx.world_size != ctx.rank:
                continue
            last = {k: v.to(ctx.device) for k, v in trim_padding(batch, task.token_columns).items()}
            parts.append(task.infer(engine, last, setup.spec))
            mine += 1
        if config.deepspeed.zero_stage == 3 and last is not None:
            for _ in range(rounds - mine):
                task.infer(engine, last, setup.spec)
    engine.train()
    outputs = gather_outputs(parts, ctx)
    predictions = task.predictions(
        outputs, setup.rows, setup.spec, setup.labels, tokenizer=setup.tokenizer
    )
    return task.compute_metrics(predictions, setup.rows, setup.spec, setup.labels)


def validation_spec(spec: InputSpec) -> InputSpec:
    """The spec used for validation during training: task options named ``eval_<name>`` (when
    set) replace ``<name>``, e.g. ``summarization.eval_num_beams`` for a cheaper beam search."""
    overrides = {
        name.removeprefix("eval_"): value
        for name, value in spec.options.items()
        if name.startswith("eval_") and value is not None
    }
    return dataclasses.replace(spec, options={**spec.options, **overrides}) if overrides else spec


@dataclass
class ValidationSetup:
    config: JobConfig
    spec: InputSpec
    rows: list[dict[str, Any]]
    labels: list[str] | None
    num_features: int
    tokenizer: Any


def _resume_state(engine: Any) -> dict[str, Any]:
    """If Ray restarted this run after a failure, load the latest checkpoint."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return {"epoch": 0, "step": 0, "history": []}
    with checkpoint.as_directory() as directory:
        engine.load_checkpoint(directory, tag=DEEPSPEED_TAG)
        meta = read_checkpoint_meta(Path(directory))
    return {"epoch": meta["epoch"], "step": meta["step"], "history": meta["history"]}


class ProgressPrinter:
    """One console line every N steps on rank 0: epoch, step, loss, throughput, ETA."""

    def __init__(
        self, total_steps: int, samples_per_step: int, every: int, rank: int, started: float
    ):
        self.total_steps, self.samples_per_step, self.every = total_steps, samples_per_step, every
        self.enabled = rank == 0
        self.started = started
        self.first_step_at: float | None = None

    def step(self, epoch: int, step: int, loss: float, lr: float) -> None:
        now = time.perf_counter()
        if self.first_step_at is None:
            self.first_step_at = now
            if self.enabled:
                print(
                    f"[raynlp] first step after {now - self.started:.1f}s of worker set-up "
                    "(model, DeepSpeed engine, data shard)",
                    flush=True,
                )
        if not self.enabled or step % self.every:
            return
        elapsed = max(now - self.first_step_at, 1e-9)
        rate = step * self.samples_per_step / elapsed
        eta = (self.total_steps - step) * elapsed / max(step, 1)
        print(
            f"[raynlp] epoch {epoch + 1} step {step}/{self.total_steps} loss {loss:.4f} "
            f"lr {lr:.2e} {rate:.1f} samples/s ETA {eta:.0f}s",
            flush=True,
        )


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    import deepspeed

    started = time.perf_counter()
    config = JobConfig.model_validate(loop_config["job"])
    task = get_task(config.task)
    labels = loop_config["labels"]
    context = ray.train.get_context()
    ctx = WorkerContext(
        context.get_world_rank(), context.get_world_size(), ray.train.torch.get_device()
    )
    torch.manual_seed(config.training.seed)

    # --- setup: model, optimizer, engine ---
    from transformers import AutoTokenizer

    spec = InputSpec.from_config(config)
    model = task.build_model(loop_config["model_path"], labels, spec)
    setup = ValidationSetup(
        config,
        validation_spec(spec),
        loop_config["validation_rows"],
        labels,
        loop_config["validation_features"],
        AutoTokenizer.from_pretrained(loop_config["model_path"]),
    )
    steps_per_epoch = max(1, loop_config["train_rows_per_worker"] // config.per_worker_batch_size)
    optimizer_steps = math.ceil(
        steps_per_epoch * config.training.epochs / config.training.gradient_accumulation_steps
    )
    ds_config = build_deepspeed_config(config)
    optimizer = None if "optimizer" in ds_config else build_optimizer(model, config)
    scheduler = (
        None
        if optimizer is None or "scheduler" in ds_config
        else build_scheduler(optimizer, config, optimizer_steps)
    )
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        model_parameters=None if optimizer is not None else model.parameters(),
        config=ds_config,
    )
    state = _resume_state(engine)
    printer = ProgressPrinter(
        steps_per_epoch * config.training.epochs,
        config.per_worker_batch_size * ctx.world_size,
        config.training.log_every_steps,
        ctx.rank,
        started,
    )

    # --- train ---
    train_shard = ray.train.get_dataset_shard("train")
    step, history = state["step"], state["history"]
    for epoch in range(state["epoch"], config.training.epochs):
        started, losses = time.perf_counter(), []
        batches = train_shard.iter_torch_batches(
            batch_size=config.per_worker_batch_size,
            drop_last=True,
            local_shuffle_buffer_size=4 * config.per_worker_batch_size,
            local_shuffle_seed=config.training.seed + epoch,
        )
        for batch in batches:
            batch = {
                k: v.to(ctx.device) for k, v in trim_padding(batch, task.token_columns).items()
            }
            loss = task.loss(engine, batch)
            engine.backward(loss)
            engine.step()
            step += 1
            losses.append(float(loss.detach()))
            printer.step(epoch, step, losses[-1], engine.get_lr()[0])
        train_seconds = time.perf_counter() - started

        # --- evaluate, checkpoint, report ---
        metrics = validate(engine, task, setup, ctx)
        report = {f"val_{k}": v for k, v in scalar_metrics(metrics).items()}
        report.update(
            epoch=epoch + 1,
            step=step,
            train_loss=float(np.mean(losses)) if losses else float("nan"),
            train_samples_per_s=len(losses)
            * config.per_worker_batch_size
            * ctx.world_size
            / max(train_seconds, 1e-9),
        )
        history.append(report)
        if ctx.rank == 0:
            summary = ", ".join(f"{k} {v:.4f}" for k, v in report.items() if k.startswith("val_"))
            print(
                f"[raynlp] epoch {epoch + 1} done: train_loss {report['train_loss']:.4f}, "
                f"{summary}",
                flush=True,
            )
        with tempfile.TemporaryDirectory() as directory:
            meta = {"epoch": epoch + 1, "step": step, "metrics": metrics, "history": history}
            save_checkpoint(engine, Path(directory), meta, ctx.rank)
            ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(directory))
