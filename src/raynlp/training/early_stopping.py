"""Early stopping on a validation metric: patience and min-delta, state saved in checkpoints."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from raynlp.config import JobConfig


@dataclass
class EarlyStopping:
    metric: str
    mode: str = "max"
    patience: int = 2
    min_delta: float = 0.0
    enabled: bool = True
    best: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped_epoch: int | None = None

    @classmethod
    def from_config(cls, config: JobConfig) -> EarlyStopping:
        stopping = config.training.early_stopping
        metric, mode = config.watched_metric
        return cls(metric, mode, stopping.patience, stopping.min_delta, stopping.enabled)

    def improves(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def update(self, metrics: dict[str, Any], epoch: int) -> bool:
        """Record one epoch's validation metrics; True when training should stop now."""
        if self.metric not in metrics:
            raise KeyError(
                f"early stopping watches {self.metric!r} but validation gave "
                f"{sorted(k for k, v in metrics.items() if isinstance(v, int | float))}"
            )
        value = float(metrics[self.metric])
        if self.improves(value):
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        if self.enabled and self.bad_epochs >= self.patience:
            self.stopped_epoch = epoch
        return self.stopped_epoch is not None

    def state(self) -> dict[str, Any]:
        return asdict(self)

    def restore(self, state: dict[str, Any] | None) -> None:
        for key in ("best", "best_epoch", "bad_epochs", "stopped_epoch"):
            if state and key in state:
                setattr(self, key, state[key])
