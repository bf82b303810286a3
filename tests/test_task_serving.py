"""Every task's exported model in one Ray Serve app over real HTTP: each schema round-trips,
answers match the in-process predictor, and bad requests get a 4xx with a message (never a 500)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import serve_app, untrained_model_dir

TASKS = ["ner", "qa", "similarity", "summarization"]
GOOD = {
    "ner": ({"text": "Maria Lopez flew to Berlin."}, {"texts": ["Paris", "Acme Corp. hired Bo."]}),
    "qa": (
        {"question": "Where is the cat?", "context": "The cat sleeps on the red mat."},
        {"inputs": [{"question": "Who?", "context": "Ann met Bob."}] * 2},
    ),
    "similarity": (
        {"text": "A man plays guitar.", "text_pair": "A man is playing a guitar."},
        {"pairs": [{"text": "a", "text_pair": "b"}, {"text": "c d", "text_pair": "c d"}]},
    ),
    "summarization": (
        {"text": "The council approved the budget on Tuesday after a long debate."},
        {"texts": ["One short news story.", "Another story about the weather."]},
    ),
}
BAD = {
    "ner": [{"text": ""}, {"text": "x", "texts": ["y"]}, {"texts": []}, {"text": 3}],
    "qa": [
        {"question": "Who?"},
        {"question": " ", "context": "Ann met Bob."},
        {"inputs": [{"question": "Who?"}]},
        {"inputs": [{"question": "a", "context": "b", "extra": 1}]},
        {"question": "a", "context": "b", "inputs": []},
    ],
    "similarity": [
        {"text": "only one"},
        {"pairs": [{"text": "a"}]},
        {"pairs": []},
        {"text": "a", "text_pair": ""},
        {"pairs": [["a", "b"]]},
    ],
    "summarization": [{"text": "x" * 5001}, {"document": "x"}, {"texts": ["ok", "  "]}],
}
KEYS = {
    "ner": {"entities", "truncated"},
    "qa": {"answer", "start", "end", "score", "truncated"},
    "similarity": {"score", "truncated"},
    "summarization": {"summary", "truncated"},
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_base_model: Path, tiny_t5_model: Path) -> dict[str, Path]:
    """fp32 ONNX exports of untrained tiny models of every task (NER with its CRF)."""
    from raynlp.export.onnx import export_onnx

    root = tmp_path_factory.mktemp("task-serving")
    folders = {}
    for task in TASKS:
        base = tiny_t5_model if task == "summarization" else tiny_base_model
        model_dir = untrained_model_dir(task, base, root / task / "model")
        folders[task] = export_onnx(model_dir, root / task / "onnx")
    return folders


@pytest.fixture(scope="module")
def base_url(exported: dict[str, Path]) -> Iterator[str]:
    """All four models in one app (one deployment each) on a private Ray + Serve, default proxy
    ingress (test_serving covers direct ingress)."""
    models = [
        {"name": task, "path": str(folder), "min_replicas": 1, "max_replicas": 1,
         "replica_cpus": 0.25}  # four models on a 2-CPU machine
        for task, folder in exported.items()
    ]  # fmt: skip
    with serve_app({"models": models, "max_text_chars": 5000}, ingress="proxy") as base:
        yield base


def _post(url: str, body: Any) -> requests.Response:
    return requests.post(url, json=body, timeout=60)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("task", TASKS)
def test_task_endpoint_round_trip(task: str, base_url: str, exported: dict[str, Path]) -> None:
    from raynlp.serving.predictor import OnnxPredictor

    single, several = GOOD[task]
    url = f"{base_url}/v1/models/{task}/predict"
    response = _post(url, single)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == KEYS[task], answer

    local = OnnxPredictor(exported[task])
    expected = local.predict([single])[0]  # a single-item body is the item itself
    for key in KEYS[task] - {"score", "entities"}:
        assert answer[key] == expected[key], (key, answer, expected)
    if "score" in answer:
        assert answer["score"] == pytest.approx(expected["score"], abs=1e-4)
    if task == "qa":
        context = single["context"]
        assert answer["answer"] == context[answer["start"] : answer["end"]]
    if task == "ner":
        for entity in answer["entities"]:
            assert single["text"][entity["start"] : entity["end"]] == entity["text"]

    response = _post(url, several)
    assert response.status_code == 200, response.text
    answers = response.json()
    assert isinstance(answers, list) and len(answers) == len(next(iter(several.values())))
    assert all(set(a) == KEYS[task] for a in answers)

    card = requests.get(f"{base_url}/v1/models/{task}", timeout=30).json()
    assert (card["task"], card["source"], card["variant"]) == (task, "deployment", "onnx_fp32")
    listed = requests.get(f"{base_url}/v1/models", timeout=30).json()["models"]
    assert [m["name"] for m in listed] == TASKS


@pytest.mark.timeout(600)
@pytest.mark.parametrize("task", TASKS)
def test_task_endpoint_rejects_bad_requests(task: str, base_url: str) -> None:
    url = f"{base_url}/v1/models/{task}/predict"
    for body in BAD[task]:
        response = _post(url, body)
        assert response.status_code == 422, (body, response.status_code, response.text)
        message = response.json()["message"]
        assert message and "Traceback" not in message, message
    response = requests.post(
        url, data=b"\xff\xfe not json", timeout=30, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text  # not UTF-8: cannot even be parsed
    assert "UTF-8" in response.json()["message"], response.text
    assert _post(url, GOOD[task][0]).status_code == 200  # the replica still answers


def test_cli_predict_in_process_takes_json_items(exported: dict[str, Path], capsys) -> None:
    """`raynlp predict --model DIR` reads plain text or JSON items and prints one line each."""
    import json

    from raynlp.cli import main as raynlp

    item = {"question": "Where is the cat?", "context": "The cat sleeps on the mat."}
    assert raynlp(["predict", "--model", str(exported["qa"]), json.dumps(item)]) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert line["question"] == item["question"]
    assert line["answer"] == item["context"][line["start"] : line["end"]]

    assert raynlp(["predict", "--model", str(exported["ner"]), "Ann Lee met Bo in Rome."]) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert line["text"] == "Ann Lee met Bo in Rome." and isinstance(line["entities"], list)


def test_cli_lists_the_five_tasks(capsys) -> None:
    from raynlp.cli import main as raynlp

    assert raynlp(["tasks"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names == ["classification", "ner", "qa", "similarity", "summarization"]


@pytest.mark.timeout(600)
def test_a_model_that_cannot_load_never_takes_traffic(
    base_url: str, exported: dict[str, Path], tmp_path: Path
) -> None:
    """A replica is ready only after loading its model and a warm-up inference: a corrupt
    model fails its deployment (with the load error), and the running app is unaffected."""
    import shutil

    from ray import serve

    from raynlp.serving.app import build_app

    broken = tmp_path / "broken"
    shutil.copytree(exported["similarity"], broken)
    for onnx in broken.glob("*.onnx"):
        onnx.write_bytes(b"this is not an ONNX graph")
    app = build_app({"models": [{"name": "broken", "path": str(broken), "replica_cpus": 0.25}]})
    try:
        with pytest.raises(RuntimeError, match="Deploying application broken failed"):
            serve.run(app, name="broken", route_prefix="/broken")
        status = serve.status().applications["broken"].deployments["Model_broken"]
        assert status.replica_states.get("RUNNING", 0) == 0, status
        assert "onnx" in status.message.lower() or "protobuf" in status.message.lower(), status
    finally:
        serve.delete("broken")
    answer = _post(f"{base_url}/v1/models/similarity/predict", GOOD["similarity"][0])
    assert answer.status_code == 200, answer.text
