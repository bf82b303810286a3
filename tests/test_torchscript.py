"""The traced TorchScript variant: every encoder task exports, and through the real task path
(encode → infer → predictions) answers like eager PyTorch; the trace is shape-generic;
summarization is refused with a reason. No Ray."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import untrained_model_dir

from raynlp.data.readers import read_rows
from raynlp.export.torchscript import (
    TORCHSCRIPT_FILE,
    VariantNotApplicable,
    export_torchscript,
    is_torchscript_dir,
    load_torchscript,
)
from raynlp.inference import ModelRunner, infer
from raynlp.tasks import get_task
from raynlp.tasks.crf import CRFTokenClassifier
from raynlp.training.checkpoints import read_model_meta

CASES = {
    # case → (task, sample rows, untrained_model_dir overrides)
    "classification": ("classification", "sample://sst2_validation.tsv", {}),
    "similarity": ("similarity", "sample://stsb_validation.tsv", {}),
    "ner_crf": ("ner", "sample://ner_validation.conll", {"ner": {"crf": True}}),
    "ner_plain": ("ner", "sample://ner_validation.conll", {"ner": {"crf": False}}),
    "qa": ("qa", "sample://squad_validation.json", {}),
}
ROWS = {"qa": 3}
"""Rows per case (default 6): a SQuAD row is several 128-token windows."""


def build_model_dir(case: str, base: Path, target: Path) -> Path:
    task, _, overrides = CASES[case]
    return untrained_model_dir(task, base, target, **overrides)


def assert_outputs_match(eager: dict[str, np.ndarray], traced: dict[str, np.ndarray]) -> None:
    assert set(traced) == set(eager)
    for key, want in eager.items():
        have = traced[key]
        assert have.shape == want.shape, key
        if np.issubdtype(want.dtype, np.floating):
            np.testing.assert_allclose(have, want, atol=1e-4, rtol=0, err_msg=key)
        else:
            np.testing.assert_array_equal(have, want, err_msg=key)


def assert_same_answers(got: Any, want: Any, path: str = "answers") -> None:
    """Equal answers: labels, tags, spans and texts exactly; scores up to float rounding (the
    traced graph may sum in another order, e.g. a similarity score -0.0087175779 vs ...788)."""
    if isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6), path
    elif isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), path
        for key in want:
            assert_same_answers(got[key], want[key], f"{path}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), path
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            assert_same_answers(a, b, f"{path}[{i}]")
    else:
        assert got == want, path


def random_inputs(batch: int, length: int, vocab: int, pairs: bool) -> dict[str, torch.Tensor]:
    """Random ids, [CLS] … [SEP]-free; rows after the first padded at the end."""
    generator = torch.Generator().manual_seed(batch * 100 + length)
    ids = torch.randint(1000, vocab, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    for row in range(1, batch):
        mask[row, length - 7 * row :] = 0
    segments = torch.zeros(batch, length, dtype=torch.long)
    if pairs:
        segments[:, length // 2 :] = 1
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": segments * mask}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", list(CASES))
def test_torchscript_answers_like_pytorch(case: str, tmp_path: Path, tiny_base_model: Path):
    """Raw outputs within 1e-4 and the same predictions, through the task's own
    encode → infer → predictions, batch by batch with per-batch padding trims."""
    task_name, sample, _ = CASES[case]
    model_dir = build_model_dir(case, tiny_base_model, tmp_path / "model")
    ts_dir = export_torchscript(model_dir, tmp_path / "torchscript")
    assert is_torchscript_dir(ts_dir) and not is_torchscript_dir(model_dir)
    assert (ts_dir / TORCHSCRIPT_FILE).is_file()
    assert {p.name for p in ts_dir.glob("*.safetensors")} <= {"crf.safetensors"}  # no weights
    assert read_model_meta(ts_dir) == read_model_meta(model_dir)

    runner = ModelRunner(model_dir)  # eager PyTorch
    task = get_task(task_name)
    traced = load_torchscript(ts_dir, threads=0)
    assert isinstance(runner.model, CRFTokenClassifier) == (case == "ner_crf")
    rows = read_rows(sample)[: ROWS.get(case, 6)]
    for padding in ("longest", "max_length"):
        features = runner.encode(rows, targets=False, padding=padding)
        eager_out = infer(task, runner.model, features, runner.spec, batch_size=4)
        traced_out = infer(task, traced, features, runner.spec, batch_size=4)
        if case == "ner_crf":
            assert "crf_tags" in traced_out
        assert_outputs_match(eager_out, traced_out)
        answers = task.predictions(traced_out, rows, runner.spec, runner.labels, runner.tokenizer)
        expected = task.predictions(eager_out, rows, runner.spec, runner.labels, runner.tokenizer)
        assert_same_answers(answers, expected)
        assert task.agreement(answers, expected) == 1.0

    # The same through ModelRunner (load_model recognises the TorchScript folder).
    assert_same_answers(
        ModelRunner(ts_dir, threads=0).predict_rows(rows), runner.predict_rows(rows)
    )


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", ["similarity", "ner_crf", "qa"])
def test_trace_is_shape_generic(case: str, tmp_path: Path, tiny_base_model: Path):
    """Batch 1 × 7 and batch 3 × 40 tokens (the trace used 2 × 16) give eager's outputs."""
    model_dir = build_model_dir(case, tiny_base_model, tmp_path / "model")
    ts_dir = export_torchscript(model_dir, tmp_path / "torchscript")
    eager = get_task(CASES[case][0]).load_trained(str(model_dir))
    traced = load_torchscript(ts_dir, threads=0)
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    for batch, length in ((1, 7), (3, 40)):
        inputs = random_inputs(batch, length, vocab, pairs=case != "ner_crf")
        if case == "ner_crf":
            inputs["word_starts"] = (torch.arange(length) % 2 == 1).long().expand(batch, -1)
            inputs["word_starts"] = inputs["word_starts"] * inputs["attention_mask"]
        with torch.inference_mode():
            want, have = eager(**inputs), traced(**inputs)
        names = ("start_logits", "end_logits") if case == "qa" else ("logits",)
        for name in names:
            assert have[name].shape == want[name].shape
            assert want[name].shape[:2] == ((batch, 1) if case == "similarity" else (batch, length))
            torch.testing.assert_close(have[name], want[name], atol=1e-4, rtol=0)
        if case == "ner_crf":
            assert torch.equal(have["crf_tags"], want["crf_tags"])
    if case == "qa":  # attribute access, as QuestionAnswering.infer reads it
        assert traced(**inputs).start_logits.shape == (3, 40)


