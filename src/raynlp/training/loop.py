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
from raynlp.training.early_stopping import EarlyStopping
from raynlp.training.steps import trim_padding
from raynlp.training.strategies import Strategy, apply_dropout


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


def _resume_state(engine: Any, warm_start: str | None = None) -> dict[str, Any]:
    """The latest checkpoint of this run, when Ray restarted the workers after a failure or the
    run was resumed with ``raynlp train --resume``: weights, optimizer, LR scheduler and step
    (DeepSpeed's checkpoint), epoch, history and early-stopping state (raynlp's metadata).

    Without one, ``warm_start`` (a raynlp checkpoint folder, e.g. another Tune trial's under
    PBT) is loaded the same way except for the LR scheduler: this run's own hyperparameters
    (e.g. a perturbed learning rate) apply from the checkpoint's step on."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and warm_start is None:
        return {"epoch": 0, "history": [], "curve": [], "stages": [], "resumed": []}
    if checkpoint is None:
        engine.load_checkpoint(warm_start, tag=DEEPSPEED_TAG, load_lr_scheduler_states=False)
        meta = read_checkpoint_meta(Path(warm_start))
        scheduler = engine.lr_scheduler
        if scheduler is not None:  # move this run's schedule to the loaded step
            scheduler.last_epoch = engine.global_steps - 1
            scheduler.step()
        origin = {"epoch": meta["epoch"], "step": meta["step"], "warm_start": warm_start}
    else:
        with checkpoint.as_directory() as directory:
            engine.load_checkpoint(directory, tag=DEEPSPEED_TAG)
            meta = read_checkpoint_meta(Path(directory))
        origin = {"epoch": meta["epoch"], "step": meta["step"]}
    resumed = [*meta.get("resumed", []), origin]
    return {
        "epoch": meta["epoch"],
        "history": meta["history"],
        "curve": meta.get("curve", []),
        "stages": meta.get("stages", []),
        "early_stopping": meta.get("early_stopping"),
        "resumed": resumed,
    }


def worker_info(ctx: WorkerContext) -> list[dict[str, Any]]:
    """Rank, node and pid of every worker (gathered onto every worker)."""
    import os
    import socket

    mine = {
        "rank": ctx.rank,
        "node_id": ray.get_runtime_context().get_node_id(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
    }
    if ctx.world_size == 1:
        return [mine]
    everyone: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(everyone, mine)
    return everyone


def peak_memory_mb(ctx: WorkerContext) -> float:
    """The largest peak resident memory of any worker process (GPU memory on GPU)."""
    import resource

    if ctx.device.type == "cuda":
        mine = torch.cuda.max_memory_allocated(ctx.device) / 2**20
    else:
        mine = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    if ctx.world_size == 1:
        return float(mine)
    value = torch.tensor([mine], dtype=torch.float64)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return float(value.item())


def group_rates(engine: Any) -> dict[str, float]:
    """The current learning rate of each block (its first param group)."""
    rates: dict[str, float] = {}
    for group in engine.optimizer.param_groups:
        rates.setdefault(group.get("block", "all"), float(group["lr"]))
    return rates


class ProgressPrinter:
    """One console line every N steps on rank 0: epoch, step, loss, throughput, ETA."""

    def __init__(
        self, total_steps: int, samples_per_step: int, every: int, rank: int, started: float
    ):
        self.total_steps, self.samples_per_step, self.every = total_steps, samples_per_step, every
        self.enabled = rank == 0
        self.started = started
        self.first_step_at: float | None = None
        self.first_step = 0

    def step(self, epoch: int, step: int, loss: float, lr: float) -> None:
        now = time.perf_counter()
        if self.first_step_at is None:
            self.first_step_at, self.first_step = now, step
            if self.enabled:
                print(
                    f"[raynlp] first step after {now - self.started:.1f}s of worker set-up "
                    "(model, DeepSpeed engine, data shard)",
                    flush=True,
                )
        if not self.enabled or step % self.every:
            return
        elapsed = max(now - self.first_step_at, 1e-9)
        done = max(
            step - self.first_step, 1
        )  # steps run by this process (a resumed run starts late)
        rate = done * self.samples_per_step / elapsed
        eta = (self.total_steps - step) * elapsed / done
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

    # --- setup: model, strategy, optimizer, engine ---
    from transformers import AutoTokenizer

    spec = InputSpec.from_config(config)
    model = task.build_model(loop_config["model_path"], labels, spec)
    if config.training.dropout is not None:
        apply_dropout(model, config.training.dropout)
    setup = ValidationSetup(
        config,
        validation_spec(spec),
        loop_config["validation_rows"],
        labels,
        loop_config["validation_features"],
        AutoTokenizer.from_pretrained(loop_config["model_path"]),
    )
    batches_per_epoch = max(1, loop_config["train_rows_per_worker"] // config.per_worker_batch_size)
    accumulation = config.training.gradient_accumulation_steps
    steps_per_epoch = max(1, batches_per_epoch // accumulation)  # optimizer steps
    total_steps = steps_per_epoch * config.training.epochs
    strategy = Strategy(config, model, steps_per_epoch, total_steps)
    strategy.prepare(model)
    ds_config = build_deepspeed_config(config)
    optimizer = None if "optimizer" in ds_config else strategy.build_optimizer(model)
    scheduler = (
        None
        if optimizer is None or "scheduler" in ds_config
        else strategy.build_scheduler(optimizer)
    )
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        model_parameters=None
        if optimizer is not None
        else [p for p in model.parameters() if p.requires_grad],
        config=ds_config,
    )
    state = _resume_state(engine, loop_config.get("warm_start"))
    stopping = EarlyStopping.from_config(config)
    stopping.restore(state.get("early_stopping"))
    workers = worker_info(ctx)
    log = print if ctx.rank == 0 else (lambda *args, **kwargs: None)
    if state["resumed"]:
        source = state["resumed"][-1].get("warm_start")
        log(
            f"[raynlp] {'warm-started' if source else 'resumed'} from the checkpoint of epoch "
            f"{state['epoch']} (step {engine.global_steps})" + (f": {source}" if source else ""),
            flush=True,
        )
    stages = state["stages"]

    def enter_stage(step: int, epoch: float) -> None:
        stage = strategy.apply(engine.module, step)
        if stage is None:
            return
        index = strategy.stages.index(stage)
        trainable = strategy.trainable_params(engine.module, stage)
        if not stages or stages[-1]["stage"] != index:
            stages.append({"stage": index, "step": step, "epoch": epoch, "trainable": trainable})
        log(
            f"[raynlp] stage {index + 1}/{len(strategy.stages)}: "
            f"{stage.describe(strategy.layout.num_layers)} ({trainable:,} trainable parameters)",
            flush=True,
        )

    enter_stage(engine.global_steps, state["epoch"])
    printer = ProgressPrinter(
        total_steps,
        config.training.batch_size,
        config.training.log_every_steps,
        ctx.rank,
        started,
    )

    # --- train ---
    distill = loop_config.get("distillation")
    if distill:
        from raynlp.optimize.distill import distillation_loss

        log(f"[raynlp] distillation: soft targets at T={distill['temperature']}, "
            f"alpha={distill['alpha']} on the task loss", flush=True)  # fmt: skip
    train_shard = ray.train.get_dataset_shard("train")
    history, curve = state["history"], state["curve"]
    reported_curve = len(curve)
    if stopping.stopped_epoch is not None:
        return  # a resumed run that had already stopped early
    last_epoch = min(config.training.epochs, loop_config.get("stop_after_epoch") or 10**9)
    for epoch in range(state["epoch"], last_epoch):
        epoch_started, losses, window = time.perf_counter(), [], []
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
            loss = (
                distillation_loss(config.task, engine, batch, **distill)
                if distill
                else task.loss(engine, batch)
            )
            engine.backward(loss)
            boundary = engine.is_gradient_accumulation_boundary()
            engine.step()
            losses.append(float(loss.detach()))
            window.append(losses[-1])
            if not boundary:
                continue
            step = engine.global_steps
            if step % config.training.log_every_steps == 0:
                curve.append([step, float(np.mean(window))])
                window = []
            printer.step(epoch, step, losses[-1], max(engine.get_lr()))
            enter_stage(step, epoch + len(losses) / batches_per_epoch)
        train_seconds = time.perf_counter() - epoch_started

        # --- evaluate, early stopping, checkpoint, report ---
        metrics = validate(engine, task, setup, ctx)
        stop = stopping.update(metrics, epoch + 1)
        report = {f"val_{k}": v for k, v in scalar_metrics(metrics).items()}
        report.update(
            epoch=epoch + 1,
            step=engine.global_steps,
            train_loss=float(np.mean(losses)) if losses else float("nan"),
            train_samples_per_s=len(losses)
            * config.per_worker_batch_size
            * ctx.world_size
            / max(train_seconds, 1e-9),
            stage=(strategy.current or 0) + 1,
            trainable_params=strategy.trainable_params(engine.module),
            peak_mem_mb=round(peak_memory_mb(ctx), 1),
            lr={block: rate for block, rate in group_rates(engine).items()},
        )
        history.append(report)
        watched = f"{stopping.metric} {float(metrics[stopping.metric]):.4f}"
        summary = ", ".join(f"{k} {v:.4f}" for k, v in report.items() if k.startswith("val_"))
        log(
            f"[raynlp] epoch {epoch + 1} done: train_loss {report['train_loss']:.4f}, {summary}; "
            f"best {stopping.metric} {stopping.best:.4f} at epoch {stopping.best_epoch}",
            flush=True,
        )
        if stop:
            log(
                f"[raynlp] early stopping: {watched}, no gain over {stopping.min_delta:g} for "
                f"{stopping.bad_epochs} epoch(s) (patience {stopping.patience})",
                flush=True,
            )
        with tempfile.TemporaryDirectory() as directory:
            meta = {
                "epoch": epoch + 1,
                "step": engine.global_steps,
                "metrics": metrics,
                "history": history,
                "curve": curve,
                "stages": stages,
                "early_stopping": stopping.state(),
                "resumed": state["resumed"],
                "workers": workers,
            }
            save_checkpoint(engine, Path(directory), meta, ctx.rank)
            ray.train.report(
                {**report, "loss_curve": curve[reported_curve:]},
                checkpoint=ray.train.Checkpoint.from_directory(directory),
            )
        reported_curve = len(curve)
        if stop:
            break
