"""The Ray Serve layer: request schema rules in-process, the Serve config file, and a real Serve
app over loopback HTTP serving a tiny INT8 BERT classifier built by a fixture.

One private Ray cluster and one Serve instance are started for the whole module (~1 min on a
2-core machine) and shut down by the fixture.
"""

from __future__ import annotations

import importlib
import json
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
import torch
import yaml
from pydantic import ValidationError

from raynlp.config import ServeSection
from raynlp.serving.app import build_app, deployment_options, parse_app_args, predict_isolated
from raynlp.serving.schemas import AppArgs, PredictRequest, request_model, validation_message

REPO = Path(__file__).resolve().parents[1]
LABELS = ["negative", "positive"]
RAY_TIMEOUT_S = 300
# Limits used by the live app: small, so the limit tests send small bodies.
TEST_SECTION = ServeSection(
    max_batch_size=16,
    batch_wait_timeout_s=0.05,  # long enough that 16 concurrent requests share batches
    min_replicas=1,
    max_replicas=1,
    max_text_chars=400,
    max_items=8,
)


# ---------------------------------------------------------------------------- tiny model fixture


def _write_tiny_model(base: Path, model_dir: Path) -> None:
    """The tiny BERT of conftest with a (random) 2-class head, saved as a raynlp model folder."""
    from transformers import AutoTokenizer

    from raynlp.tasks import get_task

    torch.manual_seed(0)
    get_task("classification").build_model(str(base), LABELS, None).eval().save_pretrained(
        model_dir
    )
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(model_dir)
    meta = {
        "task": "classification",
        "labels": LABELS,
        "text_column": "text",
        "text_pair_column": None,
        "label_column": "label",
        "max_length": 64,
        "base_model": "tiny",
    }
    (model_dir / "raynlp.json").write_text(json.dumps(meta, indent=2))


@pytest.fixture(scope="module")
def tiny_int8_model(tmp_path_factory: pytest.TempPathFactory, tiny_base_model: Path) -> Path:
    """Folder of a tiny INT8 ONNX sentiment model exported the way `raynlp export` does it."""
    from raynlp.export.onnx import export_onnx, quantize_dynamic_int8

    root = tmp_path_factory.mktemp("tiny_serving")
    model_dir = root / "model"
    model_dir.mkdir()
    _write_tiny_model(tiny_base_model, model_dir)
    onnx_dir = export_onnx(model_dir, root / "onnx")
    return quantize_dynamic_int8(onnx_dir, root / "int8", "avx2")


