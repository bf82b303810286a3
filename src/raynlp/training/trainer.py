"""Driver side of training: data → Ray Data → TorchTrainer(DeepSpeed loop) → consolidated model."""

from __future__ import annotations

import json
import random
import shutil
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raynlp.config import JobConfig, dump_job_config
from raynlp.data.readers import read_rows, split_rows, write_jsonl
from raynlp.models import resolve_model_path
from raynlp.tasks import get_task
from raynlp.tasks.base import InputSpec
from raynlp.training.checkpoints import (
    consolidated_state_dict,
    read_checkpoint_meta,
    write_model_dir,
)
from raynlp.training.deepspeed import distributed_backend, resolve_precision
from raynlp.training.strategies import apply_dropout, pitfall_warnings
from raynlp.training.tracking import plot_learning_curve


@dataclass
class PreparedData:
    train_rows: list[dict[str, Any]]
    validation_rows: list[dict[str, Any]]
    labels: list[str] | None


@dataclass
class TrainingResult:
    run_dir: Path
    model_dir: Path
    metrics: dict[str, Any]
    ray_result: Any = None
    """The ``ray.train.Result`` (checkpoints, reported metrics)."""


class RunExistsError(FileExistsError):
    pass


class PitfallWarning(UserWarning):
    """A setting the guide warns about (training still runs)."""


def prepare_data(config: JobConfig) -> PreparedData:
    """Read the files, shuffle train with the seed, split 80/20 when there is no validation file
    (so ``max_train_rows`` is a seeded random sample), infer labels."""
    data = config.data
    train = read_rows(data.train, data.format)
    if data.validation:
        validation = read_rows(data.validation, data.format)
        random.Random(config.training.seed).shuffle(train)
    else:  # split_rows shuffles with the seed too
        train, validation = split_rows(train, data.validation_split, config.training.seed)
    if data.max_train_rows:
        train = train[: data.max_train_rows]
    if data.max_validation_rows:
        validation = validation[: data.max_validation_rows]
    if not train or not validation:
        raise ValueError(f"empty data: {len(train)} train rows, {len(validation)} validation rows")
    labels = get_task(config.task).label_names(config, train + validation)
    return PreparedData(train, validation, labels)


def _to_ray_dataset(features: dict[str, np.ndarray]) -> Any:
    import pyarrow as pa
    import ray.data
    from ray.data.extensions import ArrowTensorArray

    table = pa.table(
        {k: ArrowTensorArray.from_numpy(v) if v.ndim > 1 else v for k, v in features.items()}
    )
    return ray.data.from_arrow(table)


def _consolidate(
    config: JobConfig, checkpoint: Any, prepared: PreparedData, model_path: str, tokenizer: Any
) -> tuple[Path, dict[str, Any]]:
    task = get_task(config.task)
    with checkpoint.as_directory() as directory:
        meta = read_checkpoint_meta(Path(directory))
        state_dict = consolidated_state_dict(Path(directory))
    model = task.build_model(model_path, prepared.labels, InputSpec.from_config(config))
    if config.training.dropout is not None:  # the saved config says what training used
        apply_dropout(model, config.training.dropout)
    model_meta = {
        "task": config.task,
        "labels": prepared.labels,
        "base_model": config.model.name_or_path,
        **asdict(InputSpec.from_config(config)),
        "epoch": meta["epoch"],
        "step": meta["step"],
    }
    model_dir = write_model_dir(model, state_dict, tokenizer, config.run_dir / "model", model_meta)
    return model_dir, meta


