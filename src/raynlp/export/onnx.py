"""Optimum ONNX export + dynamic INT8 quantization of a trained raynlp model folder."""

from __future__ import annotations

import platform
import re
import shutil
from pathlib import Path
from typing import Any

from raynlp.config import STATIC_EXCLUDED_NODES
from raynlp.training.checkpoints import read_model_meta

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


def copy_side_files(source: Path, target: Path) -> None:
    """Tokenizer, configs, raynlp.json (and a CRF's transitions) beside every ONNX model, so each
    export folder is self-contained."""
    for item in source.iterdir():
        if item.name == "evaluation.json":
            continue
        if (
            item.is_file()
            and item.suffix not in (".onnx", ".onnx_data", ".bin")
            and not (item.name.startswith("model") and item.suffix == ".safetensors")
        ) and not (target / item.name).exists():
            shutil.copy(item, target / item.name)


def export_onnx(model_dir: Path, target: Path) -> Path:
    """fp32 ONNX export through Optimum's ORTModel class for the model's task.

    Seq2seq: T5-style models export encoder, decoder and decoder-with-past (key/value cache);
    a BERT2BERT ``EncoderDecoderModel`` exports without the cache (Optimum supports no past
    for a BERT decoder), so generation re-runs the decoder over the prefix at every step.
    """
    import optimum.onnxruntime as ort_models
    from transformers import AutoConfig, AutoTokenizer

    from raynlp.tasks import get_task

    task = get_task(read_model_meta(model_dir)["task"])
    model_class = getattr(ort_models, task.ort_model_class)
    if target.exists():
        shutil.rmtree(target)
    kwargs = {}
    if task.ort_model_class == "ORTModelForSeq2SeqLM":
        model_type = AutoConfig.from_pretrained(str(model_dir)).model_type
        kwargs = {"use_cache": model_type != "encoder-decoder", "use_merged": False}
    model = model_class.from_pretrained(str(model_dir), export=True, **kwargs)
    model.save_pretrained(str(target))
    AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(str(target))
    copy_side_files(model_dir, target)
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
    """Dynamic INT8 (weights int8, activations quantized at run time) with Optimum's ORTQuantizer,
    of every graph in the folder (one, or encoder + decoders for seq2seq).

    With ``keep_fp32`` (node-name regexes) only the other weight MatMuls are quantized.
    Quantize the plain export: quantizing an ORTOptimizer output fails, and ONNX Runtime applies
    its own graph fusions when the session is created.
    """
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    from raynlp.export.files import onnx_file_names

    if kernel_set not in KERNEL_SETS:
        raise ValueError(f"unknown INT8 kernel set {kernel_set!r}; allowed: {KERNEL_SETS}")
    if target.exists():
        shutil.rmtree(target)
    for file_name in onnx_file_names(onnx_dir).values():
        nodes = weight_matmuls(onnx_dir / file_name, keep_fp32) if keep_fp32 else None
        quantizer = ORTQuantizer.from_pretrained(str(onnx_dir), file_name=file_name)
        # Per-channel weight scales: on the avx2 kernels per-tensor scales flipped 2.75% of a
        # fine-tuned MiniLM's SST-2 predictions, per-channel 1.75%, at about the same latency.
        config = getattr(AutoQuantizationConfig, kernel_set)(
            is_static=False, per_channel=True, nodes_to_quantize=nodes
        )
        quantizer.quantize(save_dir=str(target), quantization_config=config)
    copy_side_files(onnx_dir, target)
    return target


class VariantSkipped(ValueError):
    """A variant that does not apply to this model (the report records why)."""


OPTIMIZATION_LEVELS = {"onnx_o1": "O1", "onnx_o2": "O2", "onnx_o3": "O3"}
"""ORTOptimizer levels: O1 basic fusions; O2 + transformer-specific fusions (attention,
LayerNorm, GELU); O3 + GELU approximation. (O4 is fp16, GPU only.)"""


def optimize_graph(onnx_dir: Path, target: Path, level: str) -> Path:
    """Optimum's ORTOptimizer at ``level`` (O1/O2/O3) over every graph of the export folder.

    Raises VariantSkipped for architectures ORTOptimizer does not know (e.g. a BERT2BERT
    encoder-decoder)."""
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig
    from optimum.onnxruntime.utils import ORTConfigManager
    from transformers import AutoConfig

    from raynlp.export.files import onnx_file_names

    model_type = AutoConfig.from_pretrained(str(onnx_dir)).model_type
    if model_type not in ORTConfigManager._conf:
        raise VariantSkipped(f"ORTOptimizer has no graph fusions for model type {model_type!r}")
    if target.exists():
        shutil.rmtree(target)
    files = list(onnx_file_names(onnx_dir).values())
    optimizer = ORTOptimizer.from_pretrained(str(onnx_dir), file_names=files)
    config = getattr(AutoOptimizationConfig, level)()
    optimizer.optimize(config, str(target), file_suffix=None)
    copy_side_files(onnx_dir, target)
    return target


CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


def quantize_static_int8(
    onnx_dir: Path,
    target: Path,
    kernel_set: str,
    calibration: dict[str, Any],
    method: str = "minmax",
    percentile: float = 99.999,
    exclude: tuple[str, ...] = STATIC_EXCLUDED_NODES,
) -> Path:
    """Static INT8 (weights and activations int8, activation scales fixed beforehand) of a
    single-graph export, calibrated on ``calibration`` (model-input columns of training rows).

    Only weight MatMuls are quantized, minus the ``exclude`` node-name regexes. Seq2seq exports
    raise VariantSkipped: their decoder inputs come from generation, not from rows."""
    from datasets import Dataset
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoCalibrationConfig, AutoQuantizationConfig

    from raynlp.export.files import onnx_file_names

    files = onnx_file_names(onnx_dir)
    if "model" not in files:
        raise VariantSkipped(
            "static INT8 calibrates single-graph (encoder) models; a seq2seq decoder's inputs "
            "come from generation (use dynamic INT8)"
        )
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; allowed: {CALIBRATION_METHODS}")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    onnx_file = onnx_dir / files["model"]
    nodes = weight_matmuls(onnx_file, exclude)
    inputs = _graph_inputs(onnx_file)
    dataset = Dataset.from_dict({k: v.tolist() for k, v in calibration.items() if k in inputs})
    quantizer = ORTQuantizer.from_pretrained(str(onnx_dir), file_name=files["model"])
    config = getattr(AutoQuantizationConfig, kernel_set)(
        is_static=True, per_channel=True, nodes_to_quantize=nodes, operators_to_quantize=["MatMul"]
    )
    if method == "percentile":
        calibration_config = AutoCalibrationConfig.percentiles(dataset, percentile=percentile)
    else:
        calibration_config = getattr(AutoCalibrationConfig, method)(dataset)
    ranges = quantizer.fit(
        dataset=dataset,
        calibration_config=calibration_config,
        onnx_augmented_model_name=str(target / "augmented_model.onnx"),
        operators_to_quantize=config.operators_to_quantize,
        batch_size=8,
    )
    (target / "augmented_model.onnx").unlink(missing_ok=True)
    quantizer.quantize(
        save_dir=str(target), quantization_config=config, calibration_tensors_range=ranges
    )
    copy_side_files(onnx_dir, target)
    return target


def _graph_inputs(onnx_file: Path) -> set[str]:
    import onnx

    graph = onnx.load(str(onnx_file), load_external_data=False).graph
    return {item.name for item in graph.input}