@pytest.fixture(scope="module")
def predictor(tiny_int8_model: Path) -> Any:
    from raynlp.serving.predictor import OnnxPredictor

    return OnnxPredictor(tiny_int8_model, intra_op_threads=1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def serve_url(tiny_int8_model: Path) -> Iterator[str]:
    """Base URL of the app on a private Ray cluster; Serve and Ray are shut down afterwards."""
    import ray
    from ray import serve

    from raynlp.serving.app import run_app

    section = TEST_SECTION.model_copy(update={"port": _free_port()})
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run_app(tiny_int8_model, section)
        yield f"http://{section.host}:{section.port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def _post(url: str, body: Any) -> requests.Response:
    return requests.post(f"{url}/predict", json=body, timeout=30)


def _info(url: str) -> dict[str, Any]:
    response = requests.get(f"{url}/info", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _assert_prediction(answer: dict[str, Any]) -> None:
    assert set(answer) == {"label", "score", "scores", "truncated"}
    assert answer["label"] in LABELS
    assert set(answer["scores"]) == set(LABELS)
    assert answer["score"] == pytest.approx(max(answer["scores"].values()))
    assert sum(answer["scores"].values()) == pytest.approx(1.0, abs=1e-5)


def _assert_same(served: dict[str, Any], local: dict[str, Any]) -> None:
    assert served["label"] == local["label"]
    assert served["score"] == pytest.approx(local["score"], abs=1e-4)
    assert served["truncated"] == local["truncated"]


# ------------------------------------------------------------------ schema rules (no Ray, no model)


LIMITED = request_model(max_text_chars=10, max_items=3)


@pytest.mark.parametrize(
    ("body", "texts"),
    [({"text": "fine"}, ["fine"]), ({"texts": ["a", " b "]}, ["a", " b "])],
)
def test_request_accepts_text_or_texts(body: dict[str, Any], texts: list[str]) -> None:
    request = LIMITED.model_validate(body)
    assert request.all_texts() == texts
    assert request.is_single == ("text" in body)


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"text": ""}, "text", "empty"),
        ({"text": " \n\t"}, "text", "whitespace"),
        ({"text": "x" * 11}, "text", "limit is 10"),
        ({"texts": []}, "texts", "at least one"),
        ({"texts": ["a", "b", "c", "d"]}, "texts", "limit is 3"),
        ({"texts": ["ok", "  "]}, "texts", "item 1"),
        ({"texts": ["ok", "x" * 11]}, "texts", "item 1 has 11"),
        ({"text": 5}, "text", "valid string"),
        ({"texts": "abc"}, "texts", "valid list"),
        ({"texts": ["a", 1]}, "texts.1", "valid string"),
        ({"text": None}, "text", "null"),
        ({"text": "a\ud800b"}, "text", "unpaired surrogate at character 1"),
        ({"texts": ["ok", "\udfff"]}, "texts", "item 1 is not valid Unicode"),
        ({"text": "a", "texts": ["b"]}, "body", "exactly one"),
        ({}, "body", "exactly one"),
        ({"text": "a", "lang": "en"}, "lang", "Extra inputs"),
    ],
)
def test_request_rejects_with_field_and_reason(body: Any, field: str, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        LIMITED.model_validate(body)
    message = validation_message(caught.value)
    assert message.startswith(f"{field}: "), message
    assert words in message, message


def test_request_limits_are_per_model() -> None:
    assert LIMITED.max_text_chars == 10
    assert PredictRequest.max_text_chars == ServeSection().max_text_chars
    assert PredictRequest.model_validate({"text": "x" * 11}).text == "x" * 11
    assert LIMITED.model_json_schema()["title"] == "PredictRequest"


def test_app_args_from_section_round_trip() -> None:
    section = ServeSection(port=9001, max_items=5, min_replicas=2, max_replicas=3)
    args = AppArgs.from_section("some/dir", section)
    assert args.max_items == 5
    assert AppArgs.model_validate(args.builder_args()) == args
    options = deployment_options(args)
    assert options["autoscaling_config"] == {
        "min_replicas": 2,
        "max_replicas": 3,
        "target_ongoing_requests": 8.0,
    }
    assert options["max_ongoing_requests"] >= args.max_batch_size


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ({}, "model_dir: Field required"),
        ({"model_dir": "m", "port": 1}, "set it in http_options.port"),
        ({"model_dir": "m", "batch_size": 4}, "batch_size: Extra inputs"),
        ({"model_dir": "m", "min_replicas": 3, "max_replicas": 2}, "min_replicas (3)"),
    ],
)
def test_bad_builder_args_are_named(args: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match="invalid raynlp serve arguments") as caught:
        parse_app_args(args)
    assert words in str(caught.value)


def test_build_app_needs_a_model_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"raynlp\.json"):
        build_app({"model_dir": str(tmp_path)})


def test_one_bad_text_fails_only_itself(predictor: Any) -> None:
    texts = ["good", "bad \ud800 unicode", "a much longer text about the film"]
    results = predict_isolated(predictor, texts)
    assert isinstance(results[1], Exception)
    _assert_same(results[0], predictor.predict([texts[0]])[0])
    _assert_same(results[2], predictor.predict([texts[2]])[0])
    good = [texts[0], texts[2]]
    assert predict_isolated(predictor, good) == predictor.predict(good)


