"""How much faster than PyTorch fp32 can dynamic INT8 get on this CPU? An upper bound, measured.

MiniLM (the packaged model, fresh 2-class head, built like ``bench/serve_load.py``) at batch 1,
sequence 128, one thread everywhere. The script measures:

* p50 latency of PyTorch fp32 (eager, ``inference_mode``), ONNX fp32 and ONNX INT8, the repeats
  interleaved (A, B, C, A, B, C, ...) so machine noise hits all three alike;
* ONNX Runtime's profiler on both ONNX models (warm-up runs dropped): kernel time per run by op
  type and by class: ``weight_gemm`` (MatMul/Gemm-like nodes whose B is a 2-D weight, and fused
  Attention, whose QKV projection dominates it), ``attention_gemm`` (the same ops with a batched
  activation B: Q·Kᵀ and P·V, which the INT8 export quantizes too), ``quantize``
  (DynamicQuantizeLinear, (De)QuantizeLinear) and ``other`` (LayerNorm, Gelu, Softmax, Add...);
* the weight GEMMs of one layer (Q, K, V, attention out: 128×384·384×384; FFN: 128×384·384×1536
  and 128×1536·1536×384) alone: ORT fp32 MatMul, torch.matmul, and ORT's ``DynamicQuantizeMatMul``
  (what ORT fuses the quantizer's DynamicQuantizeLinear + MatMulInteger + Cast + Mul into) with
  per-column weights of the INT8 model's weight type. ``gemm_speedup`` = Σ fp32 / Σ INT8.

Derived (``torch_ms`` is PyTorch's p50; profile times are kernel times per run):

* ``int8_non_gemm_ms``: the INT8 model's kernel time outside its weight GEMMs;
* ``bound_zero_gemm`` = torch_ms / int8_non_gemm_ms: the INT8 speedup even if every weight
  matmul took no time at all. A true upper bound: it leaves out the session's time between
  kernels (``overhead_ms`` of a profile: profiled run wall − kernel sum, profiler cost included),
  which ``bound_zero_gemm_with_overhead`` adds back; ``bound_zero_all_gemm`` also zeroes the
  attention matmuls;
* ``bound_gemm_speedup`` = torch_ms / (int8_non_gemm_ms + the fp32 model's weight-GEMM time /
  gemm_speedup): the speedup if the INT8 weight GEMMs ran at the isolated INT8-over-fp32 speed;
* ``gemm_speedup_needed``: the INT8-over-fp32 weight-GEMM speedup that ``target_speedup`` (4×)
  would take, the rest of the INT8 model unchanged (null: out of reach even at zero GEMM time);
* ``in_model_gemm_speedup``: fp32 / INT8 weight-GEMM kernel time in the two model profiles.

Results: bench/results/int8_ceiling.json. Quick check: ``--runs 5 --profile-runs 3``.

    .venv/bin/python bench/int8_ceiling.py [--runs 50] [--profile-runs 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from common import write_result  # noqa: E402
from serve_load import build_models  # noqa: E402

SEQ = 128
GEMM_OPS = {"MatMul", "FusedMatMul", "Gemm", "FusedGemm", "MatMulInteger", "QLinearMatMul",
            "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QGemm"}  # fmt: skip
FUSED_ATTENTION_OPS = {"Attention", "QAttention", "MultiHeadAttention"}
QUANTIZE_OPS = {"DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear"}
B_INPUT = {"QLinearMatMul": 3}  # index of the B operand, 1 for the others
# One layer's weight GEMMs as (name, K, N, count per layer); M = SEQ.
LAYER_GEMMS = [("qkv_out_384x384", 384, 384, 4), ("ffn_up_384x1536", 384, 1536, 1),
               ("ffn_down_1536x384", 1536, 384, 1)]  # fmt: skip


def classify(op: str, input_shapes: list[dict[str, list[int]]]) -> str:
    """weight_gemm / attention_gemm / quantize / other, from the op type and its input shapes."""
    if op in FUSED_ATTENTION_OPS:
        return "weight_gemm"
    if op in GEMM_OPS:
        b = input_shapes[B_INPUT.get(op, 1)] if len(input_shapes) > B_INPUT.get(op, 1) else {}
        dims = next(iter(b.values()), [])
        return "attention_gemm" if len(dims) > 2 else "weight_gemm"
    return "quantize" if op in QUANTIZE_OPS else "other"


def summarize(events: list[dict[str, Any]], runs: int) -> dict[str, Any]:
    """ms per run by op type and by class over the last ``runs`` model runs of an ORT trace."""
    model_runs = sorted(
        (e["ts"], e["dur"])
        for e in events
        if e.get("cat") == "Session" and e["name"] == "model_run"
    )[-runs:]
    first, count = (model_runs[0][0] if model_runs else 0), max(1, len(model_runs))
    ops: dict[str, float] = defaultdict(float)
    classes = dict.fromkeys(("weight_gemm", "attention_gemm", "quantize", "other"), 0.0)
    for event in events:
        if event.get("cat") != "Node" or event["ts"] < first:
            continue
        ms = event["dur"] / 1000.0 / count
        ops[event["args"]["op_name"]] += ms
        classes[classify(event["args"]["op_name"], event["args"].get("input_type_shape", []))] += ms
    kernels = sum(classes.values())
    run_ms = sum(dur for _, dur in model_runs) / 1000.0 / count
    return {"ops_ms": dict(sorted(ops.items(), key=lambda kv: -kv[1])), "classes_ms": classes,
            "kernels_ms": kernels, "run_ms": run_ms, "overhead_ms": run_ms - kernels}  # fmt: skip


def bounds(
    torch_ms: float, fp32_prof: dict, int8_prof: dict, gemm_speedup: float, target: float = 4.0
) -> dict[str, float | None]:
    """The derived numbers of the module docstring."""
    int8 = int8_prof["classes_ms"]
    fp32_gemm = fp32_prof["classes_ms"]["weight_gemm"]
    non_gemm = int8_prof["kernels_ms"] - int8["weight_gemm"]
    projected = non_gemm + fp32_gemm / gemm_speedup
    room = torch_ms / target - non_gemm  # what the INT8 weight GEMMs may take to reach target
    return {
        "int8_non_gemm_ms": non_gemm,
        "bound_zero_gemm": torch_ms / non_gemm,
        "bound_zero_gemm_with_overhead": torch_ms / (non_gemm + int8_prof["overhead_ms"]),
        "bound_zero_all_gemm": torch_ms / (non_gemm - int8["attention_gemm"]),
        "projected_int8_ms": projected,
        "bound_gemm_speedup": torch_ms / projected,
        "target_speedup": target,
        "gemm_speedup_needed": fp32_gemm / room if room > 0 else None,
    }


def interleaved_p50(fns: dict[str, Callable[[], Any]], runs: int, inner: int = 1) -> dict:
    """p50 ms of each function (mean of ``inner`` calls per sample), repeats round-robin."""
    for fn in fns.values():
        for _ in range(3 * inner):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            started = time.perf_counter()
            for _ in range(inner):
                fn()
            times[name].append((time.perf_counter() - started) / inner)
    return {name: statistics.median(values) * 1000.0 for name, values in times.items()}


def session(model: Any, profile_prefix: str | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile_prefix:
        options.enable_profiling, options.profile_file_prefix = True, profile_prefix
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def profile(model: Path, feed: dict, runs: int, prefix: str, warmup: int = 3) -> dict[str, Any]:
    ort_session = session(str(model), prefix)
    for _ in range(warmup + runs):
        ort_session.run(None, feed)
    trace = Path(ort_session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    return summarize(events, runs)


def weight_dtype(int8_model: Path) -> type:
    """uint8 or int8: the type of the INT8 model's MatMulInteger weights."""
    import onnx

    graph = onnx.load(str(int8_model)).graph
    weights = {init.name: init.data_type for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "MatMulInteger" and node.input[1] in weights:
            return np.int8 if weights[node.input[1]] == onnx.TensorProto.INT8 else np.uint8
    return np.uint8


def matmul_model(k: int, n: int, int8_dtype: type | None) -> bytes:
    """A one-node ORT graph: fp32 MatMul, or DynamicQuantizeMatMul with per-column weights."""
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).standard_normal((k, n)).astype(np.float32) * 0.05
    inits = [numpy_helper.from_array(weight, "W")]
    node = helper.make_node("MatMul", ["A", "W"], ["Y"])
    if int8_dtype is not None:
        zero = 128 if int8_dtype is np.uint8 else 0
        scale = (np.abs(weight).max(axis=0) / 127.0).astype(np.float32)
        quantized = (np.round(weight / scale) + zero).astype(int8_dtype)
        inits = [numpy_helper.from_array(quantized, "Wq"), numpy_helper.from_array(scale, "Ws"),
                 numpy_helper.from_array(np.full(n, zero, int8_dtype), "Wz")]  # fmt: skip
        node = helper.make_node("DynamicQuantizeMatMul", ["A", "Wq", "Ws", "Wz"], ["Y"],
                                domain="com.microsoft")  # fmt: skip
    graph = helper.make_graph(
        [node], "gemm", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [1, SEQ, k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, SEQ, n])], inits,
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=9).SerializeToString()


