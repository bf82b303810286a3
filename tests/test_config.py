"""The job config: defaults, every shipped job validates, and bad configs fail with exact errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from raynlp.config import ConfigError, load_job_config, parse_job_config
from raynlp.training.deepspeed import build_deepspeed_config, distributed_backend, resolve_precision

REPO = Path(__file__).resolve().parents[1]
MINIMAL = {"name": "x", "data": {"train": "sample://sst2_train.tsv"}}


def with_(section: str, **values):
    raw = {"name": "x", "data": {"train": "sample://sst2_train.tsv"}}
    if section == "top":
        raw.update(values)
    else:
        raw.setdefault(section, {}).update(values)
    return raw


def test_defaults_follow_the_guide():
    config = parse_job_config(MINIMAL)
    assert config.task == "classification"
    assert config.training.optimizer == "adamw"
    assert config.training.learning_rate == 2e-5
    assert config.training.batch_size == 32
    assert config.training.epochs == 3
    assert config.data.validation_split == 0.2
    assert config.scaling.num_workers == 2 and config.deepspeed.zero_stage == 2
    assert config.per_worker_batch_size == 16


@pytest.mark.parametrize("job", sorted((REPO / "jobs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_jobs_validate(job: Path):
    config = load_job_config(job, check_files=False)
    assert config.name


def test_cpu_vs_gpu_is_configuration_only():
    cpu = parse_job_config(MINIMAL)
    gpu = parse_job_config(with_("scaling", use_gpu=True))
    assert (distributed_backend(cpu), resolve_precision(cpu)) == ("gloo", "fp32")
    assert (distributed_backend(gpu), resolve_precision(gpu)) == ("nccl", "bf16")
    assert build_deepspeed_config(gpu)["bf16"]["enabled"] is True
    assert build_deepspeed_config(cpu)["bf16"]["enabled"] is False


def test_raw_deepspeed_json_is_merged(tmp_path: Path):
    raw_file = tmp_path / "ds.json"
    raw_file.write_text('{"zero_optimization": {"overlap_comm": false}, "gradient_clipping": 0.5}')
    config = parse_job_config(with_("deepspeed", zero_stage=3, config=str(raw_file)))
    built = build_deepspeed_config(config)
    assert built["zero_optimization"] == {"stage": 3, "overlap_comm": False}
    assert built["gradient_clipping"] == 0.5
    assert built["train_batch_size"] == 32 and built["train_micro_batch_size_per_gpu"] == 16


INVALID = [
    ({"data": {"train": "a.csv"}}, "name: required key is missing"),
    (
        with_("top", task="translation"),
        "task: unknown task; allowed: classification, ner, qa, similarity, summarization (got 'translation')",
    ),
    (
        with_("training", lr=1e-3),
        "training.lr: unknown key; allowed keys: batch_size, dropout, early_stopping, epochs, "
        "eval_batch_size, freeze, gradient_accumulation_steps, layerwise_lr_decay, learning_rate, "
        "log_every_steps, lr_schedule, max_grad_norm, optimizer, progressive, seed, strategy, "
        "warmup_ratio, warmup_steps, weight_decay",
    ),
    (
        with_("top", trainer={}),
        "trainer: unknown key; allowed keys: data, deepspeed, export, model, name, ner, output, "
        "qa, scaling, serve, summarization, task, training",
    ),
    (
        with_("training", learning_rate=-1),
        "training.learning_rate: Input should be greater than 0 (got -1)",
    ),
    (with_("training", optimizer="sgd"), "training.optimizer: Input should be 'adamw' (got 'sgd')"),
    (
        with_("training", epochs=0),
        "training.epochs: Input should be greater than or equal to 1 (got 0)",
    ),
    (
        with_("deepspeed", zero_stage=4),
        "deepspeed.zero_stage: Input should be 0, 1, 2 or 3 (got 4)",
    ),
    (
        with_("deepspeed", precision="fp8"),
        "deepspeed.precision: Input should be 'auto', 'fp32', 'bf16' or 'fp16' (got 'fp8')",
    ),
    (
        with_("scaling", num_workers=0),
        "scaling.num_workers: Input should be greater than or equal to 1 (got 0)",
    ),
    (
        with_("training", batch_size=30, gradient_accumulation_steps=2),
        "training.batch_size (30) must be divisible by scaling.num_workers × "
        "training.gradient_accumulation_steps (4)",
    ),
    (
        with_("deepspeed", precision="fp16"),
        "deepspeed.precision 'fp16' needs scaling.use_gpu: true",
    ),
    (
        with_("data", label_names=["only"]),
        "data.label_names: needs at least 2 class names (got ['only'])",
    ),
    (
        with_("data", validation_split=1.5),
        "data.validation_split: Input should be less than 1 (got 1.5)",
    ),
    (
        with_("data", format="xml"),
        "data.format: Input should be 'auto', 'csv', 'tsv', 'jsonl', 'json', 'parquet', 'conll' or 'squad' (got 'xml')",
    ),
    (with_("top", name="bad name/../x"), "name: String should match pattern"),
    (
        with_("serve", min_replicas=3, max_replicas=2),
        "min_replicas (3) must be <= max_replicas (2)",
    ),
    (
        with_("scaling", resources_per_worker={"CPU": -1}),
        "scaling.resources_per_worker: resource 'CPU' must be >= 0",
    ),
    (with_("ner", crf="maybe"), "ner.crf: Input should be a valid boolean"),
    (
        with_("ner", viterbi=True),
        "ner.viterbi: unknown key; allowed keys: crf, label_all_subtokens",
    ),
    (
        with_("top", task="qa"),
        "qa.doc_stride (128) must be less than half of model.max_length (128)",
    ),
    (
        with_("summarization", num_beams=0),
        "summarization.num_beams: Input should be greater than or equal to 1",
    ),
    (
        with_("data", format="xml"),
        "data.format: Input should be 'auto', 'csv', 'tsv', 'jsonl', 'json', 'parquet', 'conll' or 'squad'",
    ),
    (
        with_("export", max_metric_drop=2),
        "export.max_metric_drop: Input should be less than or equal to 1",
    ),
]


@pytest.mark.parametrize(("raw", "expected"), INVALID, ids=[e[:40] for _, e in INVALID])
def test_invalid_config_names_key_and_allowed_values(raw, expected):
    with pytest.raises(ConfigError) as err:
        parse_job_config(raw, "job.yaml")
    assert expected in str(err.value)
    assert str(err.value).startswith("invalid job config job.yaml:")


def test_missing_files_are_reported_before_any_cluster(tmp_path: Path):
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: x\ndata:\n  train: nowhere.csv\n  validation: sample://nope.tsv\n"
        "model:\n  name_or_path: ./no-such-model\n"
    )
    with pytest.raises(ConfigError) as err:
        load_job_config(job)
    message = str(err.value)
    assert "data.train: file not found: nowhere.csv" in message
    assert "data.validation: no shipped sample 'nope.tsv'; available: ner_train.conll" in message
    assert "model.name_or_path: no model folder at './no-such-model'" in message


def test_yaml_that_is_not_a_mapping(tmp_path: Path):
    job = tmp_path / "job.yaml"
    job.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_job_config(job)
