"""Where served models live: model cards (task, version, variant) and the multiplexed model store.

A store is a folder whose sub-folders are exported models; a sub-folder's name is its model id.
Ids are checked against :data:`~raynlp.serving.settings.MODEL_NAME` *before* any path is built,
and the resolved folder must sit directly in the store, so ``../x``, ``a/b``, ``%2e%2e`` or a
symlink-looking id can never reach outside it: any such id is simply an unknown model.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from raynlp.export.files import FOLDERS
from raynlp.serving.settings import valid_model_name
from raynlp.tasks import get_task
from raynlp.training.checkpoints import read_model_meta

VARIANT_OF_FOLDER = {folder: variant for variant, folder in FOLDERS.items()}
PICKLE_WEIGHTS = ("pytorch_model.bin", "tf_model.h5", "model.ckpt.index", "flax_model.msgpack")


class UnknownModel(LookupError):
    """No model of that name (also raised for ids that are not valid names)."""

    def __init__(self, name: str, known: list[str]) -> None:
        shown = name if valid_model_name(name) else "(invalid model id)"
        listed = ", ".join(known[:20]) or "none"
        super().__init__(f"unknown model '{shown}'; models: {listed}")


class ModelCard(BaseModel):
    """What ``GET /v1/models`` says about one model."""

    name: str
    task: str
    request_kind: str = Field(description="text, pair or qa: the shape of predict requests.")
    version: str
    variant: str = Field(description="The exported variant served (the export gate's choice).")
    labels: list[str] | None = None
    max_length: int | None = Field(None, description="Token window; longer inputs are cut.")
    source: str = Field(
        description="'deployment' (its own replicas), 'gateway' (inside the gateway replica) or "
        "'store' (multiplexed)."
    )


def check_servable(folder: Path) -> None:
    """Refuse model folders whose weights would be unpickled (serving loads no pickle)."""
    pickled = any((folder / name).exists() for name in PICKLE_WEIGHTS)
    safe = any(folder.glob("*.onnx")) or (folder / "model.safetensors").exists()
    if pickled and not safe:
        raise ValueError(
            f"{folder} holds pickled weights only; serving loads ONNX, TorchScript or "
            "safetensors (export the model with `raynlp export`)"
        )


def fingerprint(folder: Path) -> str:
    """A short version id that changes when the model files change."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    digest.update((folder / "raynlp.json").read_bytes())
    return digest.hexdigest()[:12]


def served_variant(folder: Path) -> str:
    """The export variant in ``folder``: the gate's choice when it is the export's serve dir."""
    resolved = folder.resolve()
    report_path = resolved.parent / "export_report.json"
    if report_path.is_file():
        try:
            report = json.loads(report_path.read_text())
        except json.JSONDecodeError:
            report = {}
        if Path(str(report.get("serve_dir", ""))).resolve() == resolved and report.get("chosen"):
            return str(report["chosen"])
    if resolved.name in VARIANT_OF_FOLDER:
        return VARIANT_OF_FOLDER[resolved.name]
    return "onnx" if any(resolved.glob("*.onnx")) else "pytorch_fp32"


def model_card(name: str, folder: Path, source: str, version: str | None = None) -> ModelCard:
    """Card of the model in ``folder``; raises FileNotFoundError when it holds no model."""
    meta = read_model_meta(folder)
    task = get_task(meta["task"])
    return ModelCard(
        name=name,
        task=meta["task"],
        request_kind=task.request_kind,
        version=version or fingerprint(folder),
        variant=served_variant(folder),
        labels=meta.get("labels"),
        max_length=meta.get("max_length"),
        source=source,
    )


class ModelStore:
    """The models of a store folder, addressed by id. The listing is cached for
    ``listing_ttl_s`` (a model copied into the store shows up within that time), so the
    gateway's per-request check does not read the folder every time."""

    def __init__(self, root: str | Path, listing_ttl_s: float = 2.0) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"model store {self.root} is not a folder")
        self.listing_ttl_s = listing_ttl_s
        self._listing: tuple[float, list[str]] | None = None

    def ids(self) -> list[str]:
        """Ids of the sub-folders that hold a raynlp model, sorted."""
        now = time.monotonic()
        if self._listing is None or now - self._listing[0] >= self.listing_ttl_s:
            found = sorted(
                path.name
                for path in self.root.iterdir()
                if valid_model_name(path.name) and (path / "raynlp.json").is_file()
            )
            self._listing = (now, found)
        return list(self._listing[1])

    def __contains__(self, model_id: str) -> bool:
        return valid_model_name(model_id) and model_id in self.ids()

    def resolve(self, model_id: str) -> Path:
        """The folder of ``model_id``; UnknownModel for anything else (never a path outside)."""
        if not valid_model_name(model_id):
            raise UnknownModel(model_id, self.ids())
        folder = self.root / model_id
        if folder.parent != self.root or not (folder / "raynlp.json").is_file():
            raise UnknownModel(model_id, self.ids())
        return folder

    def card(self, model_id: str) -> ModelCard:
        return model_card(model_id, self.resolve(model_id), "store")

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.root), "models": self.ids()}
