"""Named-entity recognition: word-level IOB2 tags, optional CRF, seqeval entity metrics.

Rows are ``{"tokens": [...], "ner_tags": [...]}`` (CoNLL columns or JSON lines). Each word's tag
is learned on its first word piece (the others get -100 and are ignored) unless
``ner.label_all_subtokens``; predictions are read back at the first piece of every word.
Serving splits raw text into words (punctuation apart, as in CoNLL) and returns entities with
character offsets into the request text.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from raynlp.metrics import entity_metrics, extract_entities
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
from raynlp.tasks.crf import CRF_FILE, CRFTokenClassifier, OnnxCRFTagger

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from raynlp.config import JobConfig
    from raynlp.tasks.base import Features, Row

IGNORE = -100
WORD_PATTERN = re.compile(r"\w+(?:[-'’.]\w+)*|[^\w\s]", re.UNICODE)
"""Words for raw text: runs of word characters (keeping inner hyphens/apostrophes, e.g.
``U.S``), every other non-space character on its own — CoNLL-style tokenization."""


def split_words(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Words of a raw text and their (start, end) character spans."""
    matches = list(WORD_PATTERN.finditer(text))
    return [m.group() for m in matches], [m.span() for m in matches]


def joined_spans(tokens: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """The text ``" ".join(tokens)`` and each token's span in it (rows without a source text)."""
    spans, position = [], 0
    for token in tokens:
        spans.append((position, position + len(token)))
        position += len(token) + 1
    return " ".join(tokens), spans


class TokenClassification(EncoderTask):
    name = "ner"
    description = "Named-entity recognition, IOB2 tags, optional CRF (seqeval entity F1)"
    onnx_task = "token-classification"
    best_metric = "f1"
    metric_names = ("f1", "precision", "recall", "accuracy")
    ort_model_class = "ORTModelForTokenClassification"
    default_columns = {
        "text_column": "tokens",
        "text_pair_column": None,
        "label_column": "ner_tags",
    }
    token_columns = (*ENCODER_INPUTS, "labels", "word_starts")

    def options(self, config: JobConfig) -> dict[str, Any]:
        return config.ner.model_dump()

    def label_names(self, config: JobConfig, rows: list[Row]) -> list[str]:
        if config.data.label_names:
            return list(config.data.label_names)
        column = InputSpec.from_config(config).label_column
        check_columns(rows, [column])
        tags = {str(tag) for row in rows for tag in row[column]}
        return ["O", *sorted(tags - {"O"}, key=lambda t: (t[2:], t))]

    def build_model(self, model_path: str, labels: list[str] | None, spec: InputSpec) -> Any:
        from transformers import AutoModelForTokenClassification

        assert labels is not None
        encoder = AutoModelForTokenClassification.from_pretrained(
            model_path,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
        )
        return CRFTokenClassifier(encoder, len(labels)) if spec.options.get("crf") else encoder

    def load_trained(self, model_dir: str) -> Any:
        from pathlib import Path

        from transformers import AutoModelForTokenClassification

        if (Path(model_dir) / CRF_FILE).is_file():
            return CRFTokenClassifier.from_pretrained(model_dir).eval()
        return AutoModelForTokenClassification.from_pretrained(model_dir).eval()

    def load_onnx(self, onnx_dir: str, session_options: Any, provider: str) -> Any:
        from pathlib import Path

        model = super().load_onnx(onnx_dir, session_options, provider)
        return OnnxCRFTagger(model, onnx_dir) if (Path(onnx_dir) / CRF_FILE).is_file() else model

    def encode(
        self,
        rows: list[Row],
        tokenizer: PreTrainedTokenizerBase,
        spec: InputSpec,
        labels: list[str] | None,
        targets: bool = True,
        padding: str = "max_length",
    ) -> Features:
        check_columns(rows, [spec.text_column, *([spec.label_column] if targets else [])])
        words = [[str(w) for w in row[spec.text_column]] for row in rows]
        encoded = tokenizer(
            words,
            is_split_into_words=True,
            truncation=True,
            max_length=spec.max_length,
            padding=padding,
        )
        features = {
            key: np.asarray(encoded[key], dtype=np.int64)
            for key in ENCODER_INPUTS
            if key in encoded
        }
        width = features["input_ids"].shape[1]
        starts = np.zeros((len(rows), width), dtype=np.int64)
        tag_ids = np.full((len(rows), width), IGNORE, dtype=np.int64)
        lookup = {name: i for i, name in enumerate(labels or [])}
        all_pieces = bool(spec.options.get("label_all_subtokens"))
        for i, row in enumerate(rows):
            tags = row[spec.label_column] if targets else None
            if tags is not None and len(tags) != len(words[i]):
                raise ValueError(
                    f"row {i}: {len(words[i])} tokens but {len(tags)} tags in {spec.label_column!r}"
                )
            previous = None
            for position, word in enumerate(encoded.word_ids(i)):
                if word is None:
                    continue
                first = word != previous
                previous = word
                starts[i, position] = int(first)
                if tags is not None and (first or all_pieces):
                    tag = str(tags[word])
                    if tag not in lookup:
                        raise ValueError(f"row {i}: tag {tag!r} is not one of {labels}")
                    tag_ids[i, position] = lookup[tag]
        features["word_starts"] = starts
        features["example_index"] = np.arange(len(rows), dtype=np.int64)
        if targets:
            features["labels"] = tag_ids
        return features

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        extra = (
            ("labels", "word_starts")
            if isinstance(unwrap(model), CRFTokenClassifier)
            else ("labels",)
        )
        output = model(**model_inputs(batch, extra))
        return output["loss"]

    def infer(self, model: Any, batch: dict[str, torch.Tensor], spec: InputSpec) -> Features:
        module = unwrap(model)
        crf = isinstance(module, (CRFTokenClassifier, OnnxCRFTagger))
        output = module(**model_inputs(batch, ("word_starts",) if crf else ()))
        result = {
            "logits": to_numpy(output["logits"]),
            "word_starts": to_numpy(batch["word_starts"]),
            "example_index": to_numpy(batch["example_index"]),
        }
        if crf:
            result["crf_tags"] = to_numpy(output["crf_tags"])
        return result

    def predictions(
        self,
        outputs: Features,
        rows: list[Row],
        spec: InputSpec,
        labels: list[str] | None,
        tokenizer: Any = None,
    ) -> list[dict[str, Any]]:
        assert labels is not None
        by_example = {int(e): i for i, e in enumerate(outputs["example_index"])}
        answers = []
        for index, row in enumerate(rows):
            i = by_example[index]
            tokens = [str(w) for w in row[spec.text_column]]
            positions = np.flatnonzero(outputs["word_starts"][i] == 1)
            probabilities = softmax(outputs["logits"][i][positions].astype(np.float64))
            if "crf_tags" in outputs:
                ids = [int(t) for t in outputs["crf_tags"][i][: len(positions)]]
            else:
                ids = [int(p.argmax()) for p in probabilities]
            confidence = [float(probabilities[k, t]) for k, t in enumerate(ids)]
            kept = len(ids)
            tags = [labels[t] for t in ids] + ["O"] * (len(tokens) - kept)
            confidence += [1.0] * (len(tokens) - kept)
            text, spans = row.get("_text"), row.get("_spans")
            if text is None or spans is None:
                text, spans = joined_spans(tokens)
            entities = [
                {
                    "text": text[spans[start][0] : spans[end - 1][1]],
                    "type": kind,
                    "start": spans[start][0],
                    "end": spans[end - 1][1],
                    "score": float(np.mean(confidence[start:end])),
                }
                for kind, start, end in extract_entities(tags)
            ]
            answers.append({"entities": entities, "tags": tags, "truncated": kept < len(tokens)})
        return answers

    def compute_metrics(
        self,
        predictions: list[dict[str, Any]],
        rows: list[Row],
        spec: InputSpec,
        labels: list[str] | None,
    ) -> dict[str, Any]:
        gold = [[str(t) for t in row[spec.label_column]] for row in rows]
        return entity_metrics(gold, [p["tags"] for p in predictions])

    def agreement(self, a: list[dict[str, Any]], b: list[dict[str, Any]]) -> float:
        return float(np.mean([x["tags"] == y["tags"] for x, y in zip(a, b, strict=True)]))

    def request_rows(self, items: list[dict[str, Any]], spec: InputSpec) -> list[Row]:
        rows = []
        for item in items:
            words, spans = split_words(item["text"])
            rows.append({spec.text_column: words, "_text": item["text"], "_spans": spans})
        return rows
