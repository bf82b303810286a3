"""The training half of ``raynlp optimize``: a distilled student and a pruned model of a run,
each a model folder beside the run's own (``<run>/student/model``, ``<run>/pruned/model``),
trained by the same Ray Train + DeepSpeed loop as the run."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import torch

from raynlp.config import DistillSection, JobConfig, PruneSection, load_job_config, parse_job_config


def run_config(model_dir: Path) -> JobConfig:
    config_file = model_dir.parent / "config.yaml"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"distillation and pruning retrain on the run's data: no {config_file}"
        )
    return load_job_config(config_file, check_files=False)


def derived_config(
    config: JobConfig, name: str, run_dir: Path, model: Path, epochs: int, learning_rate: float
) -> JobConfig:
    """The run's config for a follow-up training run ``<run>/<name>`` from ``model``."""
    raw = config.model_dump(mode="json")
    raw["name"] = name
    raw["model"]["name_or_path"] = str(model)
    raw["output"]["dir"] = str(run_dir)
    raw["output"]["tensorboard"] = False
    raw["training"].update(epochs=epochs, learning_rate=learning_rate, strategy="full")
    raw["training"]["early_stopping"]["enabled"] = False
    raw["export"]["distill"]["enabled"] = raw["export"]["prune"]["enabled"] = False
    return parse_job_config(raw, f"{name} of {config.name}")


def distill(model_dir: Path, settings: DistillSection) -> tuple[Path, dict[str, Any]]:
    """Train a ``settings.layers``-layer student of the run's model on its soft targets."""
    from raynlp.optimize.distill import make_student
    from raynlp.training.trainer import train

    config = run_config(model_dir)
    run_dir = model_dir.parent
    init, kept = make_student(model_dir, settings.layers, run_dir / "student_init")
    print(f"[raynlp] distilling into a {settings.layers}-layer student (teacher layers {kept})")
    student = derived_config(
        config, "student", run_dir, init, settings.epochs, settings.learning_rate
    )
    result = train(
        student,
        overwrite=True,
        distillation={
            "teacher": str(model_dir),
            "temperature": settings.temperature,
            "alpha": settings.alpha,
        },
    )
    shutil.rmtree(init, ignore_errors=True)
    info = {
        "layers": settings.layers,
        "teacher_layers_kept": kept,
        "validation": result.metrics["validation"],
        "wall_s": result.metrics["wall_s"],
    }
    return result.model_dir, info


def prune(model_dir: Path, settings: PruneSection) -> tuple[Path, dict[str, Any]]:
    """Remove the least important heads and FFN neurons, then fine-tune to recover."""
    from transformers import AutoTokenizer

    from raynlp.inference import ModelRunner, batches
    from raynlp.optimize.pruning import ffn_importance, head_importance, prune_model
    from raynlp.training.checkpoints import read_model_meta, write_model_dir
    from raynlp.training.trainer import prepare_data, train

    config = run_config(model_dir)
    run_dir = model_dir.parent
    runner = ModelRunner(model_dir)
    model, task = runner.model, runner.task
    rows = prepare_data(config).train_rows
    sample = random.Random(config.training.seed).sample(
        rows, min(settings.importance_rows, len(rows))
    )
    features = runner.encode(sample, targets=True)
    tensors = [
        {k: torch.from_numpy(v) for k, v in batch.items()} for batch in batches(features, 16)
    ]
    print(f"[raynlp] pruning: head importance on {len(sample)} training rows ...", flush=True)
    heads = head_importance(model, tensors, task.loss)
    report = prune_model(
        model, heads, ffn_importance(model), settings.heads_fraction, settings.ffn_fraction
    )
    print(
        f"[raynlp] pruned {report['heads_before'] - report['heads_after']} of "
        f"{report['heads_before']} heads and the FFN from {report['intermediate_size_before']} "
        f"to {report['intermediate_size_after']}: {report['parameters_before']:,} → "
        f"{report['parameters_after']:,} parameters",
        flush=True,
    )
    meta = {**read_model_meta(model_dir), "pruned": {k: v for k, v in report.items()}}
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    init = write_model_dir(model, model.state_dict(), tokenizer, run_dir / "pruned_init", meta)
    info: dict[str, Any] = {"pruning": report}
    if settings.recovery_epochs == 0:
        target = run_dir / "pruned" / "model"
        if target.parent.exists():
            shutil.rmtree(target.parent)
        target.parent.mkdir(parents=True)
        shutil.move(str(init), target)
        return target, info
    recovery = derived_config(
        config, "pruned", run_dir, init, settings.recovery_epochs, settings.learning_rate
    )
    result = train(recovery, overwrite=True)
    meta_file = result.model_dir / "raynlp.json"
    meta_file.write_text(json.dumps({**json.loads(meta_file.read_text()), "pruned": report}))
    shutil.rmtree(init, ignore_errors=True)
    info.update(validation=result.metrics["validation"], wall_s=result.metrics["wall_s"])
    return result.model_dir, info
