"""Read text data into a list of row dicts.

Formats: CSV, TSV, JSON lines, JSON, Parquet, CoNLL columns (token classification) and SQuAD v1.1
JSON (extractive question answering). ``read_rows`` is the one entry point; ``read_conll`` and
``read_squad`` read those two formats directly.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import random
import re
from pathlib import Path
from typing import Any

from raynlp.data.paths import resolve_data_path

Row = dict[str, Any]

__all__ = ["read_conll", "read_rows", "read_squad", "split_rows", "write_jsonl"]

FORMATS = ("csv", "tsv", "jsonl", "json", "parquet", "conll", "squad")
_SUFFIX_FORMATS = {
    "csv": "csv",
    "tsv": "tsv",
    "jsonl": "jsonl",
    "json": "json",
    "parquet": "parquet",
    "conll": "conll",
    "iob": "conll",
    "txt": "conll",
}
_DOCSTART = "-DOCSTART-"
_COLUMN_SEPARATOR = re.compile(r"[ \t]+")


def _format_of(path: Path, declared: str) -> str:
    if declared != "auto":
        if declared not in FORMATS:
            raise ValueError(f"unknown data format {declared!r}; use one of {', '.join(FORMATS)}")
        return declared
    suffixes = [s for s in path.suffixes if s != ".gz"]
    suffix = suffixes[-1].lstrip(".").lower() if suffixes else ""
    if suffix not in _SUFFIX_FORMATS:
        raise ValueError(
            f"cannot tell the format of {path.name}; set data.format to one of {', '.join(FORMATS)}"
        )
    return _SUFFIX_FORMATS[suffix]


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def read_rows(value: str, data_format: str = "auto") -> list[Row]:
    """Read every row of a data file named in a config (a path or ``sample://NAME``).

    ``data_format`` is ``auto`` (from the suffix: .csv .tsv .jsonl .json .parquet; .conll .iob
    .txt are CoNLL; a .json holding SQuAD articles is SQuAD; each may end in .gz) or a format name.
    """
    path = resolve_data_path(value)
    kind = _format_of(path, data_format)
    if kind == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if kind == "conll":
        return _conll_rows(path)
    with _open_text(path) as handle:
        if kind in ("csv", "tsv"):
            delimiter = "\t" if kind == "tsv" else ","
            quoting = csv.QUOTE_NONE if kind == "tsv" else csv.QUOTE_MINIMAL
            return list(csv.DictReader(handle, delimiter=delimiter, quoting=quoting))
        if kind == "jsonl":
            return [json.loads(line) for line in handle if line.strip()]
        data = json.load(handle)
    if kind == "squad" or _looks_like_squad(data):
        return _squad_rows(data, path)
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        return data["data"]
    if not isinstance(data, list):
        raise ValueError(f"{path.name}: a .json data file must hold a list of rows")
    return data


# --- CoNLL ------------------------------------------------------------------------------------


def read_conll(value: str | os.PathLike[str]) -> list[Row]:
    """Read a CoNLL column file: one ``{"tokens": [...], "ner_tags": [...]}`` row per sentence.

    Each non-blank line is one token: whitespace-separated columns (tabs or spaces), the token
    first and its tag last (``token POS chunk NER`` or ``token TAG``). Blank lines end
    sentences; ``-DOCSTART-`` lines are skipped. A line with a single column is an error.
    """
    return _conll_rows(resolve_data_path(os.fspath(value)))


def _conll_rows(path: Path) -> list[Row]:
    rows: list[Row] = []
    tokens: list[str] = []
    tags: list[str] = []

    def end_sentence() -> None:
        if tokens:
            rows.append({"tokens": list(tokens), "ner_tags": list(tags)})
            tokens.clear()
            tags.clear()

    with _open_text(path) as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.strip(" \t\r\n")
            if number == 1:
                line = line.lstrip("\ufeff")
            if not line:
                end_sentence()
                continue
            columns = _COLUMN_SEPARATOR.split(line)
            if columns[0] == _DOCSTART:
                end_sentence()
                continue
            if len(columns) < 2:
                raise ValueError(
                    f"{path}: line {number}: expected a token and a tag separated by whitespace "
                    f"(token first, tag last), got {line!r}"
                )
            tokens.append(columns[0])
            tags.append(columns[-1])
    end_sentence()
    return rows


# --- SQuAD ------------------------------------------------------------------------------------


def read_squad(value: str | os.PathLike[str]) -> list[Row]:
    """Read SQuAD v1.1 JSON: one row per question, with every annotated answer.

    Rows are ``{"id", "title", "question", "context", "answers": {"text": [...],
    "answer_start": [...]}}``; each answer must be found at its ``answer_start`` in the context.
    """
    path = resolve_data_path(os.fspath(value))
    with _open_text(path) as handle:
        data = json.load(handle)
    return _squad_rows(data, path)


def _looks_like_squad(data: Any) -> bool:
    articles = data.get("data") if isinstance(data, dict) else None
    return (
        isinstance(articles, list)
        and bool(articles)
        and all(isinstance(a, dict) and isinstance(a.get("paragraphs"), list) for a in articles)
    )


def _squad_rows(data: Any, path: Path) -> list[Row]:
    if not _looks_like_squad(data):
        raise ValueError(
            f"{path}: not SQuAD JSON: expected {{'data': [{{'title', 'paragraphs': [...]}}]}}"
        )
    rows: list[Row] = []
    for a, article in enumerate(data["data"]):
        title = str(article.get("title", ""))
        for p, paragraph in enumerate(article["paragraphs"]):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            context = paragraph.get("context") if isinstance(paragraph, dict) else None
            questions = paragraph.get("qas") if isinstance(paragraph, dict) else None
            if not isinstance(context, str) or not isinstance(questions, list):
                raise ValueError(f"{where}: a paragraph needs a 'context' string and a 'qas' list")
            for q, qa in enumerate(questions):
                if not isinstance(qa, dict) or "id" not in qa or "question" not in qa:
                    raise ValueError(f"{where}.qas[{q}]: a question needs an 'id' and a 'question'")
                rows.append(
                    {
                        "id": str(qa["id"]),
                        "title": title,
                        "question": str(qa["question"]),
                        "context": context,
                        "answers": _squad_answers(qa, context, path),
                    }
                )
    return rows


def _squad_answers(qa: dict[str, Any], context: str, path: Path) -> dict[str, list[Any]]:
    qid = str(qa["id"])
    answers = qa.get("answers", [])
    if not isinstance(answers, list):
        raise ValueError(f"{path}: question {qid!r}: 'answers' must be a list")
    texts: list[str] = []
    starts: list[int] = []
    for answer in answers:
        text = answer.get("text") if isinstance(answer, dict) else None
        start = answer.get("answer_start") if isinstance(answer, dict) else None
        if not isinstance(text, str) or not isinstance(start, int) or isinstance(start, bool):
            raise ValueError(
                f"{path}: question {qid!r}: each answer needs a 'text' string and an integer "
                f"'answer_start', got {answer!r}"
            )
        found = context[start : start + len(text)] if start >= 0 else ""
        if found != text:
            raise ValueError(
                f"{path}: question {qid!r}: answer {text!r} is not at answer_start {start} "
                f"of the context (found {found!r})"
            )
        texts.append(text)
        starts.append(start)
    return {"text": texts, "answer_start": starts}


# --- splitting and writing --------------------------------------------------------------------


def split_rows(rows: list[Row], validation_share: float, seed: int) -> tuple[list[Row], list[Row]]:
    """Shuffle with a fixed seed and hold out ``validation_share`` of the rows (80/20 default)."""
    if len(rows) < 2:
        raise ValueError(
            f"need at least 2 rows to split into train and validation, got {len(rows)}"
        )
    shuffled = list(rows)
    random.Random(seed).shuffle(shuffled)
    n_validation = min(len(rows) - 1, max(1, round(len(rows) * validation_share)))
    return shuffled[n_validation:], shuffled[:n_validation]


def write_jsonl(rows: list[Row], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