def test_shape_check_rejects_a_trace_with_baked_sizes(
    tmp_path: Path, tiny_base_model: Path, monkeypatch: pytest.MonkeyPatch
):
    """A network that turns a size into a Python int traces a constant: the export's own
    check at other shapes catches it, and no half-written folder is left."""
    import raynlp.export.torchscript as ts

    def baked(self, *tensors):
        width = int(tensors[0].shape[1])  # a constant in the trace
        result = self.network(**dict(zip(self.inputs, tensors, strict=True)), return_dict=True)
        return tuple(result[name][:, :width] * (width / 16) for name in self.outputs)

    monkeypatch.setattr(ts._TupleOutputs, "forward", baked)
    model_dir = build_model_dir("ner_plain", tiny_base_model, tmp_path / "model")
    with pytest.raises(VariantNotApplicable, match="not shape-generic"):
        export_torchscript(model_dir, tmp_path / "torchscript")
    assert not (tmp_path / "torchscript").exists()


def test_summarization_is_not_applicable(tmp_path: Path, tiny_base_model: Path):
    model_dir = untrained_model_dir("summarization", tiny_base_model, tmp_path / "model")
    with pytest.raises(VariantNotApplicable, match="beam search") as error:
        export_torchscript(model_dir, tmp_path / "torchscript")
    assert isinstance(error.value, ValueError)
    assert not (tmp_path / "torchscript").exists()


def test_threads_and_missing_file(tmp_path: Path, tiny_base_model: Path):
    """``threads`` > 0 sets torch's (process-wide) thread count, 0 leaves it alone."""
    model_dir = untrained_model_dir("classification", tiny_base_model, tmp_path / "model")
    with pytest.raises(FileNotFoundError, match=TORCHSCRIPT_FILE):
        load_torchscript(model_dir)
    ts_dir = export_torchscript(model_dir, tmp_path / "torchscript")
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        load_torchscript(ts_dir, threads=0)
        assert torch.get_num_threads() == 2
        model = load_torchscript(ts_dir, threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(previous)
    with pytest.raises(TypeError, match="unexpected"):
        model(input_ids=torch.ones(1, 3, dtype=torch.long), labels=torch.zeros(1))