# ---------------------------------------------------------------------------- Serve config file


def test_serve_config_file_is_valid_for_ray_and_the_builder() -> None:
    from ray.serve.schema import ServeDeploySchema

    raw = yaml.safe_load((REPO / "serve" / "sentiment.yaml").read_text())
    config = ServeDeploySchema.model_validate(raw)
    assert config.http_options.host == "127.0.0.1"
    assert config.http_options.port == 8000
    [app] = config.applications
    assert app.route_prefix == "/"
    module_name, attr = app.import_path.split(":")
    assert getattr(importlib.import_module(module_name), attr) is build_app
    args = parse_app_args(app.args)
    assert args.model_dir == "runs/demo/export/serving"


@pytest.mark.parametrize("task", ["ner", "qa", "similarity", "summarization"])
def test_task_serve_configs_are_valid_and_coexist(task: str) -> None:
    """serve/<task>.yaml: valid for Ray and the builder, its own app name and route prefix."""
    from ray.serve.schema import ServeDeploySchema

    raw = yaml.safe_load((REPO / "serve" / f"{task}.yaml").read_text())
    [app] = ServeDeploySchema.model_validate(raw).applications
    assert (app.name, app.route_prefix) == (f"raynlp-{task}", f"/{task}")
    assert parse_app_args(app.args).model_dir == f"runs/{task}/export/serving"
    job = REPO / "jobs" / f"{task}.yaml"
    assert yaml.safe_load(job.read_text())["name"] == task  # `raynlp train` writes runs/<task>


def test_serve_calls_the_builder_with_config_args(tiny_int8_model: Path) -> None:
    """The builder works through the function `serve deploy`/`serve run` use to call it."""
    from ray.serve import Application
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    raw = yaml.safe_load((REPO / "serve" / "sentiment.yaml").read_text())
    args = {**raw["applications"][0]["args"], "model_dir": str(tiny_int8_model)}
    app = call_user_app_builder_with_args_if_necessary(build_app, args)
    assert isinstance(app, Application)


# ------------------------------------------------------------------- live Serve app over HTTP


@pytest.mark.timeout(RAY_TIMEOUT_S)
def test_health_and_info(serve_url: str, tiny_int8_model: Path) -> None:
    assert requests.get(f"{serve_url}/healthz", timeout=30).json() == {"status": "ok"}
    info = _info(serve_url)
    assert info["task"] == "classification"
    assert info["labels"] == LABELS
    assert Path(info["model_dir"]) == tiny_int8_model.resolve()
    assert info["base_model"] == "tiny"
    assert (info["max_text_chars"], info["max_items"]) == (400, 8)
    assert info["batching"]["max_batch_size"] == 16
    root = requests.get(f"{serve_url}/", timeout=30).json()
    assert {key: root[key] for key in ("task", "labels", "model_dir")} == {
        key: info[key] for key in ("task", "labels", "model_dir")
    }


@pytest.mark.timeout(RAY_TIMEOUT_S)
def test_single_text_matches_in_process_predictor(serve_url: str, predictor: Any) -> None:
    long_text = " ".join(["good"] * 70)  # > 64 tokens, < 400 characters
    for text in ["a wonderful, moving film", "dull and far too long", long_text]:
        response = _post(serve_url, {"text": text})
        assert response.status_code == 200, response.text
        answer = response.json()
        _assert_prediction(answer)
        # Sequential requests are batches of one, like the in-process call.
        _assert_same(answer, predictor.predict([text])[0])
    assert answer["truncated"] is True


@pytest.mark.timeout(RAY_TIMEOUT_S)
def test_list_of_texts_matches_in_process_predictor(serve_url: str, predictor: Any) -> None:
    texts = ["great", "terrible acting", "I would watch it again tomorrow", "meh", "great"]
    response = _post(serve_url, {"texts": texts})
    assert response.status_code == 200, response.text
    answers = response.json()
    assert isinstance(answers, list) and len(answers) == len(texts)
    for answer in answers:
        _assert_prediction(answer)
    # One request's texts form one batch; dynamic INT8 depends on the batch, so compare alike.
    for served, local in zip(answers, predictor.predict(texts), strict=True):
        _assert_same(served, local)
    assert answers[0] == answers[4]


