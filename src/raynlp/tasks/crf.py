"""A linear-chain CRF over word-level tag scores, and the token classifier that carries one.

Kept small and explicit rather than taken from a package so that it works under DeepSpeed
ZeRO-3: both the loss and the decoding run inside ``CRF.forward``, so ZeRO's hooks gather the
transition weights before either touches them. Decoding is one numpy Viterbi, used by the
PyTorch model and by the ONNX path alike (the ONNX graph computes the tag scores, the
transitions are read from ``crf.safetensors`` beside it), so both decode identically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

CRF_FILE = "crf.safetensors"


def viterbi(
    emissions: np.ndarray, start: np.ndarray, end: np.ndarray, transitions: np.ndarray
) -> list[int]:
    """Best tag path for one sequence. ``emissions`` (W, C); ``transitions[i, j]`` = i → j."""
    if len(emissions) == 0:
        return []
    score = start + emissions[0]
    history = []
    for step in emissions[1:]:
        candidates = score[:, None] + transitions  # (from, to)
        history.append(candidates.argmax(axis=0))
        score = candidates.max(axis=0) + step
    best = [int((score + end).argmax())]
    for backpointers in reversed(history):
        best.append(int(backpointers[best[-1]]))
    return best[::-1]


class CRF(nn.Module):
    """``forward(emissions, mask, tags)`` → mean negative log-likelihood;
    ``forward(emissions, mask)`` → best paths (B, W), -1 where masked."""

    def __init__(self, num_tags: int) -> None:
        super().__init__()
        self.num_tags = num_tags
        self.start_transitions = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.end_transitions = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags).uniform_(-0.1, 0.1))

    def forward(
        self, emissions: torch.Tensor, mask: torch.Tensor, tags: torch.Tensor | None = None
    ) -> torch.Tensor:
        emissions = emissions.float()
        if tags is not None:
            return (
                self.log_partition(emissions, mask) - self.path_score(emissions, tags, mask)
            ).mean()
        return self.decode(emissions, mask)

    def path_score(
        self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        mask = mask.float()
        start, end, trans = (
            self.start_transitions.float(),
            self.end_transitions.float(),
            self.transitions.float(),
        )
        emitted = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (B, W)
        score = start[tags[:, 0]] + emitted[:, 0]
        steps = trans[tags[:, :-1], tags[:, 1:]] + emitted[:, 1:]
        score = score + (steps * mask[:, 1:]).sum(dim=1)
        last = mask.long().sum(dim=1) - 1
        return score + end[tags.gather(1, last.unsqueeze(1)).squeeze(1)]

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        trans = self.transitions.float()
        alpha = self.start_transitions.float() + emissions[:, 0]
        for t in range(1, emissions.shape[1]):
            nxt = torch.logsumexp(alpha.unsqueeze(2) + trans + emissions[:, t].unsqueeze(1), dim=1)
            alpha = torch.where(mask[:, t].unsqueeze(1).bool(), nxt, alpha)
        return torch.logsumexp(alpha + self.end_transitions.float(), dim=1)

    def numpy_params(self) -> dict[str, np.ndarray]:
        return {
            "start_transitions": self.start_transitions.detach().float().cpu().numpy(),
            "end_transitions": self.end_transitions.detach().float().cpu().numpy(),
            "transitions": self.transitions.detach().float().cpu().numpy(),
        }

    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(
            decode_batch(to_np(emissions), to_np(mask), self.numpy_params())
        ).to(emissions.device)


def to_np(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach()
    return (tensor.float() if tensor.is_floating_point() else tensor).cpu().numpy()


def decode_batch(
    emissions: np.ndarray, mask: np.ndarray, params: dict[str, np.ndarray]
) -> np.ndarray:
    """Viterbi paths of a batch, (B, W) int64 padded with -1."""
    paths = np.full(mask.shape, -1, dtype=np.int64)
    for b in range(len(emissions)):
        length = int(mask[b].sum())
        path = viterbi(
            emissions[b, :length],
            params["start_transitions"],
            params["end_transitions"],
            params["transitions"],
        )
        paths[b, :length] = path
    return paths


def pack_words(
    scores: torch.Tensor, word_starts: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gather the first-piece positions of every word into a left-aligned (B, W) layout.

    Returns (index (B, W) into the token axis, mask (B, W), the gathered ``scores``).
    A row with no word keeps one masked-on position (the CRF needs a first step).
    """
    starts = word_starts == 1
    counts = starts.long().sum(dim=1)
    width = max(int(counts.max()), 1)
    order = torch.argsort((~starts).long(), dim=1, stable=True)[:, :width]
    mask = torch.arange(width, device=scores.device).unsqueeze(0) < counts.unsqueeze(1)
    mask[:, 0] = True
    index = order if scores.dim() == 2 else order.unsqueeze(2).expand(-1, -1, scores.shape[2])
    return order, mask, scores.gather(1, index)


class CRFTokenClassifier(nn.Module):
    """A Hugging Face token classifier whose word-level tag scores feed a CRF.

    ``save_pretrained`` writes a standard token-classification folder (loadable and exportable
    by transformers/Optimum without this class) plus ``crf.safetensors`` with the transitions.
    """

    def __init__(self, encoder: nn.Module, num_tags: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.crf = CRF(num_tags)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        word_starts: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        logits = self.encoder(**kwargs).logits
        order, mask, emissions = pack_words(logits, word_starts)
        if labels is not None:
            tags = labels.gather(1, order).clamp(min=0)
            return {"loss": self.crf(emissions, mask, tags), "logits": logits}
        return {"logits": logits, "crf_tags": self.crf(emissions, mask)}

    def save_pretrained(self, directory: str) -> None:
        from safetensors.torch import save_file

        self.encoder.save_pretrained(directory)
        save_file(
            {k: v.detach().float().cpu().contiguous() for k, v in self.crf.state_dict().items()},
            str(Path(directory) / CRF_FILE),
        )

    @classmethod
    def from_pretrained(cls, directory: str) -> CRFTokenClassifier:
        from safetensors.torch import load_file
        from transformers import AutoModelForTokenClassification

        encoder = AutoModelForTokenClassification.from_pretrained(directory)
        model = cls(encoder, encoder.config.num_labels)
        model.crf.load_state_dict(load_file(str(Path(directory) / CRF_FILE)))
        return model


class OnnxCRFTagger:
    """An ONNX Runtime token classifier + the saved transitions: same outputs as the PyTorch one."""

    def __init__(self, ort_model: Any, directory: str) -> None:
        from safetensors.numpy import load_file

        self.ort_model = ort_model
        self.params = load_file(str(Path(directory) / CRF_FILE))

    def __call__(self, word_starts: torch.Tensor, **inputs: Any) -> dict[str, torch.Tensor]:
        logits = torch.as_tensor(self.ort_model(**inputs).logits)
        _, mask, emissions = pack_words(logits, word_starts)
        paths = decode_batch(to_np(emissions), to_np(mask), self.params)
        return {"logits": logits, "crf_tags": torch.from_numpy(paths)}
