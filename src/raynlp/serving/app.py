"""The Ray Serve application: an exported model of any task behind ``@serve.batch`` and a
FastAPI ingress whose request and response schemas are the task's.

Routes (relative to the application's route prefix):

* ``POST /predict`` — one item → one prediction, a list → a list. Items per task:
  ``{"text"}`` / ``{"texts": [...]}`` (classification, NER, summarization),
  ``{"text", "text_pair"}`` / ``{"pairs": [...]}`` (similarity),
  ``{"question", "context"}`` / ``{"inputs": [...]}`` (QA).
  Bad input gets a 422 whose body names the field (see :class:`ErrorResponse`).
* ``GET /healthz`` — 200 once the replica has loaded the model and run a warm-up inference.
* ``GET /`` and ``GET /info`` — task, labels, model folder, limits and batching counters.

Entry points: :func:`build_app` (``import_path: raynlp.serving.app:build_app`` in a Serve config
file) and :func:`run_app` (``raynlp serve``). The model work is done by the Ray-free
:class:`~raynlp.serving.predictor.OnnxPredictor`; the deployment only wraps it.

The FastAPI app is built per replica (``@serve.ingress()`` + ``__serve_build_asgi_app__``)
because the request limits are deployment arguments, and the request model carries them.
(No ``from __future__ import annotations`` here: FastAPI must see the real class of the
per-replica body model in the route's signature.)
"""

import asyncio
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from raynlp.config import ServeSection
from raynlp.serving.predictor import OnnxPredictor
from raynlp.serving.schemas import (
    RESPONSE_MODELS,
    AppArgs,
    BatchStats,
    ErrorItem,
    ErrorResponse,
    HealthResponse,
    InfoResponse,
    format_errors,
    request_model_for,
    validation_message,
)
from raynlp.training.checkpoints import read_model_meta

APP_NAME = "raynlp"
DEPLOYMENT_NAME = "Model"


@dataclass
class BatchCounter:
    """Counts the model calls ``@serve.batch`` makes in one replica."""

    batches: int = 0
    items: int = 0
    largest_batch: int = 0

    def record(self, size: int) -> None:
        self.batches += 1
        self.items += size
        self.largest_batch = max(self.largest_batch, size)


def predict_isolated(
    predictor: OnnxPredictor, items: list[Any]
) -> list[dict[str, Any] | Exception]:
    """One answer per item, or the exception that item raised.

    The batch is predicted in one call; if that fails, each item is retried alone, so an item
    that breaks the model fails only its own request, not the others sharing its batch.
    """
    try:
        return list(predictor.predict(items))
    except Exception as err:
        if len(items) == 1:
            return [err]
    results: list[dict[str, Any] | Exception] = []
    for item in items:
        try:
            results.append(predictor.predict([item])[0])
        except Exception as err:
            results.append(err)
    return results


class PredictionBackend(Protocol):
    """What the HTTP layer needs from a replica."""

    limits: AppArgs
    task_name: str
    request_kind: str

    async def predict(self, items: list[dict[str, str]]) -> list[dict[str, Any]]:
        """One answer per item, in order."""

    def info(self) -> InfoResponse:
        """Model description, limits and batching counters."""


