"""Structured pruning of BERT-family encoders: whole attention heads and feed-forward neurons are
removed from the weight matrices, so the pruned model is smaller and faster on any runtime (ONNX
included), not merely sparse.

Flow: score heads with gradients (``head_importance``) and FFN neurons by weight magnitude
(``ffn_importance``), then ``prune_model`` removes the least important of each. The result needs
no custom code to load: heads go through Hugging Face's ``prune_heads``, which records them in
``config.pruned_heads`` (re-applied by ``from_pretrained`` before the weights are read), and the
FFN keeps the same width in every layer so ``config.intermediate_size`` describes it. A pruned
model therefore round-trips through ``save_pretrained`` / ``from_pretrained`` and exports with
Optimum like any other checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel

Batch = dict[str, Any]
LossFn = Callable[[Any, Batch], torch.Tensor]


def encoder_of(model: Any) -> PreTrainedModel:
    """The BERT-family encoder (a ``BertModel``-like base model) inside a model raynlp builds.

    Accepts Hugging Face task models (sequence/token classification, QA: their ``base_model``) and
    raynlp's ``CRFTokenClassifier`` (whose HF token classifier is ``.encoder``). Raises
    ``ValueError`` for anything else, since the pruning code relies on BERT's layer layout.
    """
    from transformers import PreTrainedModel

    from raynlp.tasks.crf import CRFTokenClassifier

    hf_model = model.encoder if isinstance(model, CRFTokenClassifier) else model
    if not isinstance(hf_model, PreTrainedModel):
        raise ValueError(
            f"pruning supports BERT-family encoders; got {type(model).__name__}, "
            "which is not a Hugging Face model"
        )
    encoder = hf_model.base_model
    config = hf_model.config
    if getattr(config, "is_encoder_decoder", False) or getattr(config, "is_decoder", False):
        raise ValueError(
            f"pruning supports BERT-family encoders; {type(hf_model).__name__} "
            f"({config.model_type}) is a decoder or encoder-decoder model"
        )
    if not _has_bert_layout(encoder):
        raise ValueError(
            f"pruning supports BERT-family encoders; {type(hf_model).__name__} "
            f"({config.model_type}) has a different layer layout"
        )
    return encoder


def _has_bert_layout(encoder: nn.Module) -> bool:
    """BERT's module tree: ``encoder.layer[i]`` with ``attention.self.{query,key,value}``,
    ``attention.output.dense``, ``intermediate.dense`` and ``output.dense``."""
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        return False
    try:
        for layer in layers:
            attention = layer.attention
            modules = (
                attention.self.query,
                attention.self.key,
                attention.self.value,
                attention.output.dense,
                layer.intermediate.dense,
                layer.output.dense,
            )
            if not all(isinstance(module, nn.Linear) for module in modules):
                return False
            if not hasattr(attention, "prune_heads"):
                return False
    except AttributeError:
        return False
    return hasattr(encoder, "_prune_heads")


def encoder_layers(encoder: PreTrainedModel) -> nn.ModuleList:
    return encoder.encoder.layer


def present_heads(encoder: PreTrainedModel) -> list[list[int]]:
    """Per layer, the original indices of the heads not yet pruned (HF renumbers the remaining
    heads inside the weights but keeps original numbers in ``config.pruned_heads``)."""
    num_heads = encoder.config.num_attention_heads
    return [
        [h for h in range(num_heads) if h not in layer.attention.pruned_heads]
        for layer in encoder_layers(encoder)
    ]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def head_importance(model: Any, batches: Iterable[Batch], loss_fn: LossFn) -> torch.Tensor:
    """Gradient importance of every attention head (Michel et al., 2019), [layers, heads].

    A mask of ones per head scales each head's slice of the self-attention context (forward
    hooks, so it works with the eager and the SDPA attention alike); the importance of a head is
    |dLoss/dmask| summed over ``batches``, then L2-normalised within each layer as in the paper,
    which makes scores of different layers comparable for a global ranking. ``loss_fn(model,
    batch)`` returns a scalar loss. Heads already pruned are NaN.

    Dropout is off while scoring; weights, ``requires_grad`` flags and ``.grad`` are untouched
    (the gradient is taken with respect to the masks only) and the hooks are removed afterwards.
    """
    encoder = encoder_of(model)
    present = present_heads(encoder)
    head_size = encoder_layers(encoder)[0].attention.self.attention_head_size
    device = next(encoder.parameters()).device
    masks = [torch.ones(len(heads), device=device, requires_grad=True) for heads in present]
    totals = [torch.zeros(len(heads), device=device) for heads in present]
    handles = [
        layer.attention.self.register_forward_hook(_head_mask_hook(mask, head_size))
        for layer, mask in zip(encoder_layers(encoder), masks, strict=True)
    ]
    was_training = model.training
    model.eval()
    seen = 0
    try:
        with torch.enable_grad():
            for batch in batches:
                loss = loss_fn(model, _to_device(batch, device))
                grads = torch.autograd.grad(loss, masks)
                for total, grad in zip(totals, grads, strict=True):
                    total += grad.detach().abs()
                seen += 1
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if seen == 0:
        raise ValueError("head_importance needs at least one batch")
    scores = torch.full((len(present), encoder.config.num_attention_heads), float("nan"))
    for layer, (heads, total) in enumerate(zip(present, totals, strict=True)):
        scores[layer, heads] = (total / total.norm().clamp_min(1e-20)).float().cpu()
    return scores


def _head_mask_hook(mask: torch.Tensor, head_size: int) -> Callable[..., Any]:
    """A forward hook that multiplies head ``h``'s slice of the context by ``mask[h]``.

    BERT self-attention (eager and SDPA) returns ``(context [B, T, heads * head_size], probs)``;
    the heads are contiguous slices of the last axis.
    """

    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        context = output[0] if isinstance(output, tuple) else output
        shape = context.shape
        scale = mask.to(context.dtype).unsqueeze(1)  # [heads, 1]
        masked = (context.reshape(*shape[:-1], -1, head_size) * scale).reshape(shape)
        return (masked, *output[1:]) if isinstance(output, tuple) else masked

    return hook


def _to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def ffn_importance(model: Any) -> torch.Tensor:
    """Magnitude importance of every feed-forward neuron, [layers, intermediate size].

    Neuron ``i`` reads with row ``i`` of ``intermediate.dense`` (weight and bias) and writes with
    column ``i`` of ``output.dense``; the product of the two L2 norms bounds how much it can
    contribute, and is zero for a neuron that can contribute nothing.
    """
    encoder = encoder_of(model)
    rows = []
    with torch.no_grad():
        for layer in encoder_layers(encoder):
            up, down = layer.intermediate.dense, layer.output.dense
            read = up.weight.float()
            if up.bias is not None:
                read = torch.cat([read, up.bias.float().unsqueeze(1)], dim=1)
            rows.append((read.norm(dim=1) * down.weight.float().norm(dim=0)).cpu())
    widths = {len(row) for row in rows}
    if len(widths) != 1:
        raise ValueError(f"layers have different intermediate sizes {sorted(widths)}")
    return torch.stack(rows)


def prune_model(
    model: Any,
    head_importance: torch.Tensor,
    ffn_importance: torch.Tensor,
    heads_fraction: float,
    ffn_fraction: float,
) -> dict[str, Any]:
    """Remove the least important heads and FFN neurons in place; returns a report.

    Heads: the ``heads_fraction`` of the remaining heads with the lowest scores across all
    layers (at least one head stays in every layer), removed with HF's ``prune_heads`` so
    ``config.pruned_heads`` records them. FFN: the ``ffn_fraction`` of neurons with the lowest
    scores, the same number in every layer so that ``config.intermediate_size`` (set here)
    rebuilds the right shapes on ``from_pretrained``. Fractions are rounded down.
    """
    for name, fraction in (("heads_fraction", heads_fraction), ("ffn_fraction", ffn_fraction)):
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {fraction}")
    encoder = encoder_of(model)
    config = encoder.config
    present = present_heads(encoder)
    _check_shape("head_importance", head_importance, (len(present), config.num_attention_heads))
    _check_shape("ffn_importance", ffn_importance, (len(present), config.intermediate_size))
    parameters_before = count_parameters(model)
    intermediate_before = config.intermediate_size

    to_prune = select_heads(head_importance, present, heads_fraction)
    prune_heads(encoder, to_prune)
    kept = select_neurons(ffn_importance, ffn_fraction)
    for layer, index in zip(encoder_layers(encoder), kept, strict=True):
        layer.intermediate.dense = shrink_linear(layer.intermediate.dense, index, dim=0)
        layer.output.dense = shrink_linear(layer.output.dense, index, dim=1)
    config.intermediate_size = int(kept.shape[1])

    parameters_after = count_parameters(model)
    heads_per_layer = [len(heads) for heads in present_heads(encoder)]
    return {
        "parameters_before": parameters_before,
        "parameters_after": parameters_after,
        "parameters_removed_fraction": 1 - parameters_after / parameters_before,
        "heads_before": sum(len(heads) for heads in present),
        "heads_after": sum(heads_per_layer),
        "heads_per_layer": heads_per_layer,
        "heads_pruned": to_prune,
        "intermediate_size_before": intermediate_before,
        "intermediate_size_after": config.intermediate_size,
    }


def _check_shape(name: str, tensor: torch.Tensor, expected: tuple[int, int]) -> None:
    if tuple(tensor.shape) != expected:
        raise ValueError(f"{name} has shape {tuple(tensor.shape)}, the model needs {expected}")


def select_heads(
    importance: torch.Tensor, present: list[list[int]], fraction: float
) -> dict[int, list[int]]:
    """{layer: [original head indices]} of the ``fraction`` least important remaining heads,
    ranked globally, never emptying a layer."""
    candidates = sorted(
        (float(importance[layer, head]), layer, head)
        for layer, heads in enumerate(present)
        for head in heads
    )
    if any(score != score for score, _, _ in candidates):  # NaN on a head still present
        raise ValueError("head_importance is NaN for a head that is still present")
    target = int(fraction * len(candidates))
    remaining = [len(heads) for heads in present]
    chosen: dict[int, list[int]] = {}
    for _, layer, head in candidates:
        if target == 0:
            break
        if remaining[layer] > 1:
            chosen.setdefault(layer, []).append(head)
            remaining[layer] -= 1
            target -= 1
    return {layer: sorted(heads) for layer, heads in sorted(chosen.items())}


def prune_heads(encoder: PreTrainedModel, heads: dict[int, list[int]]) -> None:
    """HF's ``prune_heads``, keeping each rebuilt layer's dtype and ``requires_grad``.

    HF's ``prune_linear_layer`` always makes float32 layers with ``requires_grad=True``, which
    breaks a half-precision model (dtype mismatch in the next matmul) and unfreezes weights.
    """
    if not heads:
        return
    layers = encoder_layers(encoder)
    before = {i: _linear_state(_attention_linears(layers[i])) for i in heads}
    encoder.prune_heads(heads)
    for i, states in before.items():
        for linear, (dtype, flags) in zip(_attention_linears(layers[i]), states, strict=True):
            linear.to(dtype)
            for param, flag in zip(linear.parameters(), flags, strict=True):
                param.requires_grad_(flag)


def _attention_linears(layer: nn.Module) -> list[nn.Linear]:
    attention = layer.attention
    return [attention.self.query, attention.self.key, attention.self.value, attention.output.dense]


def _linear_state(linears: list[nn.Linear]) -> list[tuple[torch.dtype, list[bool]]]:
    return [(lin.weight.dtype, [p.requires_grad for p in lin.parameters()]) for lin in linears]


def select_neurons(importance: torch.Tensor, fraction: float) -> torch.Tensor:
    """[layers, kept] indices (ascending) of the most important neurons of each layer; the same
    count everywhere, at least one."""
    width = importance.shape[1]
    keep = max(1, width - int(fraction * width))
    top = importance.float().topk(keep, dim=1).indices
    return top.sort(dim=1).values


def shrink_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new ``nn.Linear`` with only the ``index`` outputs (``dim=0``) or inputs (``dim=1``) of
    ``linear``, same dtype, device and ``requires_grad``."""
    weight = linear.weight.detach()
    index = index.to(weight.device)
    new_weight = weight.index_select(dim, index)
    has_bias = linear.bias is not None
    out_features, in_features = new_weight.shape
    shrunk = nn.Linear(
        in_features, out_features, bias=has_bias, device=weight.device, dtype=weight.dtype
    )
    with torch.no_grad():
        shrunk.weight.copy_(new_weight)
        if has_bias:
            bias = linear.bias.detach()
            shrunk.bias.copy_(bias[index] if dim == 0 else bias)
    shrunk.weight.requires_grad_(linear.weight.requires_grad)
    if has_bias:
        shrunk.bias.requires_grad_(linear.bias.requires_grad)
    return shrunk
