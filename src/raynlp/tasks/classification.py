"""Sequence classification (sentiment and any other single-label text classification)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from raynlp.evaluation import classification_metrics

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from raynlp.config import JobConfig
    from raynlp.tasks.base import Features, InputSpec, Row


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


class SequenceClassification:
    name = "classification"
    description = "Sentiment / single-label text classification (accuracy, P/R/F1)"
    onnx_task = "text-classification"
    best_metric = "accuracy"
    ort_model_class = "ORTModelForSequenceClassification"

    def label_names(self, config: JobConfig, rows: list[Row]) -> list[str]:
        if config.data.label_names:
            return list(config.data.label_names)
        column = config.data.label_column
        values = sorted({str(row[column]).strip() for row in rows})
        if all(v.isdigit() for v in values):
            return [str(i) for i in range(max(int(v) for v in values) + 1)]
        return values

    def build_model(
        self, model_path: str, labels: list[str] | None, config: JobConfig | None
    ) -> PreTrainedModel:
        from transformers import AutoModelForSequenceClassification

        assert labels is not None
        return AutoModelForSequenceClassification.from_pretrained(
            model_path,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
        )

    def load_trained(self, model_dir: str) -> PreTrainedModel:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(model_dir)

    def encode(
        self,
        rows: list[Row],
        tokenizer: PreTrainedTokenizerBase,
        spec: InputSpec,
        labels: list[str] | None,
    ) -> Features:
        data = spec
        for column in filter(None, (data.text_column, data.text_pair_column, data.label_column)):
            if rows and column not in rows[0]:
                raise ValueError(
                    f"column {column!r} not in the data; columns are: {', '.join(rows[0])}"
                )
        texts = [str(row[data.text_column]) for row in rows]
        pairs = [str(row[data.text_pair_column]) for row in rows] if data.text_pair_column else None
        features = self.encode_texts(texts, tokenizer, spec, pairs, padding="max_length")
        assert labels is not None
        features["labels"] = np.array(
            [_label_id(row[data.label_column], labels, data.label_column) for row in rows],
            dtype=np.int64,
        )
        return features

    def encode_texts(
        self,
        texts: list[str],
        tokenizer: PreTrainedTokenizerBase,
        spec: InputSpec,
        pairs: list[str] | None = None,
        padding: str = "longest",
    ) -> Features:
        """Model inputs for raw texts (serving and parity checks pad to the longest in the batch)."""
        encoded = tokenizer(
            texts,
            pairs,
            truncation=True,
            max_length=spec.max_length,
            padding=padding,
            return_tensors="np",
        )
        return {key: np.asarray(value, dtype=np.int64) for key, value in encoded.items()}

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**batch).loss

    def eval_outputs(self, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs).logits.float()
        return {"logits": logits.cpu().numpy(), "labels": batch["labels"].cpu().numpy()}

    def compute_metrics(
        self, outputs: dict[str, np.ndarray], labels: list[str] | None
    ) -> dict[str, Any]:
        assert labels is not None
        predictions = outputs["logits"].argmax(axis=-1)
        return classification_metrics(predictions, outputs["labels"], labels)

    def predict_texts(self, logits: np.ndarray, labels: list[str] | None) -> list[dict[str, Any]]:
        assert labels is not None
        shifted = logits - logits.max(axis=-1, keepdims=True)
        probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)
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
