"""Optimum ONNX export + dynamic INT8 quantization of a trained raynlp model folder."""

from __future__ import annotations

import platform
import re
import shutil
from pathlib import Path

from raynlp.serving.predictor import find_onnx_file
from raynlp.training.checkpoints import MODEL_META_FILE, read_model_meta

KERNEL_SETS = ("avx512_vnni", "avx2", "arm64")


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def pick_kernel_set(requested: str = "auto") -> str:
    """The INT8 kernel set for this CPU: avx512_vnni > avx2 on x86, arm64 on ARM."""
    if requested != "auto":
        return requested
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    flags = cpu_flags()
    if "avx512_vnni" in flags or "avx512vnni" in flags:
        return "avx512_vnni"
    return "avx2"


def _copy_side_files(model_dir: Path, target: Path) -> None:
    """Tokenizer + raynlp.json beside every ONNX model, so each folder is self-contained."""
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(str(target))
    shutil.copy(model_dir / MODEL_META_FILE, target / MODEL_META_FILE)


def export_onnx(model_dir: Path, target: Path) -> Path:
    """fp32 ONNX export through Optimum's ORTModel for the model's task."""
    import optimum.onnxruntime as ort_models

    from raynlp.tasks import get_task

    task = get_task(read_model_meta(model_dir)["task"])
    model_class = getattr(ort_models, task.ort_model_class)
    if target.exists():
        shutil.rmtree(target)
    model = model_class.from_pretrained(str(model_dir), export=True)
    model.save_pretrained(str(target))
    _copy_side_files(model_dir, target)
    return target


FEED_FORWARD_NODES = (r"/intermediate/", r"layer\.\d+/output/dense/")
"""BERT-family feed-forward MatMuls. Their inputs (GELU outputs) have outliers that per-tensor
dynamic activation scales handle badly: on a fine-tuned MiniLM (SST-2, avx2 kernels) full INT8
flipped 1.75% of predictions, INT8 with these kept fp32 flipped none."""


def weight_matmuls(onnx_file: Path, keep_fp32: tuple[str, ...]) -> list[str]:
    """MatMul/Gemm nodes with a weight initializer, except those matching ``keep_fp32``."""
    import onnx

    graph = onnx.load(str(onnx_file), load_external_data=False).graph
    weights = {item.name for item in graph.initializer}
    return [
        node.name
        for node in graph.node
        if node.op_type in ("MatMul", "Gemm")
        and any(name in weights for name in node.input)
        and not any(re.search(pattern, node.name) for pattern in keep_fp32)
    ]


def quantize_dynamic_int8(
    onnx_dir: Path, target: Path, kernel_set: str, keep_fp32: tuple[str, ...] = ()
) -> Path:
    """Dynamic INT8 (weights int8, activations quantized at run time) with Optimum's ORTQuantizer.

    With ``keep_fp32`` (node-name regexes) only the other weight MatMuls are quantized.
    Quantize the plain export: quantizing an ORTOptimizer output fails, and ONNX Runtime applies
    its own graph fusions when the session is created.
    """
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    if kernel_set not in KERNEL_SETS:
        raise ValueError(f"unknown INT8 kernel set {kernel_set!r}; allowed: {KERNEL_SETS}")
    if target.exists():
        shutil.rmtree(target)
    nodes = weight_matmuls(find_onnx_file(onnx_dir), keep_fp32) if keep_fp32 else None
    quantizer = ORTQuantizer.from_pretrained(str(onnx_dir))
    # Per-channel weight scales: on the avx2 kernels per-tensor scales flipped 2.75% of a
    # fine-tuned MiniLM's SST-2 predictions, per-channel 1.75%, at about the same latency.
    config = getattr(AutoQuantizationConfig, kernel_set)(
        is_static=False, per_channel=True, nodes_to_quantize=nodes
    )
    quantizer.quantize(save_dir=str(target), quantization_config=config)
    shutil.copy(onnx_dir / MODEL_META_FILE, target / MODEL_META_FILE)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(onnx_dir)).save_pretrained(str(target))
    return target
