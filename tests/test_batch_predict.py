"""`raynlp predict --input --output`: offline batch prediction of a JSONL file with Ray Data.

Answers come back one per input item, in input order, equal to the in-process predictor's;
bad files fail before any inference (and before Ray starts, from the CLI) naming their lines.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import untrained_model_dir

from raynlp.cli import main as raynlp
from raynlp.serving.batch import (
    InputFileError,
    LineError,
    check_input_file,
    parse_line,
    plan_blocks,
    read_lines,
)

TASKS = ["classification", "qa"]  # the "text" and "qa" request kinds
WORDS = ["the", "a", "movie", "film", "great", "boring", "fun", "plot", "Zoë", "café", "東京"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, tiny_base_model: Path) -> dict[str, Path]:
    """fp32 ONNX exports of untrained tiny models (classification, QA)."""
    from raynlp.export.onnx import export_onnx

    root = tmp_path_factory.mktemp("batch-predict")
    return {
        task: export_onnx(
            untrained_model_dir(task, tiny_base_model, root / task / "model"), root / task / "onnx"
        )
        for task in TASKS
    }


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """One private 2-CPU Ray for the module's Ray tests, shut down afterwards."""
    from raynlp.runtime import ray_session

    with ray_session(num_cpus=2):
        yield


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the CLI tries to start or join Ray."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Ray was started for a file that cannot be predicted")

    monkeypatch.setattr("raynlp.runtime.ray_session", refuse)


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 25)))


def _assert_same(got: Any, expected: Any) -> None:
    """Equal, with floats to 1e-4 (batches are padded differently than one in-process call)."""
    if isinstance(expected, float):
        assert got == pytest.approx(expected, abs=1e-4)
    elif isinstance(expected, dict):
        assert set(got) == set(expected), (got, expected)
        for key, value in expected.items():
            _assert_same(got[key], value)
    elif isinstance(expected, list):
        assert len(got) == len(expected)
        for got_item, expected_item in zip(got, expected, strict=True):
            _assert_same(got_item, expected_item)
    else:
        assert got == expected


# --- input lines: no Ray ----------------------------------------------------------------------


def test_parse_line_kinds_and_forms() -> None:
    assert parse_line("just words", "text") == ({"text": "just words"}, {"text": "just words"})
    assert parse_line('"a JSON string"', "text")[1] == {"text": "a JSON string"}
    item, request = parse_line('{"id": 7, "text": "keep my id"}', "text")
    assert item == {"id": 7, "text": "keep my id"} and request == {"text": "keep my id"}
    assert parse_line('{"text": "a", "text_pair": "b"}', "pair")[1] == {
        "text": "a",
        "text_pair": "b",
    }
    assert parse_line('{"question": "Who?", "context": "Ann."}', "qa")[1]["question"] == "Who?"


@pytest.mark.parametrize(
    ("line", "kind", "message"),
    [
        ('{"text": "a"', "text", "not valid JSON"),
        ('{"text": ""}', "text", '"text" must not be empty'),
        ('{"text": "   "}', "text", '"text" must not be empty'),
        ('{"text": 3}', "text", '"text" must be a string, not int'),
        ('{"txt": "a"}', "text", 'missing "text"'),
        ('{"text": "a"}', "pair", 'missing "text_pair"'),
        ("plain text", "qa", 'this model needs a JSON object {"question": ..., "context": ...}'),
        ('{"question": "Who?"}', "qa", 'missing "context"'),
        ('{"text": "\\ud800"}', "text", '"text" is not valid Unicode'),
    ],
)
def test_parse_line_rejects(line: str, kind: str, message: str) -> None:
    with pytest.raises(LineError) as error:
        parse_line(line, kind)
    assert str(error.value).startswith(message), str(error.value)


def test_check_names_every_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'good\n{"text": ""}\n\nfine\n{"text": "a"\nok\n\xff\xfe\n')
    with pytest.raises(InputFileError) as error:
        check_input_file(path, "text")
    message = str(error.value)
    assert 'line 2: "text" must not be empty' in message
    assert "line 5: not valid JSON" in message
    assert "line 7: not UTF-8" in message
    assert "line 1" not in message and "line 4" not in message and "Traceback" not in message


def test_blocks_read_back_every_line_with_its_number(tmp_path: Path) -> None:
    """Blocks split on \\n only (a U+2028 inside a JSON string is not a line break), skip blank
    lines, keep line numbers, and cover the file exactly once, in order."""
    rng = random.Random(0)
    lines = []
    for number in range(1, 301):
        if number % 37 == 0:
            lines.append("  ")
        elif number % 5 == 0:
            lines.append(
                json.dumps({"id": number, "text": "a\u2028b " + _sentence(rng)}, ensure_ascii=False)
            )
        else:
            lines.append(_sentence(rng))
    path = tmp_path / "in.jsonl"
    path.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode())

    check = check_input_file(path, "text")
    assert (check.items, check.blank_lines) == (292, 8)
    for rows in (1, 16, 40, 1000):
        got = read_lines(_columns(plan_blocks(check, rows)), str(path))
        expected = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
        assert got["line_number"].tolist() == [number for number, _ in expected]
        assert got["line"].tolist() == [line for _, line in expected]


