"""Strategies, schedules, early stopping, pitfall warnings and the learning curve (no Ray)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    EncoderDecoderConfig,
    EncoderDecoderModel,
    T5Config,
    T5ForConditionalGeneration,
)

from raynlp.config import ConfigError, parse_job_config
from raynlp.training.early_stopping import EarlyStopping
from raynlp.training.strategies import (
    Strategy,
    apply_dropout,
    param_layout,
    pitfall_warnings,
    plan_stages,
)
from raynlp.training.tracking import plot_learning_curve


def bert(layers: int = 4) -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification(
        BertConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=layers,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=32,
            num_labels=2,
        )
    )


def job(**training) -> dict:
    return {"name": "t", "data": {"train": "sample://sst2_train.tsv"}, "training": training}


def strategy(model: torch.nn.Module, steps_per_epoch: int = 10, **training) -> Strategy:
    config = parse_job_config(job(**training))
    return Strategy(config, model, steps_per_epoch, steps_per_epoch * config.training.epochs)


# --------------------------------------------------------------------------- parameter layout
def test_layout_of_bert_classifier():
    layout = param_layout(bert(4))
    assert layout.num_layers == 4
    assert layout.blocks["bert.embeddings.word_embeddings.weight"] == "embeddings"
    assert layout.blocks["bert.embeddings.LayerNorm.weight"] == "embeddings"
    assert layout.blocks["bert.encoder.layer.0.attention.self.query.weight"] == "layer.0"
    assert layout.blocks["bert.encoder.layer.3.output.dense.bias"] == "layer.3"
    assert layout.blocks["bert.pooler.dense.weight"] == "head"
    assert layout.blocks["classifier.weight"] == "head"


def test_layout_of_seq2seq_models_puts_decoder_above_encoder():
    t5 = T5ForConditionalGeneration(
        T5Config(vocab_size=40, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2)
    )
    layout = param_layout(t5)
    assert layout.num_layers == 4
    assert layout.blocks["shared.weight"] == "embeddings"
    assert layout.blocks["encoder.block.1.layer.0.SelfAttention.q.weight"] == "layer.1"
    assert layout.blocks["decoder.block.0.layer.1.EncDecAttention.q.weight"] == "layer.2"
    small = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
    )
    bert2bert = EncoderDecoderModel(
        config=EncoderDecoderConfig.from_encoder_decoder_configs(small, small)
    )
    layout = param_layout(bert2bert)
    assert layout.num_layers == 4
    assert layout.blocks["encoder.encoder.layer.1.output.dense.weight"] == "layer.1"
    assert layout.blocks["decoder.bert.encoder.layer.0.output.dense.weight"] == "layer.2"
    assert layout.blocks["decoder.bert.embeddings.word_embeddings.weight"] == "embeddings"


# --------------------------------------------------------------------------- stages and rates
def test_default_progressive_schedule_is_the_guides_spread_over_the_run():
    config = parse_job_config(job(strategy="progressive", epochs=3))
    stages = plan_stages(config, num_layers=6, steps_per_epoch=70, total_steps=210)
    assert [s.unfreeze for s in stages] == [0, 1, 2, 3, 4, 5, None]
    assert [s.learning_rate for s in stages] == [1e-3] + [1e-4] * 6
    assert [s.start_step for s in stages] == [0, 30, 60, 90, 120, 150, 180]


def test_stages_by_epoch_and_by_step():
    by_epoch = parse_job_config(
        job(
            strategy="progressive",
            epochs=4,
            progressive={
                "stages": [
                    {"unfreeze": 0, "learning_rate": 1e-3, "epochs": 1},
                    {"unfreeze": 2, "learning_rate": 1e-4, "epochs": 2},
                    {"unfreeze": "all", "learning_rate": 5e-5},
                ]
            },
        )
    )
    assert [s.start_step for s in plan_stages(by_epoch, 4, 25, 100)] == [0, 25, 75]
    by_step = parse_job_config(
        job(
            strategy="progressive",
            progressive={
                "stages": [
                    {"unfreeze": 0, "learning_rate": 1e-3, "steps": 7},
                    {"unfreeze": "all", "learning_rate": 1e-4},
                ]
            },
        )
    )
    assert [s.start_step for s in plan_stages(by_step, 4, 25, 75)] == [0, 7]


def test_progressive_rates_and_trainable_parameters_per_stage():
    model = bert(4)
    plan = strategy(
        model,
        strategy="progressive",
        epochs=3,
        lr_schedule="constant",
        progressive={
            "stages": [
                {"unfreeze": 0, "learning_rate": 1e-3, "epochs": 1},
                {"unfreeze": 1, "learning_rate": 1e-4, "epochs": 1},
                {"unfreeze": "all", "learning_rate": 5e-5},
            ]
        },
    )
    # step 0-9: head only at 1e-3; 10-19: + layer 3 at 1e-4; 20-: everything at 5e-5
    assert plan.learning_rate("head", 0) == pytest.approx(1e-3)
    assert plan.learning_rate("layer.3", 5) == 0.0
    assert plan.learning_rate("embeddings", 9) == 0.0
    assert plan.learning_rate("layer.3", 10) == pytest.approx(1e-4)
    assert plan.learning_rate("layer.2", 15) == 0.0
    assert plan.learning_rate("embeddings", 20) == pytest.approx(5e-5)
    assert plan.learning_rate("layer.0", 29) == pytest.approx(5e-5)

    optimizer = plan.build_optimizer(model)
    scheduler = plan.build_scheduler(optimizer)
    rates = []
    for step in range(30):
        plan.apply(model, step)
        rates.append({g["block"]: g["lr"] for g in optimizer.param_groups})
        if step in (0, 10, 20):
            trains = {n for n, p in model.named_parameters() if p.requires_grad}
            if step == 0:
                assert trains == {n for n in trains if n.startswith(("classifier", "bert.pooler"))}
            if step == 10:
                assert "bert.encoder.layer.3.output.dense.weight" in trains
                assert "bert.encoder.layer.2.output.dense.weight" not in trains
            if step == 20:
                assert len(trains) == len(list(model.parameters()))
        optimizer.step()
        scheduler.step()
    assert rates[0]["head"] == pytest.approx(1e-3) and rates[0]["layer.3"] == 0.0
    assert rates[10]["layer.3"] == pytest.approx(1e-4) and rates[10]["layer.2"] == 0.0
    assert rates[20]["embeddings"] == pytest.approx(5e-5)
    # every block has one group with decay and one without (biases, LayerNorm)
    blocks = [g["block"] for g in optimizer.param_groups]
    assert sorted(set(blocks)) == ["embeddings", "head", "layer.0", "layer.1", "layer.2", "layer.3"]


def test_warmup_then_linear_or_cosine_decay():
    model = bert(2)
    linear = strategy(model, epochs=1, warmup_steps=4, learning_rate=1e-4)
    assert [linear.shape(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert linear.shape(7) == pytest.approx(0.5)  # halfway from step 4 to step 10
    assert linear.shape(10) == 0.0
    cosine = strategy(model, epochs=1, warmup_ratio=0.2, lr_schedule="cosine")
    assert cosine.warmup_steps() == 2
    assert cosine.shape(6) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert strategy(model, epochs=1, lr_schedule="constant").shape(9) == 1.0


def test_layerwise_decay_scales_each_block_below_the_head():
    plan = strategy(bert(4), layerwise_lr_decay=0.5, learning_rate=1e-4, lr_schedule="constant")
    assert plan.learning_rate("head", 0) == pytest.approx(1e-4)
    assert plan.learning_rate("layer.3", 0) == pytest.approx(5e-5)
    assert plan.learning_rate("layer.0", 0) == pytest.approx(1e-4 * 0.5**4)
    assert plan.learning_rate("embeddings", 0) == pytest.approx(1e-4 * 0.5**5)


def test_freeze_leaves_frozen_parameters_out_of_the_optimizer():
    model = bert(4)
    plan = strategy(model, strategy="freeze", freeze={"embeddings": True, "layers": 2})
    plan.prepare(model)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == plan.frozen
    assert all(
        n.startswith(("bert.embeddings", "bert.encoder.layer.0.", "bert.encoder.layer.1."))
        for n in frozen
    )
    assert any(n.startswith("bert.encoder.layer.1.") for n in frozen)
    optimizer = plan.build_optimizer(model)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert not in_optimizer & {id(named[n]) for n in frozen}
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert plan.trainable_params(model) == trainable < sum(p.numel() for p in model.parameters())

    by_pattern = strategy(
        bert(2), strategy="freeze", freeze={"embeddings": False, "patterns": [r"\.attention\."]}
    )
    assert by_pattern.frozen and all(".attention." in n for n in by_pattern.frozen)


def test_dropout_override_reaches_modules_and_config():
    model = bert(2)
    assert apply_dropout(model, 0.3) > 0
    assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {0.3}
    assert model.config.hidden_dropout_prob == model.config.attention_probs_dropout_prob == 0.3


# --------------------------------------------------------------------------- config errors
@pytest.mark.parametrize(
    ("training", "message"),
    [
        ({"strategy": "freeze", "freeze": {"embeddings": False}}, "freezes nothing"),
        ({"strategy": "unfreeze"}, "training.strategy: Input should be 'full', 'freeze' or"),
        ({"early_stopping": {"metric": "f1"}}, "allowed: accuracy, precision_macro"),
        ({"lr_schedule": "step"}, "training.lr_schedule: Input should be 'linear', 'cosine'"),
        (
            {
                "progressive": {
                    "stages": [
                        {"unfreeze": 2, "learning_rate": 1e-3, "epochs": 1},
                        {"unfreeze": 1, "learning_rate": 1e-4},
                    ]
                }
            },
            "never fewer",
        ),
        (
            {
                "progressive": {
                    "stages": [
                        {"unfreeze": 0, "learning_rate": 1e-3},
                        {"unfreeze": 1, "learning_rate": 1e-4},
                    ]
                }
            },
            "stage 1 needs a length",
        ),
        (
            {
                "progressive": {
                    "stages": [
                        {"unfreeze": 0, "learning_rate": 1e-3, "epochs": 1},
                        {"unfreeze": 1, "learning_rate": 1e-4, "steps": 5},
                        {"unfreeze": "all", "learning_rate": 1e-4},
                    ]
                }
            },
            "must all be in epochs or all in steps",
        ),
        (
            {
                "strategy": "progressive",
                "epochs": 2,
                "progressive": {
                    "stages": [
                        {"unfreeze": 0, "learning_rate": 1e-3, "epochs": 2},
                        {"unfreeze": "all", "learning_rate": 1e-4},
                    ]
                },
            },
            "need more than 2 epochs",
        ),
        ({"freeze": {"patterns": ["(unclosed"]}}, "training.freeze.patterns: '(unclosed'"),
        ({"layerwise_lr_decay": 1.5}, "training.layerwise_lr_decay"),
        ({"dropout": 1.0}, "training.dropout"),
    ],
)
def test_bad_strategy_config_names_the_key(training, message):
    with pytest.raises(ConfigError) as err:
        parse_job_config(job(**training))
    assert message in str(err.value)


def test_failure_and_tracking_keys():
    config = parse_job_config(
        {**job(), "scaling": {"max_failures": 2}, "output": {"tensorboard": False}}
    )
    assert config.scaling.max_failures == 2 and config.output.tensorboard is False
    with pytest.raises(ConfigError, match=r"scaling\.max_failures"):
        parse_job_config({**job(), "scaling": {"max_failures": -2}})


# --------------------------------------------------------------------------- pitfalls
def test_pitfall_warnings_follow_the_guide():
    high = parse_job_config(job(learning_rate=1e-3, epochs=3))
    assert any("above 1e-4" in w for w in pitfall_warnings(high, 50_000))
    freeze = parse_job_config(
        job(learning_rate=1e-3, strategy="freeze", freeze={"layers": 4}, epochs=3)
    )
    assert pitfall_warnings(freeze, 50_000) == []  # a high rate on a frozen encoder is fine
    short = parse_job_config(job(epochs=1))
    assert any("at least 3 epochs" in w for w in pitfall_warnings(short, 2_000))
    assert pitfall_warnings(short, 100_000) == []  # one epoch of a big dataset is fine
    assert pitfall_warnings(parse_job_config(job()), 2_000) == []  # the defaults are fine


# --------------------------------------------------------------------------- early stopping
def test_early_stopping_patience_and_min_delta():
    stopping = EarlyStopping("accuracy", "max", patience=2, min_delta=0.01)
    assert not stopping.update({"accuracy": 0.80}, 1)
    assert not stopping.update({"accuracy": 0.805}, 2)  # within min_delta: no gain
    assert stopping.bad_epochs == 1 and stopping.best_epoch == 1
    assert not stopping.update({"accuracy": 0.85}, 3)
    assert stopping.best_epoch == 3 and stopping.bad_epochs == 0
    assert not stopping.update({"accuracy": 0.84}, 4)
    assert stopping.update({"accuracy": 0.849}, 5)
    assert stopping.stopped_epoch == 5

    restored = EarlyStopping("accuracy", "max", patience=2, min_delta=0.01)
    restored.restore(EarlyStopping("accuracy", "max", 2, 0.01, best=0.9, bad_epochs=1).state())
    assert restored.update({"accuracy": 0.5}, 7)  # the saved bad epoch counts

    lower = EarlyStopping("mse", "min", patience=1)
    assert not lower.update({"mse": 1.0}, 1) and not lower.update({"mse": 0.5}, 2)
    assert lower.update({"mse": 0.6}, 3)
    watching = EarlyStopping("accuracy", enabled=False, patience=1)
    assert not watching.update({"accuracy": 0.5}, 1) and not watching.update({"accuracy": 0.4}, 2)
    with pytest.raises(KeyError, match="accuracy"):
        watching.update({"f1": 0.3}, 3)


def test_watched_metric_and_its_direction():
    assert parse_job_config(job()).watched_metric == ("accuracy", "max")
    similarity = parse_job_config({**job(early_stopping={"metric": "mse"}), "task": "similarity"})
    assert similarity.watched_metric == ("mse", "min")


def test_learning_curve_png(tmp_path: Path):
    meta = {
        "history": [
            {"epoch": e, "step": 10 * e, "train_loss": 1 / e, "val_accuracy": 0.5 + e / 10}
            for e in (1, 2, 3)
        ],
        "curve": [[s, 1.5 / s**0.5] for s in range(2, 31, 2)],
        "stages": [{"stage": 0, "step": 0}, {"stage": 1, "step": 10}, {"stage": 2, "step": 20}],
        "early_stopping": {"best_epoch": 3, "stopped_epoch": None},
    }
    path = plot_learning_curve(meta, "accuracy", tmp_path / "curve.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_raw_deepspeed_optimizer_cannot_drive_progressive_stages():
    raw = {**job(strategy="progressive"), "deepspeed": {"config": {"optimizer": {"type": "AdamW"}}}}
    with pytest.raises(ConfigError, match=r"deepspeed\.config sets its own optimizer"):
        parse_job_config(raw)
    raw["training"] = {"strategy": "full"}
    assert parse_job_config(raw).training.strategy == "full"  # fine without per-block rates
