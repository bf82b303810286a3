"""bench/int8_ceiling.py's bookkeeping on a synthetic ORT profile: op classification, per-run
sums over the profiled runs (warm-up dropped) and the bound formulas. No model is built."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from int8_ceiling import bounds, classify, summarize

WEIGHT = [{"float": [1, 128, 384]}, {"uint8": [384, 384]}, {"float": [384]}]
ATTENTION = [{"float": [1, 12, 128, 32]}, {"uint8": [1, 12, 32, 128]}]


def test_classify() -> None:
    assert classify("MatMul", [{"float": [1, 128, 384]}, {"float": [384, 1536]}]) == "weight_gemm"
    assert classify("DynamicQuantizeMatMul", WEIGHT) == "weight_gemm"
    assert classify("MatMulIntegerToFloat", WEIGHT) == "weight_gemm"
    assert classify("FusedGemm", [{"float": [1, 384]}, {"float": [384, 384]}]) == "weight_gemm"
    assert classify("MatMul", [{"float": [1, 12, 128, 32]}, {"float": [1, 12, 32, 128]}]) == (
        "attention_gemm"
    )
    assert classify("DynamicQuantizeMatMul", ATTENTION) == "attention_gemm"
    assert classify("QLinearMatMul", [{}, {}, {}, {"int8": [384, 384]}]) == "weight_gemm"
    assert classify("Attention", []) == "weight_gemm"
    assert classify("DynamicQuantizeLinear", []) == "quantize"
    for op in ("Gelu", "BiasGelu", "SkipLayerNormalization", "Softmax", "Add"):
        assert classify(op, []) == "other"


def run(ts: int, dur: int) -> dict:
    return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}


def node(ts: int, dur: int, op: str, shapes: list) -> dict:
    return {"cat": "Node", "name": f"{op}_kernel_time", "ts": ts, "dur": dur,
            "args": {"op_name": op, "input_type_shape": shapes}}  # fmt: skip


def test_summarize_drops_warmup_runs() -> None:
    events = [run(0, 9000), node(10, 5000, "DynamicQuantizeMatMul", WEIGHT)]  # warm-up
    for start in (10_000, 20_000):
        events += [
            run(start, 4000),
            node(start + 10, 2000, "DynamicQuantizeMatMul", WEIGHT),
            node(start + 20, 500, "DynamicQuantizeMatMul", ATTENTION),
            node(start + 30, 250, "DynamicQuantizeLinear", []),
            node(start + 40, 750, "Gelu", []),
        ]
    summary = summarize(events, runs=2)
    assert summary["ops_ms"] == {"DynamicQuantizeMatMul": 2.5, "Gelu": 0.75,
                                 "DynamicQuantizeLinear": 0.25}  # fmt: skip
    assert summary["classes_ms"] == {"weight_gemm": 2.0, "attention_gemm": 0.5,
                                     "quantize": 0.25, "other": 0.75}  # fmt: skip
    assert summary["kernels_ms"] == 3.5
    assert summary["run_ms"] == 4.0
    assert summary["overhead_ms"] == 0.5


def test_bounds() -> None:
    int8 = {"classes_ms": {"weight_gemm": 25.0, "attention_gemm": 3.0, "quantize": 1.0,
                           "other": 6.0}, "kernels_ms": 35.0, "overhead_ms": 2.0}  # fmt: skip
    fp32 = {"classes_ms": {"weight_gemm": 36.0}}
    derived = bounds(60.0, fp32, int8, gemm_speedup=1.5)
    assert derived["int8_non_gemm_ms"] == 10.0
    assert derived["bound_zero_gemm"] == 6.0
    assert derived["bound_zero_gemm_with_overhead"] == 5.0
    assert derived["bound_zero_all_gemm"] == pytest.approx(60 / 7)
    assert derived["projected_int8_ms"] == 34.0
    assert derived["bound_gemm_speedup"] == pytest.approx(60 / 34)
    assert derived["gemm_speedup_needed"] == pytest.approx(36 / 5)  # 60/4 − 10 = 5 ms left
    assert bounds(30.0, fp32, int8, 1.5)["gemm_speedup_needed"] is None  # 30/4 < 10
