"""The task registry: one name → one task module."""

from __future__ import annotations

from raynlp.tasks.base import Task
from raynlp.tasks.classification import SequenceClassification

_REGISTRY: dict[str, Task] = {
    "classification": SequenceClassification(),
}


def task_names() -> list[str]:
    return sorted(_REGISTRY)


def get_task(name: str) -> Task:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; allowed: {', '.join(task_names())}") from None


__all__ = ["Task", "get_task", "task_names"]
