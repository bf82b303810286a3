"""A predictor over an exported model folder: tokenizer + ONNX Runtime + the task's decoding.

It does not import Ray, so it can be unit-tested, used in batch inference, and wrapped by the
Serve deployment. Requests are items of the task's request kind (``{"text"}``, ``{"text",
"text_pair"}`` or ``{"question", "context"}``); a bare string means ``{"text": string}``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from raynlp.inference import ModelRunner, example_lengths

WARMUP_ITEMS = {
    "text": {"text": "warm-up"},
    "pair": {"text": "warm-up", "text_pair": "warm-up"},
    "qa": {"question": "warm-up?", "context": "warm-up"},
}


class OnnxPredictor:
    """Load once, then ``predict(items)`` → one JSON-ready answer per item, in order."""

    def __init__(self, model_dir: str | Path, intra_op_threads: int = 1):
        self.runner = ModelRunner(model_dir, intra_op_threads)
        self.model_dir = self.runner.model_dir
        self.meta = self.runner.meta
        self.task = self.runner.task
        self.labels = self.runner.labels
        self.spec = self.runner.spec
        self.model = self.runner.model

    @property
    def request_kind(self) -> str:
        return self.task.request_kind

    def predict(self, items: list[dict[str, str] | str]) -> list[dict[str, Any]]:
        items = [{"text": item} if isinstance(item, str) else item for item in items]
        rows = self.task.request_rows(items, self.spec)
        features = self.runner.encode(rows, targets=False, padding="longest")
        answers = self.runner.predict_rows(rows, batch_size=len(rows), features=features)
        # Tasks that know better (NER: untagged words; QA: windows, nothing cut) set the flag;
        # otherwise a full token window means the input may have been cut to max_length.
        full = example_lengths(features) >= self.spec.max_length
        unset = [i for i, answer in enumerate(answers) if "truncated" not in answer]
        for i in unset:
            answers[i]["truncated"] = False
        for index, is_full in zip(features["example_index"], full, strict=True):
            if int(index) in unset and is_full:
                answers[int(index)]["truncated"] = True
        return answers

    def warmup(self) -> float:
        """Run one inference so the first real request does not pay for session set-up."""
        started = time.perf_counter()
        self.predict([WARMUP_ITEMS[self.request_kind]])
        return time.perf_counter() - started
