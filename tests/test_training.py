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


@pytest.mark.timeout(420)
def test_run_resumed_at_an_epoch_boundary_trains_as_the_uninterrupted_one(
    tmp_path: Path, tiny_base_model: Path, ray_local
):
    """Dropout draws depend on (seed, epoch, rank) only, so a run stopped after epoch 1 and
    resumed from that checkpoint (as Tune's halving and PBT continue trials, and `--resume`
    after a crash) ends with the same weights as one run straight through."""
    import torch

    from raynlp.training.checkpoints import consolidated_state_dict, read_checkpoint_meta

    def job(name: str, epochs: int) -> dict:
        spec = tiny_job(
            tmp_path,
            tiny_base_model,
            name=name,
            training={"epochs": epochs, "lr_schedule": "constant", "warmup_ratio": 0.0},
            scaling={"num_workers": 1},
        )
        spec["data"]["max_train_rows"] = 256
        return spec

    straight = train(parse_job_config(job("straight", 2)))
    first = train(parse_job_config(job("resumed", 1)))
    # as if it had been stopped right after its epoch-1 checkpoint (the crash test kills one)
    (first.run_dir / "metrics.json").unlink()
    resumed = train(parse_job_config(job("resumed", 2)), resume=True)
    assert [h["epoch"] for h in resumed.metrics["history"]] == [1, 2]
    assert resumed.metrics["resumed"]  # it did continue from the epoch-1 checkpoint

    def last_epoch_weights(run_dir: Path) -> dict:
        (last,) = [  # the exported model is the *best* epoch's: compare epoch 2 itself
            c for c in (run_dir / "ray" / "train").glob("checkpoint_2*")
            if read_checkpoint_meta(c)["epoch"] == 2
        ]  # fmt: skip
        return consolidated_state_dict(last)

    a, b = last_epoch_weights(straight.run_dir), last_epoch_weights(resumed.run_dir)
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, differ[:5]
