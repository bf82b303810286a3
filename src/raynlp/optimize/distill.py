"""Knowledge distillation: a fine-tuned teacher trains a shallower student of the same family.

The student starts as a copy of the teacher with fewer encoder layers (evenly spaced, the last
one kept), then trains through the usual Ray Train + DeepSpeed loop on

    loss = alpha · task loss (hard labels) + (1 - alpha) · T² · KL(teacher_T ‖ student_T)

where ``_T`` is a softmax at temperature T over classes (classification, token tags) or
positions (QA start/end), and MSE to the teacher's score for regression (similarity). The
teacher's outputs are computed once on the driver and travel with the training rows.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from raynlp.tasks.base import Features, model_inputs, unwrap

DISTILLABLE_TASKS = ("classification", "similarity", "ner", "qa")
TEACHER_COLUMNS = {
    "classification": ("logits",),
    "similarity": ("logits",),
    "ner": ("logits",),
    "qa": ("start_logits", "end_logits"),
}
LAYER_KEY = re.compile(r"(encoder\.layer\.)(\d+)(\.)")


def student_layers(teacher_layers: int, layers: int) -> list[int]:
    """Which teacher layers the student keeps: evenly spaced, ending with the last (6 → 3:
    1, 3, 5), so the head still reads the representation it was trained on."""
    if not 1 <= layers < teacher_layers:
        raise ValueError(
            f"export.distill.layers must be between 1 and {teacher_layers - 1} for a "
            f"{teacher_layers}-layer teacher (got {layers})"
        )
    return [round((i + 1) * teacher_layers / layers) - 1 for i in range(layers)]


def make_student(teacher_dir: Path, layers: int, target: Path) -> tuple[Path, list[int]]:
    """A model folder like the teacher's (tokenizer, head, ``raynlp.json``) with ``layers``
    encoder layers copied from the teacher's; other files (e.g. CRF transitions) as they are."""
    from safetensors.torch import load_file, save_file

    config = json.loads((teacher_dir / "config.json").read_text())
    if "num_hidden_layers" not in config or config.get("is_encoder_decoder"):
        raise ValueError(
            "distillation copies BERT-family encoder layers; this model "
            f"({config.get('model_type')}) has none"
        )
    keep = student_layers(int(config["num_hidden_layers"]), layers)
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(teacher_dir, target, ignore=shutil.ignore_patterns("evaluation.json"))
    renumber = {old: new for new, old in enumerate(keep)}
    weights = load_file(str(teacher_dir / "model.safetensors"))
    student = {}
    for key, value in weights.items():
        match = LAYER_KEY.search(key)
        if match is None:
            student[key] = value
        elif int(match.group(2)) in renumber:
            new = f"{match.group(1)}{renumber[int(match.group(2))]}{match.group(3)}"
            student[key[: match.start()] + new + key[match.end() :]] = value.contiguous()
    save_file(student, str(target / "model.safetensors"), metadata={"format": "pt"})
    config["num_hidden_layers"] = layers
    (target / "config.json").write_text(json.dumps(config, indent=2))
    meta_file = target / "raynlp.json"
    meta = json.loads(meta_file.read_text())
    meta["distilled_from"] = {"teacher": str(teacher_dir), "layers": keep}
    meta_file.write_text(json.dumps(meta, indent=2))
    return target, keep


def teacher_targets(teacher_dir: Path, features: Features, batch_size: int = 64) -> Features:
    """The teacher's raw outputs for every training feature, padded to the features' width,
    as ``teacher_<output>`` columns."""
    from raynlp.inference import ModelRunner

    runner = ModelRunner(teacher_dir)
    if runner.task.name not in DISTILLABLE_TASKS:
        raise ValueError(
            f"distillation supports the tasks {', '.join(DISTILLABLE_TASKS)} (got "
            f"{runner.task.name})"
        )
    inputs = {k: v for k, v in features.items() if k not in ("labels",)}
    outputs = runner.run(inputs, batch_size)
    width = features["input_ids"].shape[1]
    columns = {}
    for name in TEACHER_COLUMNS[runner.task.name]:
        value = outputs[name].astype(np.float32)
        if runner.task.name in ("ner", "qa"):  # per-token outputs, trimmed per batch
            pad = [(0, 0)] * value.ndim
            pad[1] = (0, width - value.shape[1])
            value = np.pad(value, pad)
        columns[f"teacher_{name}"] = value
    return columns


def _soft_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(softmax(teacher/T) ‖ softmax(student/T)) over the last axis, averaged."""
    log_student = F.log_softmax(student.float() / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher.float() / temperature, dim=-1)
    flat = log_student.reshape(-1, log_student.shape[-1])
    target = log_teacher.reshape(-1, log_teacher.shape[-1])
    return F.kl_div(flat, target, reduction="batchmean", log_target=True) * temperature**2


def distillation_loss(
    task_name: str,
    model: Any,
    batch: dict[str, torch.Tensor],
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """``alpha`` · the task's own loss + (1 − ``alpha``) · the soft-target loss (see module)."""
    if task_name == "qa":
        extra: tuple[str, ...] = ("start_positions", "end_positions")
    elif task_name == "ner" and "word_starts" in batch and _has_crf(model):
        extra = ("labels", "word_starts")
    else:
        extra = ("labels",)
    output = model(**model_inputs(batch, extra))
    hard = output["loss"]
    if task_name == "qa":
        mask = batch["attention_mask"].bool()
        soft = 0.5 * sum(
            _soft_kl(
                output[name].masked_fill(~mask, -1e4),
                batch[f"teacher_{name}"][:, : mask.shape[1]].masked_fill(~mask, -1e4),
                temperature,
            )
            for name in ("start_logits", "end_logits")
        )
    elif task_name == "similarity":
        soft = F.mse_loss(output["logits"].float(), batch["teacher_logits"].float())
    elif task_name == "ner":
        logits = output["logits"]
        mask = batch["attention_mask"].bool()
        teacher = batch["teacher_logits"][:, : logits.shape[1]]
        soft = _soft_kl(logits[mask], teacher[mask], temperature)
    else:
        soft = _soft_kl(output["logits"], batch["teacher_logits"], temperature)
    return alpha * hard + (1.0 - alpha) * soft


def _has_crf(model: Any) -> bool:
    from raynlp.tasks.crf import CRFTokenClassifier

    return isinstance(unwrap(model), CRFTokenClassifier)
