"""Abstractive summarization with a sequence-to-sequence model, scored with ROUGE.

Two kinds of base model:

* an encoder-decoder checkpoint (T5, BART, ...: ``config.is_encoder_decoder``) is fine-tuned as
  it is (``AutoModelForSeq2SeqLM``; give T5 its ``summarization.source_prefix: "summarize: "``);
* an encoder-only checkpoint (BERT family, e.g. the packaged MiniLM) is warm-started into a
  BERT2BERT ``EncoderDecoderModel``: encoder and decoder both start from it, the decoder's
  cross-attention starts fresh. This is the offline path: no pre-trained seq2seq weights needed.

Training is teacher-forced (labels = summary tokens + end token, padding ignored); evaluation
generates with beam search under the ``summarization`` length limits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from raynlp.metrics import rouge_metrics
from raynlp.tasks.base import InputSpec, check_columns, to_numpy, unwrap

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from raynlp.config import JobConfig
    from raynlp.tasks.base import Features, Row

IGNORE = -100
SEQ2SEQ_INPUTS = ("input_ids", "attention_mask")


def end_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    token = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if token is None:
        raise ValueError("the tokenizer has neither an EOS nor a SEP token to end summaries with")
    return int(token)


def _is_zero3(module: torch.nn.Module) -> bool:
    return any(hasattr(p, "ds_id") for p in module.parameters())


def sentences_per_line(text: str) -> str:
    """One sentence per line, as ROUGE-Lsum expects."""
    from raynlp.metrics import lead_sentences

    lines, rest = [], text.strip()
    while rest:
        first = lead_sentences(rest, 1)
        lines.append(first)
        rest = rest[len(first) :].strip() if rest.startswith(first) else ""
    return "\n".join(lines)


class Summarization:
    name = "summarization"
    description = "Abstractive summarization, seq2seq (T5 or MiniLM BERT2BERT), beam search (ROUGE)"
    onnx_task = "text2text-generation"
    best_metric = "rougeL"
    metric_names = ("rougeL", "rouge1", "rouge2", "rougeLsum", "gen_len_words")
    ort_model_class = "ORTModelForSeq2SeqLM"
    default_columns = {
        "text_column": "document",
        "text_pair_column": None,
        "label_column": "summary",
    }
    token_columns = SEQ2SEQ_INPUTS
    request_kind = "text"
    export_rows = 48
    gate_on_agreement = False
    """The export gate holds the metric only (answers are never bit-identical across runtimes)."""
    """Rows of the export parity check (each is a beam search per variant)."""
    latency_rows = 8

    def options(self, config: JobConfig) -> dict[str, Any]:
        return config.summarization.model_dump()

    def label_names(self, config: JobConfig, rows: list[Row]) -> None:
        return None

    def build_model(self, model_path: str, labels: list[str] | None, spec: InputSpec) -> Any:
        from transformers import (
            AutoConfig,
            AutoModelForSeq2SeqLM,
            AutoTokenizer,
            EncoderDecoderModel,
        )

        if AutoConfig.from_pretrained(model_path).is_encoder_decoder:
            return AutoModelForSeq2SeqLM.from_pretrained(model_path)
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = EncoderDecoderModel.from_encoder_decoder_pretrained(model_path, model_path)
        start = (
            tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        )
        model.config.decoder_start_token_id = start
        model.config.pad_token_id = tokenizer.pad_token_id
        model.config.eos_token_id = end_token_id(tokenizer)
        model.config.vocab_size = model.config.decoder.vocab_size
        for key in ("decoder_start_token_id", "pad_token_id", "eos_token_id"):
            setattr(model.generation_config, key, getattr(model.config, key))
        return model

    def load_trained(self, model_dir: str) -> Any:
        from transformers import AutoModelForSeq2SeqLM

        return AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()

    def load_onnx(self, onnx_dir: str, session_options: Any, provider: str) -> Any:
        from optimum.onnxruntime import ORTModelForSeq2SeqLM

        from raynlp.export.files import onnx_file_names

        files = onnx_file_names(onnx_dir)
        return ORTModelForSeq2SeqLM.from_pretrained(
            onnx_dir,
            encoder_file_name=files["encoder"],
            decoder_file_name=files["decoder"],
            decoder_with_past_file_name=files.get("decoder_with_past"),
            use_cache="decoder_with_past" in files,
            use_merged=False,
            session_options=session_options,
            provider=provider,
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
        check_columns(rows, [spec.text_column, *([spec.label_column] if targets else [])])
        prefix = str(spec.options.get("source_prefix", ""))
        encoded = tokenizer(
            [prefix + str(row[spec.text_column]) for row in rows],
            truncation=True,
            max_length=spec.max_length,
            padding=padding,
            return_token_type_ids=False,
            return_tensors="np",
        )
        features = {key: np.asarray(encoded[key], dtype=np.int64) for key in SEQ2SEQ_INPUTS}
        features["example_index"] = np.arange(len(rows), dtype=np.int64)
        if targets:
            features["labels"] = self._targets(rows, tokenizer, spec, padding)
        return features

    def _targets(
        self, rows: list[Row], tokenizer: PreTrainedTokenizerBase, spec: InputSpec, padding: str
    ) -> np.ndarray:
        limit = int(spec.options.get("max_target_length", 64))
        pieces = tokenizer(
            [str(row[spec.label_column]) for row in rows],
            add_special_tokens=False,
            truncation=True,
            max_length=limit - 1,
        )["input_ids"]
        sequences = [[*ids, end_token_id(tokenizer)] for ids in pieces]
        width = limit if padding == "max_length" else max(len(s) for s in sequences)
        labels = np.full((len(rows), width), IGNORE, dtype=np.int64)
        for i, ids in enumerate(sequences):
            labels[i, : len(ids)] = ids
        return labels

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**{k: batch[k] for k in (*SEQ2SEQ_INPUTS, "labels")}).loss

    def generation_kwargs(self, spec: InputSpec) -> dict[str, Any]:
        options = spec.options
        beams = int(options.get("num_beams", 4))
        return {
            "num_beams": beams,
            "max_new_tokens": int(options.get("max_new_tokens", 48)),
            "min_new_tokens": int(options.get("min_new_tokens", 0)),
            "no_repeat_ngram_size": int(options.get("no_repeat_ngram_size", 3)),
            "length_penalty": float(options.get("length_penalty", 1.0)),
            "early_stopping": beams > 1,
        }

    def infer(self, model: Any, batch: dict[str, torch.Tensor], spec: InputSpec) -> Features:
        module = unwrap(model)
        kwargs = self.generation_kwargs(spec)
        if isinstance(module, torch.nn.Module) and _is_zero3(module):
            # ZeRO-3 gathers weights collectively: ranks keep stepping until all are done.
            kwargs["synced_gpus"] = torch.distributed.get_world_size() > 1
        generated = module.generate(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs
        )
        return {"generated": to_numpy(generated), "example_index": to_numpy(batch["example_index"])}

    def predictions(
        self,
        outputs: Features,
        rows: list[Row],
        spec: InputSpec,
        labels: list[str] | None,
        tokenizer: Any = None,
    ) -> list[dict[str, Any]]:
        if tokenizer is None:
            raise ValueError("summarization predictions need the tokenizer to decode")
        by_example = {int(e): i for i, e in enumerate(outputs["example_index"])}
        answers = []
        for index in range(len(rows)):
            ids = outputs["generated"][by_example[index]]
            ids = [int(t) for t in ids if t >= 0]
            text = tokenizer.decode(
                ids, skip_special_tokens=True, clean_up_tokenization_spaces=True
            )
            answers.append({"summary": text.strip()})
        return answers

    def compute_metrics(
        self,
        predictions: list[dict[str, Any]],
        rows: list[Row],
        spec: InputSpec,
        labels: list[str] | None,
    ) -> dict[str, Any]:
        return rouge_metrics(
            [sentences_per_line(p["summary"]) for p in predictions],
            [sentences_per_line(str(r[spec.label_column])) for r in rows],
        )

    def agreement(self, a: list[dict[str, Any]], b: list[dict[str, Any]]) -> float:
        return float(np.mean([x["summary"] == y["summary"] for x, y in zip(a, b, strict=True)]))

    def request_rows(self, items: list[dict[str, Any]], spec: InputSpec) -> list[Row]:
        return [{spec.text_column: item["text"]} for item in items]
