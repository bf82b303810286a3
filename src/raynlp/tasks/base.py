"""The task protocol: everything task-specific that the shared machinery asks about.

Config, data loading, the Ray Train + DeepSpeed loop, evaluation, export and serving are written
once; they call a ``Task`` for the parts that differ between sentiment, NER, QA, similarity and
summarization. Adding a task means one module implementing this protocol plus one registry line.

One data path for every stage::

    rows ──encode──▶ features ──infer(model)──▶ outputs ──predictions(rows)──▶ answers
                                                                   └──compute_metrics──▶ metrics

``rows`` are plain dicts (one per example, as read from the data file or a request), features
are column arrays (one row per model window; ``example_index`` says which example a window came
from), ``model`` is whatever runs the network: a DeepSpeed engine in training, a PyTorch model in
evaluation, an Optimum ONNX Runtime model in export checks and serving.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from raynlp.config import JobConfig

Row = dict[str, Any]
Features = dict[str, np.ndarray]

ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
"""Model inputs of a BERT-family encoder (``token_type_ids`` only where the tokenizer makes them)."""


@dataclass(frozen=True)
class InputSpec:
    """How rows become model inputs: the columns, the token budget and the task's options.

    Built from a job config at training time and from ``raynlp.json`` beside a trained model
    at evaluation, export and serving time, so every stage encodes text the same way.
    """

    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    max_length: int = 128
    options: dict[str, Any] = field(default_factory=dict)
    """The task's own config section (``ner``, ``qa``, ``summarization``), as a plain dict."""

    @classmethod
    def from_config(cls, config: JobConfig) -> InputSpec:
        from raynlp.tasks import get_task

        task = get_task(config.task)
        data, defaults = config.data, task.default_columns
        return cls(
            data.text_column or defaults["text_column"],
            data.text_pair_column or defaults.get("text_pair_column"),
            data.label_column or defaults["label_column"],
            config.model.max_length,
            task.options(config),
        )

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> InputSpec:
        return cls(
            meta["text_column"],
            meta.get("text_pair_column"),
            meta["label_column"],
            meta["max_length"],
            meta.get("options") or {},
        )

    def input_columns(self) -> list[str]:
        return [c for c in (self.text_column, self.text_pair_column) if c]


class Task(Protocol):
    name: str
    description: str
    onnx_task: str
    """Optimum export task name (``optimum-cli export onnx --task``)."""
    ort_model_class: str
    """Name of the ``optimum.onnxruntime`` class that exports and runs this task."""
    best_metric: str
    metric_names: tuple[str, ...]
    """Scalar validation metrics (early stopping and checkpoint ranking may use any)."""
    """Validation metric that decides the best checkpoint and the export gate (higher is better)."""
    default_columns: dict[str, str | None]
    """``text_column`` / ``text_pair_column`` / ``label_column`` when the config leaves them unset."""
    token_columns: tuple[str, ...]
    """Feature columns aligned with the input tokens (trimmed with the padding)."""
    request_kind: str
    """Serving request item: ``text``, ``pair`` (two texts) or ``qa`` (question + context)."""

    def options(self, config: JobConfig) -> dict[str, Any]:
        """This task's config section as a dict (``{}`` when it has none)."""

    def label_names(self, config: JobConfig, rows: list[Row]) -> list[str] | None:
        """Class or tag names in id order (None for tasks without classes)."""

    def build_model(
        self, model_path: str, labels: list[str] | None, spec: InputSpec
    ) -> torch.nn.Module:
        """A fresh model with this task's head, initialised from a base checkpoint."""

    def load_trained(self, model_dir: str) -> torch.nn.Module:
        """A fine-tuned PyTorch model from a consolidated model folder, in eval mode."""

    def load_onnx(self, onnx_dir: str, session_options: Any, provider: str) -> Any:
        """The Optimum ONNX Runtime model of an export folder (callable like the PyTorch one)."""

    def encode(
        self,
        rows: list[Row],
        tokenizer: PreTrainedTokenizerBase,
        spec: InputSpec,
        labels: list[str] | None,
        targets: bool = True,
        padding: str = "max_length",
    ) -> Features:
        """Model inputs (+ targets when ``targets``) and ``example_index``, as column arrays.

        Training pads to ``spec.max_length`` (fixed-width dataset columns); requests pad to the
        longest input of the batch.
        """

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Training loss of one batch (``model`` may be a DeepSpeed engine)."""

    def infer(self, model: Any, batch: dict[str, torch.Tensor], spec: InputSpec) -> Features:
        """Raw per-window outputs (logits, spans, generated ids) plus the bookkeeping columns."""

    def predictions(
        self,
        outputs: Features,
        rows: list[Row],
        spec: InputSpec,
        labels: list[str] | None,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> list[dict[str, Any]]:
        """One JSON-ready answer per row (in row order) from the gathered ``infer`` outputs."""

    def compute_metrics(
        self,
        predictions: list[dict[str, Any]],
        rows: list[Row],
        spec: InputSpec,
        labels: list[str] | None,
    ) -> dict[str, Any]:
        """The task's metrics against the gold targets of ``rows``; includes ``best_metric``."""

    def agreement(self, a: list[dict[str, Any]], b: list[dict[str, Any]]) -> float:
        """Share of examples on which two models give the same answer (export parity)."""

    def request_rows(self, items: list[dict[str, Any]], spec: InputSpec) -> list[Row]:
        """Rows in the training columns from validated serving request items."""


# --- helpers shared by the task modules -------------------------------------------------------


def model_inputs(batch: dict[str, torch.Tensor], extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """The encoder inputs of a batch (plus ``extra`` columns), leaving bookkeeping columns out."""
    return {key: batch[key] for key in (*ENCODER_INPUTS, *extra) if key in batch}


def unwrap(model: Any) -> Any:
    """The ``nn.Module`` inside a DeepSpeed engine (or the model itself)."""
    return getattr(model, "module", model)


def to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach()
        if value.is_floating_point():
            value = value.float()
        return value.cpu().numpy()
    return np.asarray(value)


def check_columns(rows: list[Row], columns: list[str]) -> None:
    if rows:
        missing = [c for c in columns if c not in rows[0]]
        if missing:
            raise ValueError(
                f"column(s) {', '.join(map(repr, missing))} not in the data; "
                f"columns are: {', '.join(rows[0])}"
            )


def concat_ragged(arrays: list[np.ndarray], pad: float | int = 0) -> np.ndarray:
    """Concatenate along axis 0, padding axis 1 to the widest (batches trimmed differently)."""
    if not arrays:
        return np.zeros((0,))
    if arrays[0].ndim < 2 or len({a.shape[1] for a in arrays}) == 1:
        return np.concatenate(arrays)
    width = max(a.shape[1] for a in arrays)
    padded = []
    for a in arrays:
        spec = [(0, 0)] * a.ndim
        spec[1] = (0, width - a.shape[1])
        padded.append(np.pad(a, spec, constant_values=pad))
    return np.concatenate(padded)


def merge_outputs(parts: list[Features]) -> Features:
    """Concatenate per-batch outputs column by column (ragged widths padded)."""
    if not parts:
        return {}
    return {key: concat_ragged([p[key] for p in parts]) for key in parts[0]}


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)
