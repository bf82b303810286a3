"""The task registry: one name → one task module."""

from __future__ import annotations

from raynlp.tasks.base import InputSpec, Task
from raynlp.tasks.classification import SemanticSimilarity, SequenceClassification
from raynlp.tasks.question_answering import QuestionAnswering
from raynlp.tasks.summarization import Summarization
from raynlp.tasks.token_classification import TokenClassification

_REGISTRY: dict[str, Task] = {
    task.name: task
    for task in (
        SequenceClassification(),
        TokenClassification(),
        QuestionAnswering(),
        SemanticSimilarity(),
        Summarization(),
    )
}


def task_names() -> list[str]:
    return list(_REGISTRY)


def get_task(name: str) -> Task:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; allowed: {', '.join(task_names())}") from None


__all__ = ["InputSpec", "Task", "get_task", "task_names"]
