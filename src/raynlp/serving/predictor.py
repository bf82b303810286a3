"""A predictor over an exported ONNX model folder: tokenizer + ONNX Runtime + task post-processing.

It does not import Ray, so it can be unit-tested, used in batch inference, and wrapped by the
Serve deployment.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from raynlp.tasks import get_task
from raynlp.tasks.base import InputSpec
from raynlp.training.checkpoints import read_model_meta


def find_onnx_file(model_dir: Path) -> Path:
    """The single ``*.onnx`` file of an Optimum export folder (fp32 or quantized)."""
    files = sorted(Path(model_dir).glob("*.onnx"))
    if len(files) != 1:
        raise FileNotFoundError(
            f"expected exactly one .onnx file in {model_dir}, found {[f.name for f in files]}"
        )
    return files[0]


def make_session(onnx_file: Path, intra_op_threads: int = 1) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])


class OnnxPredictor:
    """Load once, then ``predict(texts)`` → one JSON-ready answer per text."""

    def __init__(self, model_dir: str | Path, intra_op_threads: int = 1):
        from transformers import AutoTokenizer

        self.model_dir = Path(model_dir)
        self.meta = read_model_meta(self.model_dir)
        self.task = get_task(self.meta["task"])
        self.labels = self.meta.get("labels")
        self.spec = InputSpec.from_meta(self.meta)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
        self.session = make_session(find_onnx_file(self.model_dir), intra_op_threads)
        self.input_names = [item.name for item in self.session.get_inputs()]

    def logits(self, features: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: features[name] for name in self.input_names}
        return self.session.run(None, feed)[0]

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        features = self.task.encode_texts(texts, self.tokenizer, self.spec)
        answers = self.task.predict_texts(self.logits(features), self.labels)
        lengths = features["attention_mask"].sum(axis=1)
        for answer, length in zip(answers, lengths, strict=True):
            # A full window may mean the text was cut to max_length tokens.
            answer["truncated"] = bool(length >= self.spec.max_length)
        return answers

    def warmup(self) -> float:
        """Run one inference so the first real request does not pay for session set-up."""
        started = time.perf_counter()
        self.predict(["warm-up"])
        return time.perf_counter() - started
