"""The task protocol: everything task-specific that the shared machinery asks about.

Config, data loading, the Ray Train + DeepSpeed loop, export and serving are written once; they
call a ``Task`` for the parts that differ between sentiment, NER, QA, similarity and
summarization. Adding a task means one module implementing this protocol plus one registry line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from raynlp.config import JobConfig

Row = dict[str, Any]
Features = dict[str, np.ndarray]


@dataclass(frozen=True)
class InputSpec:
    """How rows become model inputs: the columns and the token budget.

    Built from a job config at training time and from ``raynlp.json`` beside a trained model
    at evaluation, export and serving time, so every stage encodes text the same way.
    """

    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    max_length: int = 128

    @classmethod
    def from_config(cls, config: JobConfig) -> InputSpec:
        data = config.data
        return cls(
            data.text_column, data.text_pair_column, data.label_column, config.model.max_length
        )

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> InputSpec:
        return cls(
            meta["text_column"],
            meta.get("text_pair_column"),
            meta["label_column"],
            meta["max_length"],
        )


class Task(Protocol):
    name: str
    description: str
    onnx_task: str
    """Optimum export task name (``optimum-cli export onnx --task``)."""
    best_metric: str
    """Validation metric that decides the best checkpoint (higher is better)."""
    ort_model_class: str
    """Name of the ``optimum.onnxruntime`` class that exports and runs this task."""

    def label_names(self, config: JobConfig, rows: list[Row]) -> list[str] | None:
        """Class names in id order (None for tasks without classes)."""

    def build_model(
        self, model_path: str, labels: list[str] | None, config: JobConfig | None
    ) -> PreTrainedModel:
        """A fresh model with this task's head, initialised from a base checkpoint."""

    def load_trained(self, model_dir: str) -> PreTrainedModel:
        """A fine-tuned model from a consolidated Hugging Face directory."""

    def encode(
        self,
        rows: list[Row],
        tokenizer: PreTrainedTokenizerBase,
        spec: InputSpec,
        labels: list[str] | None,
    ) -> Features:
        """Model inputs (padded to ``model.max_length``) plus targets, as column arrays."""

    def encode_texts(
        self,
        texts: list[str],
        tokenizer: PreTrainedTokenizerBase,
        spec: InputSpec,
        pairs: list[str] | None = None,
        padding: str = "longest",
    ) -> Features:
        """Model inputs for raw request texts (no targets)."""

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Training loss of one batch (``model`` may be a DeepSpeed engine)."""

    def eval_outputs(self, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """Per-example arrays needed to score a batch; gathered across workers."""

    def compute_metrics(
        self, outputs: dict[str, np.ndarray], labels: list[str] | None
    ) -> dict[str, Any]:
        """The task's metrics from gathered ``eval_outputs``; ``best_metric`` must be among them."""

    def predict_texts(self, logits: np.ndarray, labels: list[str] | None) -> list[dict[str, Any]]:
        """JSON-ready answers for serving, from raw model outputs."""