def gemm_bench(int8_dtype: type, runs: int) -> dict[str, Any]:
    """One layer's weight GEMMs: fp32 vs INT8 with the model's weight type (``ort_int8``) and
    with the other one (``ort_int8_other``: signed weights run ``vpmaddubsw`` on avx2, faster
    but saturating, which ORT's avx2 config avoids with unsigned ones). ``gemm_speedup`` uses
    the faster of the two, so the bound holds for either kernel."""
    import torch

    other = np.int8 if int8_dtype is np.uint8 else np.uint8
    shapes, totals = {}, defaultdict(float)
    for name, k, n, count in LAYER_GEMMS:
        a = np.random.default_rng(1).standard_normal((1, SEQ, k)).astype(np.float32)
        fp32, int8 = session(matmul_model(k, n, None)), session(matmul_model(k, n, int8_dtype))
        int8_other = session(matmul_model(k, n, other))
        ta, tw = torch.from_numpy(a), torch.randn(k, n)

        def torch_mm(ta: torch.Tensor = ta, tw: torch.Tensor = tw) -> None:
            with torch.inference_mode():
                torch.matmul(ta, tw)

        fns = {"ort_fp32": lambda s=fp32, a=a: s.run(None, {"A": a}), "torch_fp32": torch_mm,
               "ort_int8": lambda s=int8, a=a: s.run(None, {"A": a}),
               "ort_int8_other": lambda s=int8_other, a=a: s.run(None, {"A": a})}  # fmt: skip
        p50 = interleaved_p50(fns, runs, inner=10)
        shapes[name] = {**p50, "count": count, "int8_speedup": p50["ort_fp32"] / p50["ort_int8"]}
        for key, value in p50.items():
            totals[key] += value * count
    return {"shapes": shapes, "layer_ms": dict(totals),
            "weight_types": [np.dtype(int8_dtype).name, np.dtype(other).name],
            "gemm_speedup_model_weights": totals["ort_fp32"] / totals["ort_int8"],
            "gemm_speedup": totals["ort_fp32"] / min(totals["ort_int8"], totals["ort_int8_other"])}  # fmt: skip


def rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    return round(value, 3) if isinstance(value, float) else value


def print_table(result: dict[str, Any]) -> None:
    print(f"\nbatch 1, seq {SEQ}, 1 thread; {result['kernel_set']} kernels; {result['cpu_flags']}")
    print("p50 ms: " + ", ".join(f"{k} {v}" for k, v in result["p50_ms"].items()))
    fp32, int8 = (result["profiles"][k] for k in ("onnx_fp32", "onnx_int8"))
    rows = {op: (fp32["ops_ms"].get(op, 0.0), int8["ops_ms"].get(op, 0.0))
            for op in {**fp32["ops_ms"], **int8["ops_ms"]}}  # fmt: skip
    print(f"\n{'kernel ms/run':28s} {'onnx_fp32':>10s} {'onnx_int8':>10s}")
    for op, (a, b) in sorted(rows.items(), key=lambda kv: -max(kv[1])):
        print(f"{op:28s} {a:10.3f} {b:10.3f}")
    for cls, a in fp32["classes_ms"].items():
        print(f"{'[' + cls + ']':28s} {a:10.3f} {int8['classes_ms'][cls]:10.3f}")
    print(f"{'[session overhead]':28s} {fp32['overhead_ms']:10.3f} {int8['overhead_ms']:10.3f}")
    gemm = result["gemm"]
    mine, other = gemm["weight_types"]
    print(f"\n{'GEMM ms':20s} {'ort_fp32':>9s} {'torch':>9s} {'int8 ' + mine:>10s} "
          f"{'int8 ' + other:>10s} {'speedup':>8s}")  # fmt: skip
    keys = ("ort_fp32", "torch_fp32", "ort_int8", "ort_int8_other")
    for name, row in [*gemm["shapes"].items(), ("one layer", gemm["layer_ms"])]:
        speedup = row["ort_fp32"] / min(row["ort_int8"], row["ort_int8_other"])
        cells = " ".join(
            f"{row[k]:9.3f}" if i < 2 else f"{row[k]:10.3f}" for i, k in enumerate(keys)
        )
        print(f"{name:20s} {cells} {speedup:8.2f}")
    print()
    for key in ("int8_speedup", "in_model_gemm_speedup", "int8_non_gemm_ms", "bound_zero_gemm",
                "bound_zero_gemm_with_overhead", "bound_zero_all_gemm", "projected_int8_ms",
                "bound_gemm_speedup", "gemm_speedup_needed"):  # fmt: skip
        print(f"{key:30s} {result[key]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50, help="timed runs per model / GEMM")
    parser.add_argument("--profile-runs", type=int, default=20, help="profiled runs per model")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForSequenceClassification

    from raynlp.export.files import onnx_file_names
    from raynlp.export.onnx import cpu_flags, pick_kernel_set

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, int8_dir = build_models(Path(tmp))
        fp32_file = Path(tmp) / "onnx" / onnx_file_names(Path(tmp) / "onnx")["model"]
        int8_file = int8_dir / onnx_file_names(int8_dir)["model"]
        model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
        ids = np.random.default_rng(0).integers(1000, model.config.vocab_size, (1, SEQ))
        feed = {"input_ids": ids, "attention_mask": np.ones((1, SEQ), np.int64),
                "token_type_ids": np.zeros((1, SEQ), np.int64)}  # fmt: skip
        torch_feed = {key: torch.from_numpy(value) for key, value in feed.items()}
        fp32, int8 = session(str(fp32_file)), session(str(int8_file))

        def torch_run() -> None:
            with torch.inference_mode():
                model(**torch_feed)

        p50 = interleaved_p50({"torch_fp32": torch_run,
                               "onnx_fp32": lambda: fp32.run(None, feed),
                               "onnx_int8": lambda: int8.run(None, feed)}, args.runs)  # fmt: skip
        files = {"onnx_fp32": fp32_file, "onnx_int8": int8_file}
        profiles = {k: profile(f, feed, args.profile_runs, f"{tmp}/{k}") for k, f in files.items()}
        gemm = gemm_bench(weight_dtype(int8_file), args.runs)

    weight_gemm = {name: prof["classes_ms"]["weight_gemm"] for name, prof in profiles.items()}
    derived = bounds(p50["torch_fp32"], *profiles.values(), gemm["gemm_speedup"])
    flags = sorted(f for f in cpu_flags() if f.startswith(("avx", "amx")) or "vnni" in f)
    result = {
        "batch": 1, "seq_len": SEQ, "threads": 1, "runs": args.runs,
        "profile_runs": args.profile_runs, "kernel_set": pick_kernel_set("auto"),
        "cpu_flags": flags, "p50_ms": p50,
        "int8_speedup": p50["torch_fp32"] / p50["onnx_int8"],
        "onnx_fp32_speedup": p50["torch_fp32"] / p50["onnx_fp32"],
        "in_model_gemm_speedup": weight_gemm["onnx_fp32"] / weight_gemm["onnx_int8"],
        **derived, "gemm": gemm, "profiles": profiles,
    }  # fmt: skip
    result = rounded(result)
    print_table(result)
    write_result("int8_ceiling", result)


if __name__ == "__main__":
    main()
