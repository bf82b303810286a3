"""Sequence classification (sentiment, any single-label text classification) and semantic
similarity (sentence pairs → a score, regression head). Both are one encoder pass + a head on
the first token; they differ in the head size, the loss and the metric."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from raynlp.evaluation import classification_metrics
from raynlp.metrics import regression_metrics
from raynlp.tasks.base import (
    ENCODER_INPUTS,
    InputSpec,
    check_columns,
    model_inputs,
    softmax,
    to_numpy,
    unwrap,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from raynlp.config import JobConfig
    from raynlp.tasks.base import Features, Row


def _label_id(value: Any, labels: list[str], column: str) -> int:
    text = str(value).strip()
    if text in labels:
        return labels.index(text)
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(labels):
        return int(text)
    raise ValueError(
        f"label {value!r} in column {column!r} is neither a class name ({', '.join(labels)}) "
        f"nor an id in 0..{len(labels) - 1}"
    )


class EncoderTask:
    """What every encoder-only task shares: options, ONNX loading, text encoding."""

    name = ""
    ort_model_class = ""
    token_columns: tuple[str, ...] = ENCODER_INPUTS
    request_kind = "text"

    def options(self, config: JobConfig) -> dict[str, Any]:
        return {}

    def load_onnx(self, onnx_dir: str, session_options: Any, provider: str) -> Any:
        import optimum.onnxruntime as ort_models

        from raynlp.export.files import onnx_file_names

        model_class = getattr(ort_models, self.ort_model_class)
        (file_name,) = onnx_file_names(onnx_dir).values()
        return model_class.from_pretrained(
            onnx_dir, file_name=file_name, session_options=session_options, provider=provider
        )

    def tokenize_rows(
        self, rows: list[Row], tokenizer: PreTrainedTokenizerBase, spec: InputSpec, padding: str
    ) -> Features:
        check_columns(rows, spec.input_columns())
        texts = [str(row[spec.text_column]) for row in rows]
        pairs = [str(row[spec.text_pair_column]) for row in rows] if spec.text_pair_column else None
        encoded = tokenizer(
            texts,
            pairs,
            truncation=True,
            max_length=spec.max_length,
            padding=padding,
            return_tensors="np",
        )
        features = {key: np.asarray(value, dtype=np.int64) for key, value in encoded.items()}
        features["example_index"] = np.arange(len(rows), dtype=np.int64)
        return features

    def request_rows(self, items: list[dict[str, Any]], spec: InputSpec) -> list[Row]:
        """``{"text"}`` items (``{"text", "text_pair"}`` for pair tasks) → rows in the data columns."""
        rows = []
        for item in items:
            row = {spec.text_column: item["text"]}
            if spec.text_pair_column:
                row[spec.text_pair_column] = item["text_pair"]
            rows.append(row)
        return rows


class SequenceHeadTask(EncoderTask):
    """One score vector per input from the first token (classification and similarity)."""

    def load_trained(self, model_dir: str) -> PreTrainedModel:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(model_dir).eval()

    def infer(self, model: Any, batch: dict[str, torch.Tensor], spec: InputSpec) -> Features:
        logits = unwrap(model)(**model_inputs(batch)).logits
        return {"logits": to_numpy(logits), "example_index": to_numpy(batch["example_index"])}


class SequenceClassification(SequenceHeadTask):
    name = "classification"
    description = "Sentiment / single-label text classification (accuracy, P/R/F1)"
    onnx_task = "text-classification"
    best_metric = "accuracy"
    metric_names = ("accuracy", "precision_macro", "recall_macro", "f1_macro")
    ort_model_class = "ORTModelForSequenceClassification"
    default_columns = {"text_column": "text", "text_pair_column": None, "label_column": "label"}

    def label_names(self, config: JobConfig, rows: list[Row]) -> list[str]:
        if config.data.label_names:
            return list(config.data.label_names)
        column = InputSpec.from_config(config).label_column
        check_columns(rows, [column])
        values = sorted({str(row[column]).strip() for row in rows})
        if all(v.isdigit() for v in values):
            return [str(i) for i in range(max(int(v) for v in values) + 1)]
        return values

    def build_model(
        self, model_path: str, labels: list[str] | None, spec: InputSpec
    ) -> PreTrainedModel:
        from transformers import AutoModelForSequenceClassification

        assert labels is not None
        return AutoModelForSequenceClassification.from_pretrained(
            model_path,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
        )

    def encode(
        self,
        rows: list[Row],
        tokenizer: PreTrainedTokenizerBase,
        spec: InputSpec,
        labels: list[str] | None,
        targets: bool = True,
        padding: str = "max_length",
    ) -> Features:
        features = self.tokenize_rows(rows, tokenizer, spec, padding)
        if targets:
            assert labels is not None
            check_columns(rows, [spec.label_column])
            features["labels"] = np.array(
                [_label_id(row[spec.label_column], labels, spec.label_column) for row in rows],
                dtype=np.int64,
            )
        return features

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**model_inputs(batch, ("labels",))).loss

    def predictions(
        self,
        outputs: Features,
        rows: list[Row],
        spec: InputSpec,
        labels: list[str] | None,
        tokenizer: Any = None,
    ) -> list[dict[str, Any]]:
        assert labels is not None
        order = np.argsort(outputs["example_index"], kind="stable")
        probabilities = softmax(outputs["logits"][order].astype(np.float64))
        answers = []
        for row in probabilities:
            best = int(row.argmax())
            answers.append(
                {
                    "label": labels[best],
                    "score": float(row[best]),
                    "scores": {name: float(p) for name, p in zip(labels, row, strict=True)},
                }
            )
        return answers

    def compute_metrics(
        self,
        predictions: list[dict[str, Any]],
        rows: list[Row],
        spec: InputSpec,
        labels: list[str] | None,
    ) -> dict[str, Any]:
        assert labels is not None
        predicted = np.array([labels.index(p["label"]) for p in predictions])
        gold = np.array([_label_id(r[spec.label_column], labels, spec.label_column) for r in rows])
        return classification_metrics(predicted, gold, labels)

    def agreement(self, a: list[dict[str, Any]], b: list[dict[str, Any]]) -> float:
        return float(np.mean([x["label"] == y["label"] for x, y in zip(a, b, strict=True)]))


class SemanticSimilarity(SequenceHeadTask):
    """Sentence pairs with a similarity score (STS-B: 0-5); regression head, MSE loss."""

    name = "similarity"
    description = "Semantic similarity of sentence pairs, regression (Pearson, Spearman)"
    onnx_task = "text-classification"
    best_metric = "spearman"
    metric_names = ("spearman", "pearson", "mse", "mae")
    ort_model_class = "ORTModelForSequenceClassification"
    default_columns = {
        "text_column": "sentence1",
        "text_pair_column": "sentence2",
        "label_column": "score",
    }
    request_kind = "pair"
    AGREEMENT_TOLERANCE = 0.1
    gate_on_agreement = False
    """The export gate holds the metric only (answers are never bit-identical across runtimes)."""
    """Two scores 'agree' when they differ by at most this much (STS-B scale 0-5)."""

    def label_names(self, config: JobConfig, rows: list[Row]) -> None:
        return None

    def build_model(
        self, model_path: str, labels: list[str] | None, spec: InputSpec
    ) -> PreTrainedModel:
        from transformers import AutoModelForSequenceClassification

        if not spec.text_pair_column:
            raise ValueError("similarity needs data.text_pair_column (the second sentence)")
        return AutoModelForSequenceClassification.from_pretrained(
            model_path, num_labels=1, problem_type="regression"
        )

    def encode(
        self,
        rows: list[Row],
        tokenizer: PreTrainedTokenizerBase,
        spec: InputSpec,
        labels: list[str] | None,
        targets: bool = True,
        padding: str = "max_length",
    ) -> Features:
        features = self.tokenize_rows(rows, tokenizer, spec, padding)
        if targets:
            features["labels"] = self.gold(rows, spec).astype(np.float32)
        return features

    @staticmethod
    def gold(rows: list[Row], spec: InputSpec) -> np.ndarray:
        check_columns(rows, [spec.label_column])
        values = []
        for index, row in enumerate(rows):
            try:
                values.append(float(row[spec.label_column]))
            except (TypeError, ValueError):
                raise ValueError(
                    f"row {index}: {spec.label_column} {row[spec.label_column]!r} is not a number"
                ) from None
        return np.array(values, dtype=np.float64)

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        # MSE in fp32: under DeepSpeed bf16 the head's output is bf16, the targets fp32.
        scores = model(**model_inputs(batch)).logits.float().squeeze(-1)
        return torch.nn.functional.mse_loss(scores, batch["labels"].float())

    def predictions(
        self,
        outputs: Features,
        rows: list[Row],
        spec: InputSpec,
        labels: list[str] | None,
        tokenizer: Any = None,
    ) -> list[dict[str, Any]]:
        order = np.argsort(outputs["example_index"], kind="stable")
        return [{"score": float(v)} for v in outputs["logits"][order].reshape(-1)]

    def compute_metrics(
        self,
        predictions: list[dict[str, Any]],
        rows: list[Row],
        spec: InputSpec,
        labels: list[str] | None,
    ) -> dict[str, Any]:
        predicted = np.array([p["score"] for p in predictions])
        return regression_metrics(predicted, self.gold(rows, spec))

    def agreement(self, a: list[dict[str, Any]], b: list[dict[str, Any]]) -> float:
        return float(
            np.mean(
                [
                    abs(x["score"] - y["score"]) <= self.AGREEMENT_TOLERANCE
                    for x, y in zip(a, b, strict=True)
                ]
            )
        )