def build_trainer(
    config: JobConfig,
    prepared: PreparedData,
    model_path: str,
    train_features: dict[str, np.ndarray],
    validation_features: dict[str, np.ndarray],
    run_name: str = "train",
    storage_path: Path | None = None,
    callbacks: list[Any] | None = None,
    warm_start: str | None = None,
    distillation: dict[str, float] | None = None,
    stop_after_epoch: int | None = None,
) -> Any:
    """The TorchTrainer: per-worker DeepSpeed loop, sharded train data, best-N checkpoints
    (ranked by the watched validation metric), restarts after failures, TensorBoard.

    The run's name and storage path are fixed per run folder (``<run>/ray/train``), so running
    it again (``raynlp train --resume``) makes Ray Train hand the latest checkpoint to the
    workers. Tune trials pass their own name, storage path and callbacks, and under PBT a
    ``warm_start`` checkpoint (another trial's) that a new run starts from, and under
    synchronous halving the epoch to stop after (a rung; the schedule is the whole run's)."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from raynlp.training.loop import train_loop_per_worker
    from raynlp.training.tracking import TensorBoardCallback

    metric, mode = config.watched_metric
    callbacks = list(callbacks or [])
    if config.output.tensorboard:
        callbacks.append(TensorBoardCallback(config.run_dir.resolve() / "tensorboard"))
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "job": config.model_dump(mode="json"),
            "labels": prepared.labels,
            "model_path": model_path,
            # every worker scores the gathered validation outputs against the gold rows
            "validation_rows": prepared.validation_rows,
            "validation_features": len(validation_features["example_index"]),
            "train_rows_per_worker": len(next(iter(train_features.values())))
            // config.scaling.num_workers,
            "warm_start": warm_start,
            "stop_after_epoch": stop_after_epoch,
            "distillation": distillation,
        },
        torch_config=TorchConfig(backend=distributed_backend(config)),
        scaling_config=ScalingConfig(
            num_workers=config.scaling.num_workers,
            use_gpu=config.scaling.use_gpu,
            resources_per_worker=config.scaling.resources_per_worker,
            placement_strategy=config.scaling.placement_strategy,
        ),
        datasets={
            "train": _to_ray_dataset(train_features),
            "validation": _to_ray_dataset(validation_features),
        },
        dataset_config=DataConfig(datasets_to_split=["train"]),
        run_config=RunConfig(
            name=run_name,
            storage_path=str(storage_path or config.run_dir.resolve() / "ray"),
            checkpoint_config=CheckpointConfig(
                num_to_keep=config.output.checkpoints_to_keep,
                checkpoint_score_attribute=f"val_{metric}",
                checkpoint_score_order=mode,
            ),
            failure_config=FailureConfig(max_failures=config.scaling.max_failures),
            callbacks=callbacks,
        ),
    )


def encode_inputs(config: JobConfig, prepared: PreparedData) -> tuple[str, Any, Any, Any]:
    """The base model's path and tokenizer, and the encoded train/validation features."""
    from transformers import AutoTokenizer

    task = get_task(config.task)
    model_path = resolve_model_path(config.model.name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    spec = InputSpec.from_config(config)
    train_features = task.encode(prepared.train_rows, tokenizer, spec, prepared.labels)
    validation_features = task.encode(prepared.validation_rows, tokenizer, spec, prepared.labels)
    return model_path, tokenizer, train_features, validation_features


def start_run_dir(
    config: JobConfig, overwrite: bool, resume: bool, state: str = "ray", what: str = "run"
) -> Path:
    """The run folder: kept for ``resume`` (it must hold the ``state`` folder and no
    ``metrics.json`` yet), else created fresh (replacing an old one only with ``overwrite``)."""
    run_dir = config.run_dir.resolve()
    if resume:
        if not (run_dir / state).is_dir():
            raise FileNotFoundError(f"{run_dir} holds no {what} to resume (no {state}/)")
        if (run_dir / "metrics.json").exists():
            raise RunExistsError(f"the {what} in {run_dir} has finished; nothing to resume")
        return run_dir
    if run_dir.exists():
        if not overwrite:
            raise RunExistsError(
                f"run folder {run_dir} exists; pass --overwrite to replace it "
                f"or --resume {run_dir} to continue it"
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    return run_dir


def load_run_config(run: str | Path) -> JobConfig:
    """The config of an existing run folder, pointed at that folder wherever it now lives."""
    from raynlp.config import load_job_config

    run_dir = Path(run)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir} is not a raynlp run folder (no config.yaml)")
    config = load_job_config(run_dir / "config.yaml", check_files=False)
    config.output.dir = str(run_dir.resolve().parent)
    config.name = run_dir.resolve().name
    return config


def train(
    config: JobConfig,
    overwrite: bool = False,
    resume: bool = False,
    distillation: dict[str, Any] | None = None,
) -> TrainingResult:
    """Fine-tune per ``config`` on the current Ray cluster and write ``<output.dir>/<name>/``.

    The run folder holds ``model/`` (a Hugging Face ``save_pretrained`` folder + ``raynlp.json``),
    ``metrics.json``, ``learning_curve.png``, the resolved ``config.yaml``, the validation rows,
    ``tensorboard/`` and Ray's checkpoints. ``resume=True`` continues a stopped or crashed run
    from its latest checkpoint (weights, optimizer, LR schedule, step, early-stopping state).

    ``distillation`` (``{"teacher": model folder, "temperature", "alpha"}``) trains this model
    as a student: the teacher's outputs on the training rows join the data, and the loop adds
    the soft-target loss (``raynlp.optimize.distill``).
    """

    run_dir = start_run_dir(config, overwrite, resume)
    started = time.perf_counter()

    prepared = prepare_data(config)
    for warning in pitfall_warnings(config, len(prepared.train_rows)):
        warnings.warn(warning, PitfallWarning, stacklevel=2)
        print(f"[raynlp] warning: {warning}", flush=True)
    model_path, tokenizer, train_features, validation_features = encode_inputs(config, prepared)
    soft_targets = None
    if distillation:
        from raynlp.optimize.distill import teacher_targets

        print(f"[raynlp] teacher outputs on {len(prepared.train_rows)} rows ...", flush=True)
        train_features.update(teacher_targets(Path(distillation["teacher"]), train_features))
        soft_targets = {k: distillation[k] for k in ("temperature", "alpha")}
    if not resume:
        (run_dir / "config.yaml").write_text(dump_job_config(config))
    write_jsonl(prepared.validation_rows, run_dir / "data" / "validation.jsonl")
    print(
        f"[raynlp] {config.task}: {len(prepared.train_rows)} train / "
        f"{len(prepared.validation_rows)} validation rows "
        f"({len(train_features['example_index'])} / {len(validation_features['example_index'])} "
        f"model inputs), labels {prepared.labels}; "
        f"{config.scaling.num_workers} workers, ZeRO-{config.deepspeed.zero_stage}, "
        f"{resolve_precision(config)}, {distributed_backend(config)}, "
        f"strategy {config.training.strategy}" + (f"; resuming {run_dir}" if resume else ""),
        flush=True,
    )

    trainer = build_trainer(
        config,
        prepared,
        model_path,
        train_features,
        validation_features,
        distillation=soft_targets,
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    metric, mode = config.watched_metric
    pick = max if mode == "max" else min
    best_checkpoint = pick(result.best_checkpoints, key=lambda item: item[1][f"val_{metric}"])[0]
    model_dir, meta = _consolidate(config, best_checkpoint, prepared, model_path, tokenizer)
    with result.checkpoint.as_directory() as latest:
        last = read_checkpoint_meta(Path(latest))
    metrics = {
        "task": config.task,
        "strategy": config.training.strategy,
        "best_epoch": meta["epoch"],
        "watched_metric": metric,
        "validation": meta["metrics"],
        "history": last["history"],
        "stages": last.get("stages", []),
        "early_stopping": last.get("early_stopping"),
        "resumed": last.get("resumed", []),
        "workers": last.get("workers", []),
        "wall_s": round(time.perf_counter() - started, 2),
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    curve = plot_learning_curve(
        {**last, "name": config.name}, metric, run_dir / "learning_curve.png"
    )
    print(
        f"[raynlp] model written to {model_dir} ({metrics['wall_s']}s); curve: {curve}", flush=True
    )
    return TrainingResult(run_dir, model_dir, metrics, result)
