"""Metric helpers shared by tasks and reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


def classification_metrics(
    predictions: np.ndarray, references: np.ndarray, labels: list[str]
) -> dict[str, Any]:
    """Accuracy, per-class and macro precision/recall/F1, and the confusion matrix.

    Scalars are top-level keys (``accuracy``, ``f1_macro``, …) so Ray can report them;
    ``per_class`` and ``confusion_matrix`` (rows = true class, columns = predicted) are nested.
    """
    ids = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        references, predictions, labels=ids, zero_division=0
    )
    macro = precision_recall_fscore_support(
        references, predictions, labels=ids, average="macro", zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(references, predictions)),
        "precision_macro": float(macro[0]),
        "recall_macro": float(macro[1]),
        "f1_macro": float(macro[2]),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(labels)
        },
        "confusion_matrix": confusion_matrix(references, predictions, labels=ids).tolist(),
        "num_examples": len(references),
    }


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Only the numeric top-level entries (what Ray Train/Tune can report and compare)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


def format_classification_report(metrics: dict[str, Any]) -> str:
    lines = [
        f"accuracy {metrics['accuracy']:.4f}   macro P {metrics['precision_macro']:.4f}  "
        f"R {metrics['recall_macro']:.4f}  F1 {metrics['f1_macro']:.4f}   "
        f"({metrics['num_examples']} examples)",
        f"{'class':<16}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}",
    ]
    for name, row in metrics["per_class"].items():
        lines.append(
            f"{name:<16}{row['precision']:>10.4f}{row['recall']:>10.4f}{row['f1']:>10.4f}"
            f"{row['support']:>10d}"
        )
    names = list(metrics["per_class"])
    lines.append("confusion matrix (rows = true, columns = predicted): " + ", ".join(names))
    lines.extend("  " + " ".join(f"{v:>6d}" for v in row) for row in metrics["confusion_matrix"])
    return "\n".join(lines)


def format_metrics(metrics: dict[str, Any]) -> str:
    """A readable block of any task's metrics (classification gets its full report)."""
    if "per_class" in metrics:
        return format_classification_report(metrics)
    lines = ["  ".join(f"{k} {v:.4f}" for k, v in scalar_metrics(metrics).items())]
    for name, row in (metrics.get("per_type") or {}).items():
        lines.append(
            f"  {name:<10} P {row['precision']:.4f}  R {row['recall']:.4f}  F1 {row['f1']:.4f}  "
            f"support {row['support']}"
        )
    return "\n".join(lines)


def evaluate_model(model_dir: str | Path, data: str, batch_size: int = 32) -> dict[str, Any]:
    """Score a trained model folder on a data file with its task's metrics (in-process).

    The file is read with the columns recorded at training time (``raynlp.json``); the result,
    with every prediction, is also written to ``evaluation.json`` beside the model.
    """
    from raynlp.data.readers import read_rows
    from raynlp.inference import ModelRunner

    runner = ModelRunner(model_dir)
    rows = read_rows(data)
    metrics, predictions = runner.score(rows, batch_size)
    result = {
        "model_dir": str(runner.model_dir),
        "data": data,
        "task": runner.meta["task"],
        "metrics": metrics,
        "predictions": predictions,
    }
    (runner.model_dir / "evaluation.json").write_text(json.dumps(result, indent=2))
    return result
