"""Seeing what training does: TensorBoard scalars (a Ray Train callback) and the learning curve."""

from __future__ import annotations

from numbers import Number
from pathlib import Path
from typing import Any

from ray.train import UserCallback


class TensorBoardCallback(UserCallback):
    """Writes every ``ray.train.report`` of rank 0 to TensorBoard: validation metrics, epoch
    train loss, throughput, peak memory, stage, per-block learning rates, and the step losses
    logged since the previous report. Runs in the Ray Train controller process."""

    def __init__(self, logdir: str | Path):
        self.logdir = str(logdir)
        self._writer: Any = None

    def __getstate__(self) -> dict[str, Any]:  # the writer stays with the process that made it
        return {"logdir": self.logdir, "_writer": None}

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any):
        from tensorboardX import SummaryWriter

        if not metrics:
            return
        if self._writer is None:
            self._writer = SummaryWriter(self.logdir)
        report, writer = metrics[0], self._writer
        step = int(report.get("step", 0))
        for curve_step, loss in report.get("loss_curve", []):
            writer.add_scalar("train/loss_step", loss, int(curve_step))
        for key, value in report.items():
            if isinstance(value, Number) and not isinstance(value, bool):
                group = "validation" if key.startswith("val_") else "train"
                writer.add_scalar(f"{group}/{key.removeprefix('val_')}", float(value), step)
        for block, rate in (report.get("lr") or {}).items():
            writer.add_scalar(f"lr/{block}", rate, step)
        writer.flush()


def plot_learning_curve(meta: dict[str, Any], metric: str, path: Path) -> Path:
    """Train loss (per logged step and per epoch) and the validation ``metric`` per epoch against
    optimizer steps, with stage boundaries, the best epoch and an early stop marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = meta["history"]
    figure, loss_axis = plt.subplots(figsize=(8, 4.5), dpi=110)
    curve = meta.get("curve") or []
    if curve:
        loss_axis.plot(
            [s for s, _ in curve], [v for _, v in curve], color="tab:blue", alpha=0.35, lw=1
        )
    steps = [h["step"] for h in history]
    loss_axis.plot(
        steps, [h["train_loss"] for h in history], "o-", color="tab:blue", label="train loss"
    )
    loss_axis.set_xlabel("optimizer step")
    loss_axis.set_ylabel("train loss", color="tab:blue")
    metric_axis = loss_axis.twinx()
    values = [h.get(f"val_{metric}") for h in history]
    metric_axis.plot(steps, values, "s-", color="tab:orange", label=f"validation {metric}")
    metric_axis.set_ylabel(f"validation {metric}", color="tab:orange")
    for index, stage in enumerate(meta.get("stages") or []):
        if index == 0 and stage["step"] == 0:
            continue
        loss_axis.axvline(stage["step"], color="gray", ls="--", lw=1)
        loss_axis.annotate(
            f"stage {stage['stage'] + 1}",
            (stage["step"], 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=8,
            color="gray",
        )
    stopping = meta.get("early_stopping") or {}
    best_epoch = stopping.get("best_epoch")
    for entry in history:
        if entry["epoch"] == best_epoch:
            metric_axis.plot(entry["step"], entry.get(f"val_{metric}"), "*", ms=14, color="tab:red")
    handles = loss_axis.get_legend_handles_labels()[0] + metric_axis.get_legend_handles_labels()[0]
    loss_axis.legend(handles=handles, loc="lower left", fontsize=8)
    title = f"{meta.get('name', 'run')}: best {metric} at epoch {best_epoch}"
    if stopping.get("stopped_epoch"):
        title += f", stopped early after epoch {stopping['stopped_epoch']}"
    loss_axis.set_title(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
