"""The serving platform: request schemas and app arguments in-process, the Serve config files,
and one real Serve app over loopback HTTP (gateway + a model deployment + a multiplexed model
store, bearer token on, direct ingress) built from tiny INT8 BERT classifiers.

One private Ray cluster and one Serve instance are started for the module and shut down by the
fixture. The load, failure and autoscaling checks live in test_serve_load.py.
"""

from __future__ import annotations

import importlib
import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
import torch
import yaml
from conftest import serve_app
from pydantic import ValidationError

from raynlp.config import ServeSection
from raynlp.serving.app import build_app, parse_app_config, predict_isolated
from raynlp.serving.schemas import PredictRequest, request_model, validation_message
from raynlp.serving.settings import AppConfig, ModelEntry
from raynlp.serving.store import ModelStore, UnknownModel, check_servable

REPO = Path(__file__).resolve().parents[1]
LABELS = ["negative", "positive"]
RAY_TIMEOUT_S = 300
TOKEN = "test-token-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}"}
MAX_CHARS, MAX_ITEMS, MAX_BODY = 400, 8, 4096


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


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory, tiny_int8_model: Path) -> Path:
    """A model store holding two copies of the tiny model and some things that are not models."""
    store = tmp_path_factory.mktemp("store")
    shutil.copytree(tiny_int8_model, store / "alpha")
    shutil.copytree(tiny_int8_model, store / "beta-2")
    (store / "notes").mkdir()  # no raynlp.json: not a model
    (store / "secret.txt").write_text("not a model")
    return store


@pytest.fixture(scope="module")
def serve_url(tiny_int8_model: Path, store_dir: Path) -> Iterator[str]:
    """Base URL of the app on a private Ray cluster (direct ingress, token required)."""
    import os

    config = AppConfig(
        models=[
            ModelEntry(
                name="sentiment",
                path=str(tiny_int8_model),
                batch_wait_timeout_s=0.05,  # long enough that concurrent requests share batches
                min_replicas=1,
                max_replicas=1,
                replica_cpus=0.5,
            ),
            # the same model again, loaded and batched inside the gateway replica
            ModelEntry(name="sentiment-gw", path=str(tiny_int8_model), placement="gateway",
                       batch_wait_timeout_s=0.05, replica_cpus=0.3),
        ],
        store={"path": str(store_dir), "max_models_per_replica": 1, "replica_cpus": 0.5,
               "min_replicas": 1, "max_replicas": 1},
        max_text_chars=MAX_CHARS,
        max_items=MAX_ITEMS,
        max_body_bytes=MAX_BODY,
        auth_token_env="RAYNLP_TEST_SERVE_TOKEN",
    )  # fmt: skip
    os.environ["RAYNLP_TEST_SERVE_TOKEN"] = TOKEN
    try:
        with serve_app(config, ingress="direct") as url:
            yield url
    finally:
        os.environ.pop("RAYNLP_TEST_SERVE_TOKEN", None)


def _post(url: str, body: Any, model: str = "sentiment", **kwargs: Any) -> requests.Response:
    headers = {**AUTH, **kwargs.pop("headers", {})}
    return requests.post(
        f"{url}/v1/models/{model}/predict", json=body, headers=headers, timeout=30, **kwargs
    )