def _columns(blocks: list[dict[str, int]]) -> dict[str, Any]:
    import numpy as np

    return {key: np.asarray([block[key] for block in blocks]) for key in blocks[0]}


# --- the CLI's checks: before Ray -------------------------------------------------------------


def test_cli_bad_line_fails_before_ray(
    exported: dict[str, Path], tmp_path: Path, capsys, no_ray
) -> None:
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text('{"question": "Who?", "context": "Ann met Bo."}\nWho is Ann?\n')
    args = ["predict", "--model", str(exported["qa"]), "--input", str(source)]
    assert raynlp([*args, "--output", str(target)]) == 2
    err = capsys.readouterr().err
    assert "line 2: this model needs a JSON object" in err and "Traceback" not in err
    assert not target.exists()


def test_cli_missing_input_fails_before_ray(
    exported: dict[str, Path], tmp_path: Path, capsys, no_ray
) -> None:
    missing = tmp_path / "nope.jsonl"
    args = ["predict", "--model", str(exported["classification"]), "--input", str(missing)]
    assert raynlp([*args, "--output", str(tmp_path / "out.jsonl")]) == 2
    assert f"input file {missing} does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "in.jsonl", "--output", "out.jsonl"], "--input needs --model"),
        (["--model", "m", "--input", "in.jsonl"], "--input needs --output"),
        (["--model", "m", "--output", "out.jsonl"], "--output is for the predictions"),
        (["--model", "m", "--input", "a", "--output", "b", "--batch-size", "0"], "must be >= 1"),
        (["--model", "m", "--input", "a", "--output", "b", "text"], "not both"),
    ],
)
def test_cli_usage_errors(args: list[str], message: str, capsys, no_ray) -> None:
    with pytest.raises(SystemExit) as exit_:
        raynlp(["predict", *args])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


# --- on Ray ------------------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_cli_classification_round_trip(
    exported: dict[str, Path], ray_cluster: None, tmp_path: Path, capsys
) -> None:
    """Plain text, JSON strings and objects (ids kept), blank lines skipped; 2 actors, many
    blocks; answers in input order and equal to the in-process predictor's."""
    from raynlp.serving.predictor import OnnxPredictor

    rng = random.Random(1)
    lines, items = [], []
    for number in range(300):
        text = _sentence(rng)
        if number % 3 == 0:
            lines.append(text)
            items.append({"text": text})
        elif number % 3 == 1:
            lines.append(json.dumps(text))
            items.append({"text": text})
        else:
            lines.append(json.dumps({"id": number, "text": text}))
            items.append({"id": number, "text": text})
        if number % 50 == 0:
            lines.append("")
    source, target = tmp_path / "in.jsonl", tmp_path / "out" / "predictions.jsonl"
    source.write_text("\n".join(lines) + "\n")

    model = str(exported["classification"])
    args = ["predict", "--model", model, "--input", str(source), "--output", str(target)]
    assert raynlp([*args, "--batch-size", "16", "--concurrency", "2"]) == 0
    summary = capsys.readouterr().out
    assert "predicted 300 rows in" in summary and "rows/s, 2 actors" in summary

    got = [json.loads(line) for line in target.read_text().splitlines()]
    assert [{k: row[k] for k in item} for row, item in zip(got, items, strict=True)] == items
    expected = OnnxPredictor(model).predict([{"text": item["text"]} for item in items])
    _assert_same(got, [{**item, **answer} for item, answer in zip(items, expected, strict=True)])
    assert not (target.parent / "predictions.jsonl.partial").exists()


@pytest.mark.timeout(240)
def test_predict_file_qa_in_order(exported: dict[str, Path], ray_cluster: None, tmp_path: Path):
    from raynlp.serving.batch import default_concurrency, predict_file
    from raynlp.serving.predictor import OnnxPredictor

    assert (default_concurrency(1), default_concurrency(2), default_concurrency(4)) == (2, 1, 1)
    rng = random.Random(2)
    items = []
    for number in range(40):
        context = _sentence(rng) + " Ann met Bo in Rome."
        items.append({"id": f"q{number}", "question": f"Who met Bo? {number}", "context": context})
    source, target = tmp_path / "qa.jsonl", tmp_path / "qa-out.jsonl"
    source.write_text("".join(json.dumps(item) + "\n" for item in items))

    model = exported["qa"]
    summary = predict_file(model, source, target, batch_size=8, concurrency=1)
    assert summary["rows"] == 40 and summary["concurrency"] == 1 and summary["rows_per_s"] > 0

    got = [json.loads(line) for line in target.read_text().splitlines()]
    requests = [{"question": i["question"], "context": i["context"]} for i in items]
    # Same batches as the actors (blocks are whole 16-item granules, so batches of 8 line up):
    # the QA score's softmax spans the padded window, so it depends on the batch's padding.
    local = OnnxPredictor(model)
    expected = [answer for i in range(0, 40, 8) for answer in local.predict(requests[i : i + 8])]
    _assert_same(got, [{**item, **answer} for item, answer in zip(items, expected, strict=True)])
    for row in got:
        assert row["answer"] == row["context"][row["start"] : row["end"]]
