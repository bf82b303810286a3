"""Extractive question answering, SQuAD-style: the answer is a span of the context.

Question and context are encoded together; a context longer than the window is cut into
overlapping windows (``qa.doc_stride`` tokens of overlap), each its own feature carrying the
example it came from and the character offsets of its context tokens (-1 elsewhere). Training
targets are the answer's first/last token in a window (the [CLS] position when the window does
not contain the whole answer). Decoding takes the ``qa.n_best`` best starts and ends of every
window, keeps valid spans (inside the context, end ≥ start, at most ``qa.max_answer_length``
tokens), and maps the best one back to characters of the context.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from raynlp.metrics import squad_metrics
from raynlp.tasks.base import (
    ENCODER_INPUTS,
    InputSpec,
    check_columns,
    model_inputs,
    softmax,
    to_numpy,
    unwrap,
)
from raynlp.tasks.classification import EncoderTask

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from raynlp.config import JobConfig
    from raynlp.tasks.base import Features, Row


def gold_answers(row: Row, column: str) -> list[str]:
    answers = row[column]
    if isinstance(answers, dict):
        return [str(t) for t in answers.get("text", [])]
    if isinstance(answers, list):
        return [str(a["text"]) if isinstance(a, dict) else str(a) for a in answers]
    return [str(answers)]


def first_answer(row: Row, column: str) -> tuple[str, int] | None:
    """(text, character start) of the first gold answer, or None when there is none."""
    answers = row[column]
    if isinstance(answers, dict) and answers.get("text"):
        return str(answers["text"][0]), int(answers["answer_start"][0])
    if isinstance(answers, list) and answers and isinstance(answers[0], dict):
        return str(answers[0]["text"]), int(answers[0]["answer_start"])
    return None


class QuestionAnswering(EncoderTask):
    name = "qa"
    description = "Extractive question answering, SQuAD spans with doc-stride windows (EM, F1)"
    onnx_task = "question-answering"
    best_metric = "f1"
    metric_names = ("f1", "exact_match")
    ort_model_class = "ORTModelForQuestionAnswering"
    default_columns = {
        "text_column": "question",
        "text_pair_column": "context",
        "label_column": "answers",
    }
    token_columns = (*ENCODER_INPUTS, "offsets")
    request_kind = "qa"

    def options(self, config: JobConfig) -> dict[str, Any]:
        return config.qa.model_dump()

    def label_names(self, config: JobConfig, rows: list[Row]) -> None:
        return None

    def build_model(self, model_path: str, labels: list[str] | None, spec: InputSpec) -> Any:
        from transformers import AutoModelForQuestionAnswering

        return AutoModelForQuestionAnswering.from_pretrained(model_path)

    def load_trained(self, model_dir: str) -> Any:
        from transformers import AutoModelForQuestionAnswering

        return AutoModelForQuestionAnswering.from_pretrained(model_dir).eval()

    def encode(
        self,
        rows: list[Row],
        tokenizer: PreTrainedTokenizerBase,
        spec: InputSpec,
        labels: list[str] | None,
        targets: bool = True,
        padding: str = "max_length",
    ) -> Features:
        assert spec.text_pair_column
        check_columns(rows, [*spec.input_columns(), *([spec.label_column] if targets else [])])
        stride = min(int(spec.options.get("doc_stride", 128)), spec.max_length // 2)
        encoded = tokenizer(
            [str(row[spec.text_column]).lstrip() for row in rows],
            [str(row[spec.text_pair_column]) for row in rows],
            truncation="only_second",
            max_length=spec.max_length,
            stride=stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding=padding,
        )
        features = {
            key: np.asarray(encoded[key], dtype=np.int64)
            for key in ENCODER_INPUTS
            if key in encoded
        }
        example_index = np.asarray(encoded["overflow_to_sample_mapping"], dtype=np.int64)
        offsets = np.full((*features["input_ids"].shape, 2), -1, dtype=np.int64)
        starts = np.zeros(len(example_index), dtype=np.int64)
        ends = np.zeros(len(example_index), dtype=np.int64)
        for i, example in enumerate(example_index):
            context = [s == 1 for s in encoded.sequence_ids(i)]
            window = np.asarray(encoded["offset_mapping"][i], dtype=np.int64)
            offsets[i][np.asarray(context, dtype=bool)] = window[np.asarray(context, dtype=bool)]
            answer = first_answer(rows[example], spec.label_column) if targets else None
            if answer is not None:
                starts[i], ends[i] = self._answer_tokens(offsets[i], answer)
        features["offsets"] = offsets
        features["example_index"] = example_index
        if targets:
            features["start_positions"], features["end_positions"] = starts, ends
        return features

    @staticmethod
    def _answer_tokens(offsets: np.ndarray, answer: tuple[str, int]) -> tuple[int, int]:
        """First/last token of the answer in this window; (0, 0) when not wholly inside it."""
        text, start_char = answer
        end_char = start_char + len(text)
        inside = np.flatnonzero(offsets[:, 0] >= 0)
        if len(inside) == 0:
            return 0, 0
        first, last = inside[0], inside[-1]
        if offsets[first, 0] > start_char or offsets[last, 1] < end_char:
            return 0, 0
        start = first
        while start <= last and offsets[start, 1] <= start_char:
            start += 1
        end = last
        while end >= first and offsets[end, 0] >= end_char:
            end -= 1
        return (int(start), int(end)) if start <= end else (0, 0)

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**model_inputs(batch, ("start_positions", "end_positions"))).loss

    def infer(self, model: Any, batch: dict[str, torch.Tensor], spec: InputSpec) -> Features:
        output = unwrap(model)(**model_inputs(batch))
        return {
            "start_logits": to_numpy(output.start_logits),
            "end_logits": to_numpy(output.end_logits),
            "offsets": to_numpy(batch["offsets"]),
            "example_index": to_numpy(batch["example_index"]),
        }

    def predictions(
        self,
        outputs: Features,
        rows: list[Row],
        spec: InputSpec,
        labels: list[str] | None,
        tokenizer: Any = None,
    ) -> list[dict[str, Any]]:
        n_best = int(spec.options.get("n_best", 20))
        max_tokens = int(spec.options.get("max_answer_length", 30))
        best: dict[int, tuple[float, int, int, float]] = {}
        for i, example in enumerate(outputs["example_index"]):
            offsets = outputs["offsets"][i]
            width = min(len(offsets), outputs["start_logits"].shape[1])
            valid = offsets[:width, 0] >= 0
            start_logits = outputs["start_logits"][i, :width].astype(np.float64)
            end_logits = outputs["end_logits"][i, :width].astype(np.float64)
            start_p, end_p = softmax(start_logits), softmax(end_logits)
            masked_start = np.where(valid, start_logits, -np.inf)
            masked_end = np.where(valid, end_logits, -np.inf)
            for s in np.argsort(-masked_start)[:n_best]:
                if not valid[s]:
                    break
                for e in np.argsort(-masked_end)[:n_best]:
                    if not valid[e]:
                        break
                    if e < s or e - s + 1 > max_tokens:
                        continue
                    score = float(start_logits[s] + end_logits[e])
                    if int(example) not in best or score > best[int(example)][0]:
                        best[int(example)] = (
                            score,
                            int(offsets[s, 0]),
                            int(offsets[e, 1]),
                            float(start_p[s] * end_p[e]),
                        )
        answers = []
        for index, row in enumerate(rows):
            context = str(row[spec.text_pair_column])
            if index not in best:
                answers.append(
                    {"answer": "", "start": 0, "end": 0, "score": 0.0, "truncated": False}
                )
                continue
            _, start, end, probability = best[index]
            answers.append(  # windows cover the whole context: nothing is cut
                {
                    "answer": context[start:end],
                    "start": start,
                    "end": end,
                    "score": probability,
                    "truncated": False,
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
        return squad_metrics(
            [p["answer"] for p in predictions], [gold_answers(r, spec.label_column) for r in rows]
        )

    def agreement(self, a: list[dict[str, Any]], b: list[dict[str, Any]]) -> float:
        return float(
            np.mean(
                [
                    (x["start"], x["end"]) == (y["start"], y["end"])
                    for x, y in zip(a, b, strict=True)
                ]
            )
        )

    def request_rows(self, items: list[dict[str, Any]], spec: InputSpec) -> list[Row]:
        assert spec.text_pair_column
        return [
            {spec.text_column: item["question"], spec.text_pair_column: item["context"]}
            for item in items
        ]