def _get(url: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.get(f"{url}{path}", headers=kwargs.pop("headers", AUTH), timeout=30, **kwargs)


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


def _metric(text: str, name: str, **labels: str) -> float:
    """Value of one Prometheus sample (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and "} " in line:
            got = line[len(name) + 1 : line.index("}")]
            if ",".join(sorted(got.split(","))) == wanted:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


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


# ------------------------------------------------------------------------- app arguments, store


def test_app_config_from_section_round_trip() -> None:
    section = ServeSection(max_items=5, min_replicas=2, max_replicas=3, downscale_delay_s=9)
    config = AppConfig.from_section(section, {"a": "runs/a", "b": "runs/b"}, store="models")
    assert config.max_items == 5 and [m.name for m in config.models] == ["a", "b"]
    assert config.store is not None and config.store.path == "models"
    assert AppConfig.model_validate(config.model_dump()) == config
    options = config.models[0].deployment_options()
    assert options["autoscaling_config"] == {
        "min_replicas": 2,
        "initial_replicas": 2,
        "max_replicas": 3,
        "target_ongoing_requests": 8.0,
        "upscale_delay_s": 3.0,
        "downscale_delay_s": 9.0,
    }
    assert options["max_ongoing_requests"] >= config.models[0].max_batch_size


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ({}, "nothing to serve"),
        ({"model_dir": "m"}, "'model_dir' was replaced by 'models"),
        ({"models": [{"name": "a", "path": "m"}], "port": 1}, "set it in http_options.port"),
        ({"models": [{"name": "a", "path": "m", "batch_size": 4}]}, "batch_size: Extra inputs"),
        ({"models": [{"name": "../x", "path": "m"}]}, "is not a model name"),
        ({"models": [{"name": "a", "path": "m"}, {"name": "a", "path": "n"}]}, "repeated: a"),
        ({"models": [{"name": "a", "path": "m", "min_replicas": 3, "max_replicas": 2}]},
         "min_replicas (3)"),
        ({"store": {"path": "s"}, "on_too_long": "explode"}, "on_too_long: Input should be"),
    ],
)  # fmt: skip
def test_bad_builder_args_are_named(args: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match="invalid raynlp serve arguments") as caught:
        parse_app_config(args)
    assert words in str(caught.value)


def test_build_app_needs_a_model_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"raynlp\.json"):
        build_app({"models": [{"name": "a", "path": str(tmp_path)}]})
    with pytest.raises(FileNotFoundError, match="model store"):
        build_app({"store": {"path": str(tmp_path / "missing")}})


@pytest.mark.parametrize(
    "model_id",
    ["..", "../alpha", "alpha/../beta-2", ".hidden", "a/b", "%2e%2e", "", "x" * 65, "notes",
     "secret.txt", "alpha\x00", "ALPHA", " alpha", "alpha/"],
)  # fmt: skip
def test_store_ids_never_leave_the_store(store_dir: Path, model_id: str) -> None:
    store = ModelStore(store_dir)
    assert store.ids() == ["alpha", "beta-2"]
    with pytest.raises(UnknownModel) as caught:
        store.resolve(model_id)
    assert "alpha, beta-2" in str(caught.value)
    assert store.resolve("alpha") == store_dir.resolve() / "alpha"


def test_store_listing_is_cached_briefly(tmp_path: Path, tiny_int8_model: Path) -> None:
    shutil.copytree(tiny_int8_model, tmp_path / "alpha")
    store = ModelStore(tmp_path, listing_ttl_s=60)
    assert store.ids() == ["alpha"] and "alpha" in store and "../alpha" not in store
    shutil.copytree(tiny_int8_model, tmp_path / "beta")
    assert "beta" not in store  # listed within the last minute: not read again
    assert store.resolve("beta") == tmp_path.resolve() / "beta"  # resolving reads the folder
    store.listing_ttl_s = 0
    assert store.ids() == ["alpha", "beta"] and "beta" in store


def test_serving_refuses_pickled_weights(tmp_path: Path) -> None:
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ValueError, match="pickled weights"):
        check_servable(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    check_servable(tmp_path)  # safetensors present: fine


def test_no_pickle_loading_in_the_serving_code() -> None:
    sources = [p.read_text() for p in (REPO / "src" / "raynlp" / "serving").glob("*.py")]
    for banned in ("pickle.load", "torch.load(", "joblib", "cloudpickle.load"):
        assert not any(banned in source for source in sources), banned


def test_one_bad_text_fails_only_itself(predictor: Any) -> None:
    texts = ["good", "bad \ud800 unicode", "a much longer text about the film"]
    results = predict_isolated(predictor, texts)
    assert isinstance(results[1], Exception)
    _assert_same(results[0], predictor.predict([texts[0]])[0])
    _assert_same(results[2], predictor.predict([texts[2]])[0])
    good = [texts[0], texts[2]]
    assert predict_isolated(predictor, good) == predictor.predict(good)


# --------------------------------------------------------------------------- Serve config files


@pytest.mark.parametrize("name", ["sentiment", "platform"])
def test_serve_config_files_are_valid_for_ray_and_the_builder(name: str) -> None:
    from ray.serve.schema import ServeDeploySchema

    raw = yaml.safe_load((REPO / "serve" / f"{name}.yaml").read_text())
    config = ServeDeploySchema.model_validate(raw)
    assert config.http_options.host == "127.0.0.1"
    [app] = config.applications
    module_name, attr = app.import_path.split(":")
    assert getattr(importlib.import_module(module_name), attr) is build_app
    args = parse_app_config(app.args)
    assert args.models and all(m.path.startswith("runs/") for m in args.models)
    if name == "platform":  # every task's model in one app
        tasks = ["classification", "ner", "qa", "similarity", "summarization"]
        assert [m.name for m in args.models] == ["sentiment", *tasks[1:]]
        for model in args.models[1:]:
            job = yaml.safe_load((REPO / "jobs" / f"{model.name}.yaml").read_text())
            assert model.path == f"runs/{job['name']}/export/serving"


def test_serve_calls_the_builder_with_config_args(tiny_int8_model: Path) -> None:
    """The builder works through the function `serve deploy`/`serve run` use to call it."""
    from ray.serve import Application
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    raw = yaml.safe_load((REPO / "serve" / "sentiment.yaml").read_text())
    args = raw["applications"][0]["args"]
    args["models"][0]["path"] = str(tiny_int8_model)
    app = call_user_app_builder_with_args_if_necessary(build_app, args)
    assert isinstance(app, Application)


# ------------------------------------------------------------------- live Serve app over HTTP


@pytest.mark.timeout(RAY_TIMEOUT_S)
def test_health_models_and_openapi(serve_url: str) -> None:
    health = requests.get(f"{serve_url}/healthz", timeout=30)  # no token needed
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    models = _get(serve_url, "/v1/models").json()["models"]
    assert [(m["name"], m["source"]) for m in models] == [
        ("sentiment", "deployment"), ("sentiment-gw", "gateway"), ("alpha", "store"),
        ("beta-2", "store"),
    ]  # fmt: skip
    sentiment = models[0]
    assert (sentiment["task"], sentiment["request_kind"]) == ("classification", "text")
    assert sentiment["variant"] == "onnx_int8" and sentiment["labels"] == LABELS
    assert len(sentiment["version"]) == 12
    assert _get(serve_url, "/v1/models/alpha").json()["source"] == "store"
    spec = _get(serve_url, "/openapi.json").json()
    post = spec["paths"]["/v1/models/sentiment/predict"]["post"]
    assert "requestBody" in post and {"401", "404", "413", "422"} <= set(post["responses"])
    assert "/v1/models/{name}/predict" in spec["paths"] and "/v1/models" in spec["paths"]


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
def test_model_placed_in_the_gateway_answers_without_a_deployment(
    serve_url: str, predictor: Any
) -> None:
    """placement: gateway — no deployment of its own, the same answers, and concurrent requests
    still share batches (inside the gateway)."""
    from ray import serve

    deployments = serve.status().applications["raynlp"].deployments
    assert "Model_sentiment" in deployments and "Model_sentiment-gw" not in deployments
    for text in ["a wonderful, moving film", "dull and far too long"]:
        response = _post(serve_url, {"text": text}, model="sentiment-gw")
        assert response.status_code == 200, response.text
        _assert_same(response.json(), predictor.predict([text])[0])
    before = _get(serve_url, "/metrics").text
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(
            pool.map(lambda _: _post(serve_url, {"text": "fine"}, model="sentiment-gw"), range(8))
        )
    assert all(r.status_code == 200 for r in responses)
    after = _get(serve_url, "/metrics").text

    def delta(name: str) -> float:
        return _metric(after, name, model="sentiment-gw") - _metric(
            before, name, model="sentiment-gw"
        )

    # each item records the size of its batch: a mean > 1 means requests shared batches
    assert delta("raynlp_batch_size_count") == 8
    assert delta("raynlp_batch_size_sum") > 8
    bad = _post(serve_url, {"text": ""}, model="sentiment-gw")
    assert bad.status_code == 422


@pytest.mark.timeout(RAY_TIMEOUT_S)
def test_store_models_are_multiplexed(serve_url: str, predictor: Any) -> None:
    """Both store models answer from one replica that keeps one model loaded at a time."""
    local = predictor.predict(["a fine film"])[0]
    for model in ["alpha", "beta-2", "alpha"]:
        response = _post(serve_url, {"text": "a fine film"}, model=model)
        assert response.status_code == 200, (model, response.text)
        _assert_same(response.json(), local)


@pytest.mark.timeout(RAY_TIMEOUT_S)
def test_concurrent_requests_share_batches_and_show_in_metrics(
    serve_url: str, predictor: Any
) -> None:
    text = "an honest, well acted story"  # same text: every batch is identical rows
    before = _get(serve_url, "/metrics").text
    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(lambda _: _post(serve_url, {"text": text}), range(16)))
    after = _get(serve_url, "/metrics").text
    assert [r.status_code for r in responses] == [200] * 16
    local = predictor.predict([text])[0]
    for response in responses:
        _assert_same(response.json(), local)

    def delta(name: str, **labels: str) -> float:
        return _metric(after, name, **labels) - _metric(before, name, **labels)

    assert delta("raynlp_requests_total", model="sentiment", status="200") == 16
    assert delta("raynlp_request_latency_seconds_count", model="sentiment") == 16
    items = delta("raynlp_batch_size_count", model="sentiment")
    total = delta("raynlp_batch_size_sum", model="sentiment")
    assert items == 16
    # Each item records the size of its batch: the mean is > 1 only if requests shared batches.
    assert total / items > 1, f"16 concurrent requests never shared a model call ({total})"


def _raw(url: str, path: str, data: bytes, **headers: str) -> requests.Response:
    return requests.post(f"{url}{path}", data=data, headers={**AUTH, **headers}, timeout=30)


PREDICT = "/v1/models/sentiment/predict"
JSON = {"content-type": "application/json"}
BAD_JSON_BODIES: list[tuple[str, Any, str]] = [
    ("empty text", {"text": ""}, "text"),
    ("whitespace text", {"text": "  \n "}, "text"),
    ("too long text", {"text": "x" * (MAX_CHARS + 1)}, "text"),
    ("too long item", {"texts": ["ok", "y" * (MAX_CHARS + 1)]}, "texts"),
    ("too many items", {"texts": ["a"] * (MAX_ITEMS + 1)}, "texts"),
    ("empty list", {"texts": []}, "texts"),
    ("blank item", {"texts": ["ok", " "]}, "texts"),
    ("wrong type", {"text": 42}, "text"),
    ("bool text", {"text": True}, "text"),
    ("wrong item type", {"texts": ["ok", {"a": 1}]}, "texts.1"),
    ("nested junk", {"text": {"text": ["deep", {"deeper": [1, 2, None]}]}}, "text"),
    ("list body", ["a", "b"], "body"),
    ("string body", "great film", "body"),
    ("number body", 7, "body"),
    ("null body", None, "body"),
    ("both", {"text": "a", "texts": ["b"]}, "body"),
    ("neither", {}, "body"),
    ("unknown field", {"text": "a", "top_k": 2}, "top_k"),
    ("null text", {"text": None}, "text"),
    ("unpaired surrogate", {"text": "bad \ud800 unicode"}, "text"),
]


def _bad_requests(url: str) -> list[tuple[str, requests.Response]]:
    """≥ 30 requests that must all be refused with a 4xx and a message."""
    sent: list[tuple[str, requests.Response]] = []
    for name, body, _ in BAD_JSON_BODIES:
        sent.append((name, _raw(url, PREDICT, json.dumps(body).encode(), **JSON)))
    huge_list = json.dumps({"texts": ["word"] * 5000}).encode()
    sent += [
        ("malformed JSON", _raw(url, PREDICT, b"{not json", **JSON)),
        ("empty body", _raw(url, PREDICT, b"", **JSON)),
        ("unterminated", _raw(url, PREDICT, b'{"text": "unterminated', **JSON)),
        ("non-UTF-8 bytes", _raw(url, PREDICT, b'{"text": "\xff\xfe caf\xe9"}', **JSON)),
        ("wrong content type", _raw(url, PREDICT, b'{"text": "fine"}', **{"content-type": "text/plain"})),
        ("no content type", _raw(url, PREDICT, b'{"text": "fine"}', **{"content-type": ""})),
        ("huge body", _raw(url, PREDICT, json.dumps({"text": "x" * 50_000}).encode(), **JSON)),
        ("huge list", _raw(url, PREDICT, huge_list, **JSON)),
        ("chunked huge body", requests.post(f"{url}{PREDICT}", headers={**AUTH, **JSON},
                                            data=iter([b'{"text": "', b"x" * 8000, b'"}']), timeout=30)),
        ("unknown model", _raw(url, "/v1/models/nope/predict", b'{"text": "a"}', **JSON)),
        ("traversal id", _raw(url, "/v1/models/..%2F..%2Fetc/predict", b'{"text": "a"}', **JSON)),
        ("dot-dot id", _raw(url, "/v1/models/%2E%2E/predict", b'{"text": "a"}', **JSON)),
        ("store non-model", _raw(url, "/v1/models/notes/predict", b'{"text": "a"}', **JSON)),
        ("store bad body", _raw(url, "/v1/models/alpha/predict", b'{"texts": "a"}', **JSON)),
        ("store not JSON", _raw(url, "/v1/models/alpha/predict", b"{oops", **JSON)),
        ("store non-UTF-8", _raw(url, "/v1/models/alpha/predict", b'{"text": "\xff"}', **JSON)),
        ("missing token", requests.post(f"{url}{PREDICT}", json={"text": "a"}, timeout=30)),
        ("wrong token", requests.post(f"{url}{PREDICT}", json={"text": "a"}, timeout=30,
                                      headers={"authorization": "Bearer wrong"})),
        ("basic auth", requests.post(f"{url}{PREDICT}", json={"text": "a"}, timeout=30,
                                     headers={"authorization": f"Basic {TOKEN}"})),
        ("models without token", requests.get(f"{url}/v1/models", timeout=30)),
        ("GET predict", requests.get(f"{url}{PREDICT}", headers=AUTH, timeout=30)),
    ]  # fmt: skip
    return sent


EXPECTED_STATUS = {
    "huge body": 413, "huge list": 413, "chunked huge body": 413, "unknown model": 404,
    "dot-dot id": 404, "store non-model": 404, "missing token": 401, "wrong token": 401,
    "basic auth": 401, "models without token": 401, "wrong content type": 415,
    "no content type": 415, "non-UTF-8 bytes": 400, "store non-UTF-8": 400, "GET predict": 405,
}  # fmt: skip


@pytest.mark.timeout(RAY_TIMEOUT_S)
def test_bad_input_corpus_gets_4xx_with_a_message_and_the_app_keeps_answering(
    serve_url: str,
) -> None:
    sent = _bad_requests(serve_url)
    assert len(sent) >= 30
    problems = []
    for name, response in sent:
        status = response.status_code
        expected = EXPECTED_STATUS.get(name, 422)
        message = response.json().get("message", "") if status < 500 else ""
        if not 400 <= status < 500 or (name in EXPECTED_STATUS and status != expected):
            problems.append(f"{name}: {status} (expected {expected}) {response.text[:200]}")
        elif not message or "Traceback" in message or "x" * 500 in message:
            problems.append(f"{name}: no readable message: {response.text[:200]}")
    assert not problems, "\n".join(problems)
    by_name = dict(sent)
    for name, _, field in BAD_JSON_BODIES:  # validation errors name the field
        assert field in [e["field"] for e in by_name[name].json()["errors"]], name
    assert by_name["malformed JSON"].json()["message"].startswith("body: malformed JSON")
    assert "Bearer" in by_name["missing token"].headers.get("www-authenticate", "")
    assert "alpha, beta-2" in by_name["unknown model"].json()["message"]
    assert by_name["traversal id"].status_code in (404, 405)
    # Every replica is alive and answers after all of that.
    response = _post(serve_url, {"text": "still here?"})
    assert response.status_code == 200, response.text
    _assert_prediction(response.json())
    assert _post(serve_url, {"text": "and the store?"}, model="beta-2").status_code == 200
    metrics = _get(serve_url, "/metrics").text
    assert _metric(metrics, "raynlp_requests_total", model="_unknown", status="404") >= 2
    assert _metric(metrics, "raynlp_requests_total", model="sentiment", status="422") >= 20


class InProcessBackend:
    """The gateway's Backend over a real in-process predictor (no Ray): exercises the HTTP layer
    alone, for settings the live app does not use."""

    def __init__(self, folder: Path, config: AppConfig) -> None:
        from raynlp.serving.metrics import ServingMetrics
        from raynlp.serving.predictor import OnnxPredictor
        from raynlp.serving.store import model_card

        self.config = config
        self.metrics = ServingMetrics()
        self.token = None
        self.predictor = OnnxPredictor(folder)
        self._card = model_card("sentiment", folder, "deployment")

    def cards(self) -> list[Any]:
        return [self._card]

    def names(self) -> list[str]:
        return ["sentiment"]

    def card(self, name: str) -> Any:
        if name != "sentiment":
            raise UnknownModel(name, self.names())
        return self._card

    async def predict(self, name: str, items: list[dict[str, str]]) -> tuple[list, list[int]]:
        self.card(name)
        return self.predictor.predict(items), [len(items)] * len(items)


def test_reject_mode_refuses_inputs_longer_than_the_model(tiny_int8_model: Path) -> None:
    from fastapi.testclient import TestClient

    from raynlp.serving.gateway import build_api

    long_text = " ".join(["good"] * 70)  # > 64 tokens
    for mode, status in [("reject", 422), ("truncate", 200)]:
        config = AppConfig(
            models=[ModelEntry(name="sentiment", path=str(tiny_int8_model))], on_too_long=mode
        )
        client = TestClient(build_api(InProcessBackend(tiny_int8_model, config)))
        response = client.post("/v1/models/sentiment/predict", json={"texts": ["ok", long_text]})
        assert response.status_code == status, response.text
        if mode == "reject":
            assert "item 1 is longer than the model's token window (64 tokens)" in response.text
        else:
            assert [a["truncated"] for a in response.json()] == [False, True]
        assert client.post("/v1/models/sentiment/predict", json={"text": "ok"}).status_code == 200


@pytest.mark.timeout(RAY_TIMEOUT_S)
def test_cli_predict_asks_the_server(serve_url: str, predictor: Any, capsys, monkeypatch) -> None:
    from raynlp.cli import main as raynlp

    monkeypatch.setenv("RAYNLP_SERVE_TOKEN", TOKEN)
    assert raynlp(["predict", "--url", serve_url, "--name", "sentiment", "great", "awful"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["text"] for line in lines] == ["great", "awful"]
    for line, local in zip(lines, predictor.predict(["great", "awful"]), strict=True):
        _assert_same(line, local)
    assert raynlp(["predict", "--url", serve_url, "great"]) == 2  # three models: --name needed
    assert "pick one with --name" in capsys.readouterr().err
    monkeypatch.delenv("RAYNLP_SERVE_TOKEN")
    assert raynlp(["predict", "--url", serve_url, "--name", "sentiment", "great"]) == 2
    assert "401" in capsys.readouterr().err


def test_replicas_shrink_to_fit_a_small_cluster() -> None:
    from raynlp.serving.app import fit_to_cluster

    config = AppConfig(
        models=[ModelEntry(name="a", path="m"), ModelEntry(name="b", path="m", replica_cpus=0.5)],
        store={"path": "s"},
    )
    same, note = fit_to_cluster(config, 8.0)
    assert same == config and note is None
    fitted, note = fit_to_cluster(config, 2.0)  # 0.1 + 1 + 0.5 + 1 = 2.6 > 2
    assert note and "reserves 0.7 CPU" in note
    assert [m.replica_cpus for m in fitted.models] == [0.7, 0.5]  # explicit 0.5 kept
    assert fitted.store is not None and fitted.store.replica_cpus == 0.7
    with pytest.raises(ValueError, match=r"needs 2\.6 CPUs to start"):
        fit_to_cluster(config, 0.6)
