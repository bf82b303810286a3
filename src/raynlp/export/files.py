"""Which ONNX files an export folder holds (one model, or encoder + decoder(s) for seq2seq)."""

from __future__ import annotations

from pathlib import Path

SEQ2SEQ_PARTS = ("encoder", "decoder_with_past", "decoder")

FOLDERS = {
    "onnx_fp32": "onnx",
    "onnx_o1": "onnx_o1",
    "onnx_o2": "onnx_o2",
    "onnx_o3": "onnx_o3",
    "onnx_int8": "int8",
    "onnx_int8_attention": "int8_attention",
    "onnx_int8_static": "int8_static",
    "torchscript": "torchscript",
}
"""Each variant's folder under the export folder (PyTorch fp32 is the run's own model/)."""


def onnx_file_names(directory: str | Path) -> dict[str, str]:
    """``{"model": name}`` for a single-graph export; ``{"encoder", "decoder"[,
    "decoder_with_past"]}`` for a seq2seq export (fp32 or quantized names)."""
    names = sorted(p.name for p in Path(directory).glob("*.onnx"))
    if not names:
        raise FileNotFoundError(f"no .onnx file in {directory}")
    parts: dict[str, str] = {}
    for name in names:
        for part in SEQ2SEQ_PARTS:
            if name.startswith(f"{part}_model"):
                parts.setdefault(part, name)
                break
    if parts:
        missing = {"encoder", "decoder"} - set(parts)
        if missing:
            raise FileNotFoundError(
                f"seq2seq export in {directory} lacks {sorted(missing)}: {names}"
            )
        return parts
    if len(names) != 1:
        raise FileNotFoundError(f"expected exactly one .onnx file in {directory}, found {names}")
    return {"model": names[0]}