@pytest.mark.timeout(RAY_TIMEOUT_S)
def test_concurrent_requests_share_batches(serve_url: str, predictor: Any) -> None:
    text = "an honest, well acted story"  # same text: every batch is identical rows
    before = _info(serve_url)["batching"]
    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(lambda _: _post(serve_url, {"text": text}), range(16)))
    after = _info(serve_url)["batching"]
    assert [r.status_code for r in responses] == [200] * 16
    local = predictor.predict([text])[0]
    for response in responses:
        _assert_same(response.json(), local)
    assert after["items"] - before["items"] == 16
    model_calls = after["batches"] - before["batches"]
    assert model_calls < 16, f"16 concurrent requests took {model_calls} model calls: no batching"
    assert after["largest_batch"] > 1


BAD_BODIES: list[tuple[str, Any, str]] = [
    ("empty text", {"text": ""}, "text"),
    ("whitespace text", {"text": "  \n "}, "text"),
    ("too long text", {"text": "x" * 401}, "text"),
    ("too long item", {"texts": ["ok", "y" * 401]}, "texts"),
    ("too many items", {"texts": ["a"] * 9}, "texts"),
    ("empty list", {"texts": []}, "texts"),
    ("blank item", {"texts": ["ok", " "]}, "texts"),
    ("wrong type", {"text": 42}, "text"),
    ("wrong item type", {"texts": ["ok", {"a": 1}]}, "texts.1"),
    ("list body", ["a", "b"], "body"),
    ("both", {"text": "a", "texts": ["b"]}, "body"),
    ("neither", {}, "body"),
    ("unknown field", {"text": "a", "top_k": 2}, "top_k"),
    ("null text", {"text": None}, "text"),
    ("unpaired surrogate", {"text": "bad \ud800 unicode"}, "text"),
]


@pytest.mark.timeout(RAY_TIMEOUT_S)
def test_bad_requests_get_422_and_replica_keeps_answering(serve_url: str) -> None:
    problems = []
    for name, body, field in BAD_BODIES:
        response = _post(serve_url, body)
        detail = response.json() if response.status_code == 422 else {}
        fields = [error["field"] for error in detail.get("errors", [])]
        if response.status_code != 422 or field not in fields or field not in detail["message"]:
            problems.append(f"{name}: {response.status_code} {response.text[:200]}")
    raw_cases = [b"{not json", b"", b'{"text": "unterminated']
    for raw in raw_cases:
        response = requests.post(
            f"{serve_url}/predict",
            data=raw,
            headers={"content-type": "application/json"},
            timeout=30,
        )
        if response.status_code != 422 or not response.json().get("message"):
            problems.append(f"raw {raw!r}: {response.status_code} {response.text[:200]}")
    as_text = requests.post(
        f"{serve_url}/predict",
        data=b'{"text": "fine"}',
        headers={"content-type": "text/plain"},
        timeout=30,
    )
    if as_text.status_code != 422 or "application/json" not in as_text.json()["message"]:
        problems.append(f"text/plain body: {as_text.status_code} {as_text.text[:200]}")
    assert not problems, "\n".join(problems)
    malformed = requests.post(
        f"{serve_url}/predict", data=b"{not json", headers={"content-type": "application/json"}
    ).json()
    assert malformed["message"].startswith("body: malformed JSON")
    # The replica is still alive and healthy after all of that.
    response = _post(serve_url, {"text": "still here?"})
    assert response.status_code == 200, response.text
    _assert_prediction(response.json())
    assert requests.get(f"{serve_url}/healthz", timeout=30).status_code == 200