def _validation_error_handler(_: Request, exc: Exception) -> JSONResponse:
    """422 with a readable message naming each bad field; the rejected input is not echoed."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse(status_code=422, content=format_errors(list(errors)).model_dump())


def _http_error_handler(_: Request, exc: Exception) -> JSONResponse:
    """Other 4xx (e.g. a body that is not UTF-8) in the same shape as validation errors."""
    status = getattr(exc, "status_code", 400)
    detail = str(getattr(exc, "detail", "") or "bad request")
    if detail == "There was an error parsing the body":
        detail = "the body could not be parsed (send UTF-8 encoded JSON)"
    body = ErrorResponse(
        message=f"body: {detail}", errors=[ErrorItem(field="body", message=detail)]
    )
    return JSONResponse(status_code=status, content=body.model_dump())


def build_api(backend: PredictionBackend) -> FastAPI:
    """A FastAPI app whose routes call ``backend``; request limits are taken from its args."""
    limits = backend.limits
    body_model = request_model_for(backend.request_kind, limits.max_text_chars, limits.max_items)
    answer_model = RESPONSE_MODELS[backend.task_name]
    api = FastAPI(
        title=f"raynlp {backend.task_name}",
        description=(
            f"{backend.task_name} with an exported ONNX model, served by Ray Serve. "
            f"Limits: {limits.max_text_chars} characters per text, "
            f"{limits.max_items} items per request."
        ),
    )
    api.add_exception_handler(RequestValidationError, _validation_error_handler)
    api.add_exception_handler(StarletteHTTPException, _http_error_handler)

    async def predict(request: body_model) -> Any:  # type: ignore[valid-type]
        answers = await backend.predict(request.items())
        if request.is_single:
            return answer_model.model_validate(answers[0])
        return [answer_model.model_validate(answer) for answer in answers]

    api.add_api_route(
        "/predict",
        predict,
        methods=["POST"],
        response_model=answer_model | list[answer_model],  # type: ignore[valid-type]
        responses={422: {"model": ErrorResponse, "description": "Invalid request"}},
        summary=f"{backend.task_name}: one item or a list of items",
    )

    @api.get("/healthz", response_model=HealthResponse)
    async def healthz() -> HealthResponse:
        return HealthResponse()

    @api.get("/info", response_model=InfoResponse)
    @api.get("/", response_model=InfoResponse, include_in_schema=False)
    async def info() -> InfoResponse:
        return backend.info()

    return api


@serve.deployment(name=DEPLOYMENT_NAME)
@serve.ingress()
class ModelDeployment:
    """One replica: loads the ONNX model, warms it up, and answers through ``@serve.batch``.

    The constructor runs a real inference, so Serve marks the replica ready only once the
    model works. Every item of a request is its own batch item, so items from concurrent
    requests share model calls.
    """

    def __init__(self, args: dict[str, Any]) -> None:
        self.limits = AppArgs.model_validate(args)
        self.predictor = OnnxPredictor(self.limits.model_dir, self.limits.intra_op_threads)
        self.task_name = self.predictor.task.name
        self.request_kind = self.predictor.request_kind
        self.predictor.warmup()
        self.counter = BatchCounter()
        self._predict_batch.set_max_batch_size(self.limits.max_batch_size)
        self._predict_batch.set_batch_wait_timeout_s(self.limits.batch_wait_timeout_s)

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Called by Serve after ``__init__``: the replica's HTTP app."""
        return build_api(self)

    def check_health(self) -> None:
        """Serve's periodic replica health check: fails if the model is gone."""
        if self.predictor is None or self.predictor.model is None:
            raise RuntimeError("model not loaded")

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _predict_batch(self, items: list[dict[str, str]]) -> list[dict[str, Any] | Exception]:
        self.counter.record(len(items))
        # ONNX Runtime releases the GIL: run it off the event loop so new requests keep queueing.
        return await asyncio.to_thread(predict_isolated, self.predictor, items)

    async def predict(self, items: list[dict[str, str]]) -> list[dict[str, Any]]:
        """One answer per item, in order; each item goes through the batch queue.

        Raises the first error an item of this request caused (the HTTP layer answers 500).
        """
        results = await asyncio.gather(*(self._predict_batch(item) for item in items))
        answers = []
        for result in results:
            if isinstance(result, Exception):
                raise result
            answers.append(result)
        return answers

    def info(self) -> InfoResponse:
        """Model description, limits and this replica's batching counters."""
        meta = self.predictor.meta
        return InfoResponse(
            task=meta["task"],
            request_kind=self.request_kind,
            labels=self.predictor.labels,
            model_dir=str(self.predictor.model_dir),
            base_model=meta.get("base_model"),
            max_text_chars=self.limits.max_text_chars,
            max_items=self.limits.max_items,
            batching=BatchStats(
                max_batch_size=self.limits.max_batch_size,
                batch_wait_timeout_s=self.limits.batch_wait_timeout_s,
                batches=self.counter.batches,
                items=self.counter.items,
                largest_batch=self.counter.largest_batch,
            ),
        )


def parse_app_args(args: dict[str, Any] | AppArgs) -> AppArgs:
    """Validated builder arguments; raises ValueError with one readable line if they are bad."""
    if isinstance(args, AppArgs):
        return args
    try:
        return AppArgs.model_validate(args)
    except ValidationError as err:
        raise ValueError(f"invalid raynlp serve arguments: {validation_message(err)}") from None


def resolve_model_dir(model_dir: str) -> str:
    """``model_dir`` as an absolute path, after checking it holds a raynlp model (raynlp.json).

    A relative path is taken from the current directory of the process that builds the app
    (for ``serve deploy`` that is a process on the cluster, not the shell that ran the command).
    """
    path = Path(model_dir).expanduser().resolve()
    read_model_meta(path)  # raises FileNotFoundError naming the folder
    return str(path)


def deployment_options(args: AppArgs) -> dict[str, Any]:
    """Replica options from the serve settings: autoscaling bounds, concurrency, CPUs."""
    return {
        "autoscaling_config": {
            "min_replicas": args.min_replicas,
            "max_replicas": args.max_replicas,
            "target_ongoing_requests": args.target_ongoing_requests,
        },
        # Serve's default (5) would cap a batch at 5 requests per replica.
        "max_ongoing_requests": max(
            args.max_batch_size, math.ceil(2 * args.target_ongoing_requests)
        ),
        "ray_actor_options": {"num_cpus": args.replica_cpus or max(1, args.intra_op_threads)},
    }


def build_app(args: dict[str, Any] | AppArgs) -> Application:
    """The Serve application for ``args`` (``model_dir`` plus ServeSection keys except HTTP ones).

    Usable as ``import_path: raynlp.serving.app:build_app`` with ``args: {model_dir: ...}``.
    Raises ValueError for bad arguments and FileNotFoundError when ``model_dir`` holds no model.
    """
    parsed = parse_app_args(args)
    parsed = parsed.model_copy(update={"model_dir": resolve_model_dir(parsed.model_dir)})
    deployment = ModelDeployment.options(**deployment_options(parsed))
    return deployment.bind(parsed.builder_args())


def run_app(
    model_dir: str | Path,
    serve_section: ServeSection,
    blocking: bool = False,
    name: str = APP_NAME,
) -> DeploymentHandle:
    """Deploy the model on ``serve_section.host:port`` under its route prefix; return the handle.

    Starts Serve with those HTTP options (and Ray, if not yet initialized: it joins a running
    cluster if there is one, else starts a local one). Returns once a replica has loaded the
    model and run a warm-up inference; with ``blocking=True`` it then waits until Ctrl-C.
    If Serve is already running, its HTTP options stay as they are (Serve logs a warning).
    """
    args = AppArgs.from_section(str(model_dir), serve_section)
    app = build_app(args)
    serve.start(http_options={"host": serve_section.host, "port": serve_section.port})
    return serve.run(app, name=name, route_prefix=serve_section.route_prefix, blocking=blocking)
