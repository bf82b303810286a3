"""A traced TorchScript variant of a trained raynlp model folder (encoder tasks).

``export_torchscript`` traces the task's PyTorch network with ``torch.jit.trace`` and writes a
self-contained folder: ``model.torchscript.pt`` plus the tokenizer, configs, ``raynlp.json``
(and a CRF's ``crf.safetensors``) copied with ``copy_side_files``, as for the ONNX variants.
``load_torchscript`` gives a callable that ``task.infer`` runs exactly like the PyTorch or ONNX
model: ``model(**inputs)`` returns a Hugging Face ``ModelOutput`` (``.logits`` / ``["logits"]``,
``.start_logits`` / ``.end_logits``), and a CRF tagger returns ``{"logits", "crf_tags"}``.

What is traced, per task:

* classification, similarity: the sequence classifier → ``logits``;
* ner: the token classifier → ``logits``; with a CRF only the emission network is traced, the
  Viterbi decoding stays outside the trace and is the numpy code the ONNX path uses
  (``OnnxCRFTagger`` over the transitions in ``crf.safetensors``), so all runtimes decode alike;
* qa: the span head → ``start_logits``, ``end_logits``;
* summarization: not traced (``VariantNotApplicable``): generation is a beam search whose
  decoder runs once per new token over a key/value cache that grows with every step, kept in
  cache objects and steered by Python control flow; ``torch.jit.trace`` records one fixed path
  of one step. Tracing only the encoder would leave the decoder (most of the generation time)
  eager and the folder would still need the full PyTorch weights, so it is not offered.

Shape-genericity: the trace is taken at batch 2 × 16 tokens with a padded row (so the
attention-mask path is the one recorded, never the "no padding" shortcut), and the saved file
is reloaded and checked against eager PyTorch at batch 1 × 7 and batch 3 × 40 tokens (random
ids, padded rows) before the export is accepted. Transformers computes the attention mask
from tensors while ``torch.jit.is_tracing()`` and takes sequence lengths from ``tensor.size()``,
which the tracer records as graph values, so sizes are not baked in; the check proves it for
each exported model (a model whose trace does fail it raises ``VariantNotApplicable``).

The traced graph is fp32 on CPU and frozen (``torch.jit.freeze``); its input/output names are
stored inside the archive (``raynlp_torchscript.json`` as an ``_extra_files`` entry). Note that
``torch.jit.trace``/``freeze``/``save``/``load`` emit DeprecationWarnings in the pinned torch
2.13 (torch points to ``torch.export``); they work, but may go in a later torch.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from raynlp.export.onnx import VariantSkipped
from raynlp.tasks.base import ENCODER_INPUTS
from raynlp.tasks.crf import CRF_FILE, CRFTokenClassifier, OnnxCRFTagger
from raynlp.training.checkpoints import read_model_meta

log = logging.getLogger(__name__)

TORCHSCRIPT_FILE = "model.torchscript.pt"
SIGNATURE_FILE = "raynlp_torchscript.json"
"""Stored inside the TorchScript archive (``_extra_files``): input and output names, task."""

OUTPUTS: dict[str, tuple[str, ...]] = {
    "classification": ("logits",),
    "similarity": ("logits",),
    "ner": ("logits",),
    "qa": ("start_logits", "end_logits"),
}
"""Traced outputs of each traceable task, in the order the traced module returns them."""

TRACE_SHAPE = (2, 16)
CHECK_SHAPES = ((1, 7), (3, 40))
"""Batch × tokens of the trace, and of the shape-genericity check (both differ from the trace)."""
CHECK_ATOL = 1e-4


VariantNotApplicable = VariantSkipped
"""This variant cannot be built for this model (the same exception as the ONNX variants')."""


class _TupleOutputs(torch.nn.Module):
    """The network with positional tensor inputs and a tuple of the named output tensors."""

    def __init__(self, network: torch.nn.Module, inputs: tuple[str, ...], outputs: tuple[str, ...]):
        super().__init__()
        self.network = network
        self.inputs = inputs
        self.outputs = outputs

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        result = self.network(**dict(zip(self.inputs, tensors, strict=True)), return_dict=True)
        return tuple(result[name] for name in self.outputs)


def _output_class(task: str) -> Any:
    from transformers.modeling_outputs import (
        QuestionAnsweringModelOutput,
        SequenceClassifierOutput,
        TokenClassifierOutput,
    )

    if task == "qa":
        return QuestionAnsweringModelOutput
    if task == "ner":
        return TokenClassifierOutput
    return SequenceClassifierOutput


def _example_inputs(
    input_names: tuple[str, ...], batch: int, length: int, vocab_size: int, seed: int
) -> tuple[torch.Tensor, ...]:
    """Random ids; every row but the first padded at the end; the second half of each row is
    segment 1 (sentence pairs)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab_size, (batch, length), generator=generator, dtype=torch.long)
    mask = torch.ones(batch, length, dtype=torch.long)
    for row in range(1, batch):
        used = max(1, length - (row * length) // (batch + 1))
        mask[row, used:] = 0
    ids = ids * mask
    segments = torch.zeros(batch, length, dtype=torch.long)
    segments[:, length // 2 :] = 1
    columns = {"input_ids": ids, "attention_mask": mask, "token_type_ids": segments * mask}
    return tuple(columns[name] for name in input_names)


def _input_names(model_dir: Path) -> tuple[str, ...]:
    """The encoder inputs the tokenizer produces, in ``ENCODER_INPUTS`` order."""
    from transformers import AutoTokenizer

    produced = set(AutoTokenizer.from_pretrained(str(model_dir)).model_input_names)
    names = tuple(name for name in ENCODER_INPUTS if name in produced)
    if "input_ids" not in names or "attention_mask" not in names:
        raise VariantNotApplicable(
            f"the tokenizer makes {sorted(produced)}; tracing needs input_ids and attention_mask"
        )
    return names


def _check_shape_generic(
    traced: torch.jit.ScriptModule,
    eager: torch.nn.Module,
    input_names: tuple[str, ...],
    vocab_size: int,
    max_positions: int,
) -> list[dict[str, Any]]:
    """Traced vs eager outputs at ``CHECK_SHAPES``; VariantNotApplicable when they differ."""
    checks = []
    for seed, (batch, length) in enumerate(CHECK_SHAPES, start=1):
        length = min(length, max_positions)
        inputs = _example_inputs(input_names, batch, length, vocab_size, seed)
        with torch.inference_mode():
            expected, got = eager(*inputs), traced(*inputs)
        worst = 0.0
        for name, want, have in zip(eager.outputs, expected, got, strict=True):
            if want.shape != have.shape:
                raise VariantNotApplicable(
                    f"the traced graph is not shape-generic: {name} at batch {batch} × "
                    f"{length} tokens has shape {tuple(have.shape)}, eager {tuple(want.shape)}"
                )
            worst = max(worst, float((want.float() - have.float()).abs().max()))
        if worst > CHECK_ATOL:
            raise VariantNotApplicable(
                f"the traced graph is not shape-generic: at batch {batch} × {length} tokens its "
                f"outputs differ from eager PyTorch by up to {worst:.2e} (bound {CHECK_ATOL:g})"
            )
        checks.append({"batch": batch, "tokens": length, "max_abs_diff": worst})
    return checks


def export_torchscript(model_dir: Path, target: Path) -> Path:
    """Trace the model folder's network into ``target/model.torchscript.pt`` (fp32, CPU) and
    copy its side files beside it; ``target`` is replaced. Raises ``VariantNotApplicable`` for
    summarization, and for a model whose trace fails the shape-genericity check."""
    from raynlp.export.onnx import copy_side_files
    from raynlp.tasks import get_task

    model_dir, target = Path(model_dir), Path(target)
    task_name = read_model_meta(model_dir)["task"]
    if task_name == "summarization":
        raise VariantNotApplicable(
            "summarization generates with beam search over a decoder key/value cache that grows "
            "every step (cache objects, Python control flow); torch.jit.trace records a single "
            "fixed step, and tracing only the encoder would leave most of the work eager"
        )
    if task_name not in OUTPUTS:
        raise VariantNotApplicable(f"no TorchScript tracing is defined for task {task_name!r}")
    model = get_task(task_name).load_trained(str(model_dir))
    network = model.encoder if isinstance(model, CRFTokenClassifier) else model
    network = network.float().eval()
    input_names = _input_names(model_dir)
    wrapper = _TupleOutputs(network, input_names, OUTPUTS[task_name]).eval()
    config = network.config
    vocab_size = int(config.vocab_size)
    max_positions = int(getattr(config, "max_position_embeddings", 512) or 512)

    example = _example_inputs(input_names, *TRACE_SHAPE, vocab_size, seed=0)
    with torch.inference_mode(False), torch.no_grad():
        traced = torch.jit.trace(wrapper, example, strict=False, check_trace=False)
    # Freezing inlines the weights and attributes as constants: a smaller graph, optimised once.
    traced = torch.jit.freeze(traced.eval())

    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    signature = {
        "task": task_name,
        "inputs": list(input_names),
        "outputs": list(OUTPUTS[task_name]),
        "crf": isinstance(model, CRFTokenClassifier),
        "trace_shape": list(TRACE_SHAPE),
        "torch": torch.__version__,
    }
    try:
        torch.jit.save(
            traced,
            str(target / TORCHSCRIPT_FILE),
            _extra_files={SIGNATURE_FILE: json.dumps(signature)},
        )
        reloaded = torch.jit.load(str(target / TORCHSCRIPT_FILE), map_location="cpu")
        signature["checks"] = _check_shape_generic(
            reloaded, wrapper, input_names, vocab_size, max_positions
        )
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    copy_side_files(model_dir, target)
    log.info("TorchScript export of %s: %s", model_dir, signature)
    return target


class TorchScriptModel:
    """A loaded traced network, called like the Hugging Face model: ``model(**inputs)`` → a
    ``ModelOutput`` with the traced outputs (by attribute and by key)."""

    def __init__(self, module: torch.jit.ScriptModule, signature: dict[str, Any]) -> None:
        self.traced = module
        self.signature = signature
        self.input_names = tuple(signature["inputs"])
        self.output_names = tuple(signature["outputs"])
        self.output_class = _output_class(signature["task"])

    def __call__(self, **inputs: torch.Tensor) -> Any:
        unknown = set(inputs) - set(self.input_names)
        missing = set(self.input_names) - set(inputs)
        if unknown or missing:
            raise TypeError(
                f"the traced model takes {list(self.input_names)}; "
                f"missing {sorted(missing)}, unexpected {sorted(unknown)}"
            )
        args = [torch.as_tensor(inputs[name], dtype=torch.long) for name in self.input_names]
        outputs = self.traced(*args)
        return self.output_class(**dict(zip(self.output_names, outputs, strict=True)))

    def __repr__(self) -> str:
        return f"TorchScriptModel(task={self.signature['task']!r}, inputs={self.input_names})"


class TorchScriptCRFTagger(OnnxCRFTagger):
    """The traced emission network + the saved transitions, decoded by the shared numpy
    Viterbi (``OnnxCRFTagger``'s code): ``{"logits", "crf_tags"}`` like the PyTorch tagger."""


def is_torchscript_dir(path: str | Path) -> bool:
    return (Path(path) / TORCHSCRIPT_FILE).is_file()


def load_torchscript(model_dir: str | Path, threads: int = 1) -> Any:
    """The TorchScript model of a folder written by ``export_torchscript``, usable wherever
    ``task.infer`` takes the PyTorch or ONNX model.

    ``threads`` > 0: PyTorch's intra-op thread count is set to it (``torch.set_num_threads``)
    when it differs. This is process-wide — torch has no per-model setting — and is logged
    with the previous value; ONNX Runtime gets ``threads`` per session instead.
    ``threads`` = 0 leaves PyTorch's setting alone (the process default or the caller's).
    """
    model_dir = Path(model_dir)
    if not is_torchscript_dir(model_dir):
        raise FileNotFoundError(f"no {TORCHSCRIPT_FILE} in {model_dir}")
    if threads > 0 and torch.get_num_threads() != threads:
        log.info("torch intra-op threads %d → %d (process-wide)", torch.get_num_threads(), threads)
        torch.set_num_threads(threads)
    extra = {SIGNATURE_FILE: ""}
    module = torch.jit.load(
        str(model_dir / TORCHSCRIPT_FILE), map_location="cpu", _extra_files=extra
    )
    model = TorchScriptModel(module.eval(), json.loads(extra[SIGNATURE_FILE]))
    if model.signature.get("crf") or (model_dir / CRF_FILE).is_file():
        return TorchScriptCRFTagger(model, str(model_dir))
    return model
