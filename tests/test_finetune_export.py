"""A short real fine-tune of the packaged MiniLM on the shipped SST-2 sample, then its export.

One training run (module fixture) feeds three checks: held-out accuracy above a stated bar,
`raynlp evaluate` on the same rows, and an export whose INT8 variants hold the ≥ 99% agreement
gate.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raynlp.cli import main as raynlp
from raynlp.config import parse_job_config
from raynlp.evaluation import evaluate_model
from raynlp.export.pipeline import FOLDERS

ACCURACY_BAR = 0.75
"""MiniLM after ~75 steps on 1,200 rows reaches ~0.8 on these held-out rows; chance is 0.5.
(Fewer steps leave many predictions near 0.5, where INT8 rounding flips them.)"""


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory: pytest.TempPathFactory):
    from raynlp.runtime import ray_session
    from raynlp.training.trainer import train

    config = parse_job_config(
        {
            "name": "minilm-sst2",
            "model": {"name_or_path": "minilm", "max_length": 64},
            "data": {
                "train": "sample://sst2_train.tsv",
                "validation": "sample://sst2_validation.tsv",
                "text_column": "sentence",
                "label_names": ["negative", "positive"],
                "max_train_rows": 1200,
                "max_validation_rows": 400,
            },
            "training": {"learning_rate": 1e-4, "epochs": 2, "warmup_ratio": 0.1},
            "output": {"dir": str(tmp_path_factory.mktemp("minilm"))},
        }
    )
    with ray_session(num_cpus=2):
        return train(config)


@pytest.mark.timeout(600)
def test_minilm_beats_accuracy_bar(minilm_run):
    accuracy = minilm_run.metrics["validation"]["accuracy"]
    assert accuracy >= ACCURACY_BAR, minilm_run.metrics["history"]


@pytest.mark.timeout(300)
def test_evaluate_cli_reports_metrics(minilm_run, capsys):
    validation = minilm_run.run_dir / "data" / "validation.jsonl"
    assert raynlp(["evaluate", str(minilm_run.run_dir), str(validation)]) == 0
    out = capsys.readouterr().out
    assert "confusion matrix" in out and "negative" in out and "positive" in out
    saved = json.loads((minilm_run.model_dir / "evaluation.json").read_text())
    assert saved["metrics"]["accuracy"] == pytest.approx(
        minilm_run.metrics["validation"]["accuracy"]
    )


@pytest.mark.timeout(600)
def test_int8_export_agrees_with_pytorch(minilm_run):
    # Through the CLI: the bound and kernel set come from the run's saved `export:` section.
    assert raynlp(["export", str(minilm_run.run_dir)]) == 0
    report = json.loads((minilm_run.run_dir / "export" / "export_report.json").read_text())
    assert report["min_agreement"] == 0.99
    variants = report["parity"]["variants"]
    assert set(variants) == {
        "pytorch_fp32",
        "onnx_fp32",
        "onnx_o2",
        "onnx_int8",
        "onnx_int8_attention",
        "onnx_int8_static",
        "torchscript",
    }
    assert report["parity"]["rows"] == 400
    assert variants["onnx_fp32"]["agreement"] == 1.0
    assert variants["onnx_o2"]["agreement"] >= 0.99 and variants["torchscript"]["agreement"] >= 0.99
    # At least one INT8 variant holds the bound (which one depends on the CPU's int8 kernels).
    int8 = ("onnx_int8", "onnx_int8_attention", "onnx_int8_static")
    assert max(variants[name]["agreement"] for name in int8) >= 0.99, variants
    # The gate serves the fastest variant that holds the bounds; every faster one is named as
    # rejected (which variant wins is a timing race on a shared 2-core machine, so not asserted).
    chosen = report["chosen"]
    assert chosen != "pytorch_fp32", report["reason"]
    faster = [n for n, r in variants.items() if r["p50_ms"] < variants[chosen]["p50_ms"]]
    assert all(f"{name} rejected" in report["reason"] for name in faster)
    assert variants[chosen]["agreement"] >= 0.99
    # ≥ 99% agreement on 400 rows: at most 4 rows differ, so the accuracy moves ≤ 0.01.
    assert abs(variants[chosen]["value"] - variants["pytorch_fp32"]["value"]) <= 0.01 + 1e-9
    assert variants[chosen]["p50_ms"] < variants["pytorch_fp32"]["p50_ms"]
    assert report["sizes_mb"]["onnx_int8"] < report["sizes_mb"]["onnx_fp32"] / 3
    serve_dir = Path(report["serve_dir"])
    assert serve_dir.name == FOLDERS[chosen], (serve_dir, chosen)
    assert (minilm_run.run_dir / "export" / "serving").resolve() == serve_dir.resolve()
    assert (serve_dir / "raynlp.json").is_file() and (serve_dir / "tokenizer.json").is_file()


@pytest.mark.timeout(600)
def test_gate_rejects_a_destructive_static_int8(minilm_run, tmp_path: Path):
    """Static INT8 calibrated to clip 40% of every activation (percentile 60, nothing kept
    fp32) loses accuracy: the gate measures the drop and serves another variant."""
    from raynlp.config import ExportSection
    from raynlp.export.pipeline import export_model

    settings = ExportSection(
        static_int8={"method": "percentile", "percentile": 60.0, "exclude": [],
                     "calibration_rows": 64},
        latency_samples=10,
    )  # fmt: skip
    report = export_model(
        minilm_run.run_dir,
        tmp_path / "gate",
        variants=["onnx_fp32", "onnx_int8_static"],
        settings=settings,
        max_rows=200,
    )
    variants = report["parity"]["variants"]
    static = variants["onnx_int8_static"]
    assert static["metric_drop"] > report["max_metric_drop"], static
    assert report["chosen"] in ("onnx_fp32", "pytorch_fp32")
    if static["p50_ms"] < variants[report["chosen"]]["p50_ms"]:  # examined first, so rejected
        assert "onnx_int8_static rejected: " in report["reason"]
    assert "onnx_int8_static" in (tmp_path / "gate" / "export_report.md").read_text()


@pytest.mark.slow  # ~6 minutes; test_optimize runs distill + prune on a tiny run by default
@pytest.mark.timeout(900)
def test_distilled_student_and_pruned_model(minilm_run, tmp_path: Path):
    """`raynlp optimize` with distill and prune on: a 3-layer student trained on MiniLM's soft
    targets through Ray Train beats an untrained student of the same size; the pruned model has
    fewer parameters; both are scored, timed and gated beside the other variants."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from raynlp.config import ExportSection
    from raynlp.export.pipeline import export_model
    from raynlp.training.checkpoints import read_model_meta, write_model_dir

    settings = ExportSection(
        distill={"enabled": True, "layers": 3, "epochs": 1},
        prune={"enabled": True, "heads_fraction": 0.3, "ffn_fraction": 0.3,
               "recovery_epochs": 1},
        latency_samples=10,
    )  # fmt: skip
    report = export_model(
        minilm_run.run_dir, tmp_path / "compressed", variants=["onnx_fp32"], settings=settings
    )
    variants = report["parity"]["variants"]
    assert {"student", "student_onnx_int8", "pruned", "pruned_onnx_int8"} <= set(variants)
    assert all(variants[name]["compressed"] for name in ("student", "pruned"))

    student_dir = minilm_run.run_dir / "student" / "model"
    config = AutoConfig.from_pretrained(str(student_dir))
    assert config.num_hidden_layers == 3
    assert variants["student"]["p50_ms"] < variants["pytorch_fp32"]["p50_ms"]
    untrained = AutoModelForSequenceClassification.from_config(config)
    untrained_dir = write_model_dir(
        untrained,
        untrained.state_dict(),
        AutoTokenizer.from_pretrained(str(student_dir)),
        tmp_path / "untrained",
        read_model_meta(student_dir),
    )
    validation = str(minilm_run.run_dir / "data" / "validation.jsonl")
    baseline = evaluate_model(untrained_dir, validation)["metrics"]["accuracy"]
    student = variants["student"]["value"]
    assert student > baseline + 0.1, (student, baseline)

    pruning = report["compression"]["pruned"]["pruning"]
    assert pruning["parameters_after"] < pruning["parameters_before"]
    assert pruning["intermediate_size_after"] < pruning["intermediate_size_before"]
    assert variants["pruned"]["size_mb"] < variants["pytorch_fp32"]["size_mb"]
