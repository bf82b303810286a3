"""Real Ray Train + DeepSpeed runs (2 gloo workers) on a tiny BERT: learning, shards, consolidation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_job

from raynlp.config import parse_job_config
from raynlp.evaluation import evaluate_model
from raynlp.training.checkpoints import read_model_meta
from raynlp.training.trainer import RunExistsError, train


@pytest.mark.timeout(420)
# ZeRO-3 runs in the default suite through test_training_strategies (progressive unfreezing)
@pytest.mark.parametrize("zero_stage", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_two_worker_deepspeed_run(tmp_path: Path, tiny_base_model: Path, ray_local, zero_stage):
    config = parse_job_config(
        tiny_job(tmp_path, tiny_base_model, deepspeed={"zero_stage": zero_stage})
    )
    result = train(config)

    history = result.metrics["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 0.01

    # Every rank wrote its ZeRO shard into the same Ray checkpoint; Ray keeps the best N.
    checkpoints = [Path(c.path) for c, _ in result.ray_result.best_checkpoints]
    assert len(checkpoints) == config.output.checkpoints_to_keep
    for checkpoint in checkpoints:
        shards = sorted(p.name for p in (checkpoint / "deepspeed").glob("*optim_states.pt"))
        assert len(shards) == 2, shards
        assert any("rank_0" in s for s in shards) and any("rank_1" in s for s in shards)

    # The consolidated folder is a standard HF model that predicts like the trained engine:
    # the same rows give the same confusion matrix as the engine's own validation pass.
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(result.model_dir))
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert read_model_meta(result.model_dir)["labels"] == ["negative", "positive"]
    engine = result.metrics["validation"]
    consolidated = evaluate_model(
        result.model_dir, str(result.run_dir / "data" / "validation.jsonl")
    )
    assert consolidated["metrics"]["confusion_matrix"] == engine["confusion_matrix"]
    assert consolidated["metrics"]["accuracy"] == pytest.approx(engine["accuracy"])
    assert json.loads((result.run_dir / "metrics.json").read_text())["best_epoch"] in (1, 2, 3)


def test_existing_run_is_not_overwritten_silently(tmp_path: Path, tiny_base_model: Path):
    config = parse_job_config(tiny_job(tmp_path, tiny_base_model))
    config.run_dir.mkdir(parents=True)
    (config.run_dir / "keep.txt").write_text("precious")
    with pytest.raises(RunExistsError, match="--overwrite"):
        train(config)
    assert (config.run_dir / "keep.txt").read_text() == "precious"
