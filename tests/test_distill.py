"""Distillation pieces without a cluster: the student folder, the teacher's soft targets and
the loss the training loop uses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import untrained_model_dir

from raynlp.data.readers import read_rows
from raynlp.inference import ModelRunner
from raynlp.optimize.distill import (
    distillation_loss,
    make_student,
    student_layers,
    teacher_targets,
)

SAMPLES = {
    "classification": "sample://sst2_train.tsv",
    "similarity": "sample://stsb_train.tsv",
    "ner": "sample://ner_train.conll",
    "qa": "sample://squad_train.json",
}


def test_student_keeps_evenly_spaced_layers_ending_with_the_last():
    assert student_layers(6, 3) == [1, 3, 5]
    assert student_layers(6, 2) == [2, 5]
    assert student_layers(2, 1) == [1]
    with pytest.raises(ValueError, match="between 1 and 5"):
        student_layers(6, 6)


def test_student_folder_copies_the_chosen_layers(tmp_path: Path, tiny_base_model: Path):
    from safetensors.torch import load_file

    teacher = untrained_model_dir("classification", tiny_base_model, tmp_path / "t" / "model")
    student, kept = make_student(teacher, 1, tmp_path / "student")
    assert kept == [1]
    weights, mine = (
        load_file(str(teacher / "model.safetensors")),
        load_file(str(student / "model.safetensors")),
    )
    assert not any(".layer.1." in key for key in mine)
    for key, value in mine.items():
        source = key.replace(".layer.0.", ".layer.1.")
        assert torch.equal(value, weights[source]), key
    runner = ModelRunner(student)  # loads as a 1-layer model of the same task
    assert runner.model.config.num_hidden_layers == 1
    rows = read_rows(SAMPLES["classification"])[:4]
    assert len(runner.predict_rows(rows)) == 4


@pytest.mark.parametrize("task", ["classification", "similarity", "ner", "qa"])
def test_soft_target_loss_trains_the_student(task: str, tmp_path: Path, tiny_base_model: Path):
    """Teacher outputs line up with the training features; the loss is finite, mixes hard and
    soft terms, and its gradient moves the student towards the teacher."""
    teacher = untrained_model_dir(task, tiny_base_model, tmp_path / "t" / "model")
    student_dir, _ = make_student(teacher, 1, tmp_path / "student")
    runner = ModelRunner(student_dir)
    features = runner.encode(read_rows(SAMPLES[task])[:8], targets=True)
    features.update(teacher_targets(teacher, features))
    width = features["input_ids"].shape[1]
    for name, value in features.items():
        if name.startswith("teacher_") and task in ("ner", "qa"):
            assert value.shape[:2] == (len(features["input_ids"]), width), name
    batch = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in features.items()}
    model = runner.model.eval()  # no dropout: the losses are deterministic
    hard_only = distillation_loss(task, model, batch, temperature=2.0, alpha=1.0)
    soft_only = distillation_loss(task, model, batch, temperature=2.0, alpha=0.0)
    mixed = distillation_loss(task, model, batch, temperature=2.0, alpha=0.5)
    assert torch.isfinite(mixed) and soft_only.item() >= 0
    assert mixed.item() == pytest.approx(0.5 * hard_only.item() + 0.5 * soft_only.item(), rel=0.05)
    torch.manual_seed(0)
    with torch.no_grad():  # move the student away from the teacher, then let the loss pull it back
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    before = distillation_loss(task, model, batch, temperature=2.0, alpha=0.0).item()
    parameters = [p for p in model.parameters() if p.requires_grad]
    for _ in range(3):  # steps that cut the loss by 10% each to first order
        loss = distillation_loss(task, model, batch, temperature=2.0, alpha=0.0)
        grads = torch.autograd.grad(loss, parameters, allow_unused=True)
        norm = torch.sqrt(sum((g**2).sum() for g in grads if g is not None))
        with torch.no_grad():
            for parameter, grad in zip(parameters, grads, strict=True):
                if grad is not None:
                    parameter.sub_(0.1 * loss.detach() * grad / norm**2)  # -10% to 1st order
    after = distillation_loss(task, model, batch, temperature=2.0, alpha=0.0).item()
    assert after < before
