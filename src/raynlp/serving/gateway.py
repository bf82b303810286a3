"""The HTTP API of the serving application (FastAPI), independent of Ray.

Routes (relative to the application's route prefix):

* ``GET /v1/models`` — every model: name, task, request kind, version, served variant, source.
* ``GET /v1/models/{name}`` — one model's card (404 for an unknown name).
* ``POST /v1/models/{name}/predict`` — one item → one answer, a list → a list. Items per task:
  ``{"text"}`` / ``{"texts": [...]}`` (classification, NER, summarization),
  ``{"text", "text_pair"}`` / ``{"pairs": [...]}`` (similarity),
  ``{"question", "context"}`` / ``{"inputs": [...]}`` (QA).
* ``GET /healthz`` — 200 once the gateway is up (no token needed); ``GET /metrics`` —
  Prometheus text; ``GET /docs`` and ``/openapi.json`` — the OpenAPI description.

Every refusal is a 4xx whose JSON body is :class:`~raynlp.serving.schemas.ErrorResponse` (one
readable ``message``): 401 bad or missing token, 404 unknown model, 413 body too large, 415 not
JSON, 400 not UTF-8, 422 invalid fields (with the field named), 503 model temporarily
unavailable. Inputs are never echoed back.

(No ``from __future__ import annotations``: FastAPI must see the real request classes.)
"""

import hmac
import json
import re
import time
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from raynlp.serving.metrics import PROMETHEUS_CONTENT_TYPE, ServingMetrics
from raynlp.serving.schemas import (
    RESPONSE_MODELS,
    ErrorItem,
    ErrorResponse,
    HealthResponse,
    format_errors,
    request_model_for,
)
from raynlp.serving.settings import AppConfig
from raynlp.serving.store import ModelCard, UnknownModel

PREDICT_PATH = re.compile(r"^/v1/models/([^/]+)/predict$")
OPEN_PATHS = {"/healthz"}


class ApiError(Exception):
    """A refusal with its HTTP status (raised by the backend or the routes)."""

    def __init__(self, status: int, message: str, field: str = "body") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


class ModelList(BaseModel):
    models: list[ModelCard]


class Backend(Protocol):
    """What the HTTP layer needs from the gateway replica."""

    config: AppConfig
    metrics: ServingMetrics
    token: str | None

    def cards(self) -> list[ModelCard]:
        """Every model that can be asked (dedicated deployments first, then the store)."""

    def names(self) -> list[str]:
        """Names of every model (cheap: no model metadata read)."""

    def card(self, name: str) -> ModelCard:
        """One model's card; raises UnknownModel."""

    async def predict(self, name: str, items: list[dict[str, str]]) -> tuple[list[dict], list[int]]:
        """Answers in order and the batch size each was computed in; raises UnknownModel or
        ApiError (503 when no replica could answer)."""


def error_response(status: int, message: str, field: str = "body", **headers: str) -> JSONResponse:
    body = ErrorResponse(
        message=f"{field}: {message}", errors=[ErrorItem(field=field, message=message)]
    )
    return JSONResponse(status_code=status, content=body.model_dump(), headers=headers or None)


class GuardMiddleware:
    """Bearer token and body size, checked before FastAPI reads anything (pure ASGI)."""

    def __init__(self, app: Any, token: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        if self.token is not None and path not in OPEN_PATHS:
            given = headers.get(b"authorization", b"")
            scheme, _, value = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(value.strip(), self.token):
                reason = "missing bearer token" if not given else "invalid bearer token"
                response = error_response(
                    401, f"{reason}; send 'Authorization: Bearer <token>'", "authorization",
                    **{"www-authenticate": "Bearer"},
                )  # fmt: skip
                await response(scope, receive, send)
                return
        if scope.get("method") in ("POST", "PUT", "PATCH"):
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
                await self._too_large(scope, receive, send)
                return
            kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if kind != b"application/json" and not kind.endswith(b"+json"):
                response = error_response(
                    415, "send the body as JSON with 'content-type: application/json'",
                    "content-type",
                )  # fmt: skip
                await response(scope, receive, send)
                return
            if length is None:  # streamed (chunked): read it here, up to the limit
                body = await self._read_limited(receive)
                if body is None:
                    await self._too_large(scope, receive, send)
                    return
                receive = _replay(body)
        await self.app(scope, receive, send)

    async def _read_limited(self, receive: Any) -> bytes | None:
        """The whole body, or None as soon as it passes the limit."""
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, scope: dict, receive: Any, send: Any) -> None:
        response = error_response(
            413, f"the body is larger than the limit of {self.max_body_bytes} bytes"
        )
        await response(scope, receive, send)


def _replay(body: bytes) -> Any:
    """An ASGI ``receive`` that hands over ``body`` once, then waits for the disconnect."""
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


def build_api(backend: Backend) -> FastAPI:
    """The gateway's FastAPI app: a documented predict route per dedicated model, one generic
    predict route for store models, the model list, health and metrics."""
    config = backend.config
    api = FastAPI(
        title="raynlp",
        version="1",
        description=(
            "Exported raynlp models behind Ray Serve. Limits: "
            f"{config.max_text_chars} characters per text, {config.max_items} items per request, "
            f"{config.max_body_bytes} bytes per body; inputs longer than a model's token window "
            f"are {'cut (truncated: true)' if config.on_too_long == 'truncate' else 'rejected'}."
        ),
    )

    def record_refusal(request: Request, status: int) -> None:
        match = PREDICT_PATH.match(
            request.url.path.removeprefix(request.scope.get("root_path", ""))
        )
        if match:  # unknown names share one label, so clients cannot grow the label set
            name = match.group(1)
            backend.metrics.record(name if name in backend.names() else "_unknown", status)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        errors = exc.errors() if isinstance(exc, RequestValidationError | ValidationError) else []
        record_refusal(request, 422)
        return JSONResponse(status_code=422, content=format_errors(list(errors)).model_dump())

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        status = getattr(exc, "status_code", 400)
        detail = str(getattr(exc, "detail", "") or "bad request")
        if detail == "There was an error parsing the body":
            detail = "the body could not be parsed (send UTF-8 encoded JSON)"
        record_refusal(request, status)
        return error_response(status, detail)

    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        record_refusal(request, exc.status)
        return error_response(exc.status, exc.message, exc.field)

    async def on_unknown_model(request: Request, exc: Exception) -> JSONResponse:
        record_refusal(request, 404)
        return error_response(404, str(exc).strip("'\""), "model")

    async def on_server_error(request: Request, exc: Exception) -> JSONResponse:
        record_refusal(request, 500)  # a bug, not bad input: say so without a traceback
        return error_response(500, f"internal error ({type(exc).__name__}); see the logs", "server")

    api.add_exception_handler(Exception, on_server_error)
    api.add_exception_handler(RequestValidationError, on_validation_error)
    api.add_exception_handler(ValidationError, on_validation_error)
    api.add_exception_handler(StarletteHTTPException, on_http_error)
    api.add_exception_handler(ApiError, on_api_error)
    api.add_exception_handler(UnknownModel, on_unknown_model)
    api.add_middleware(GuardMiddleware, token=backend.token, max_body_bytes=config.max_body_bytes)

    async def answer(name: str, card: ModelCard, request: Any) -> Any:
        started = time.perf_counter()
        answers, sizes = await backend.predict(name, request.items())
        if config.on_too_long == "reject":
            cut = [i for i, a in enumerate(answers) if a.get("truncated")]
            if cut:
                raise ApiError(
                    422,
                    f"item {cut[0]} is longer than the model's token window "
                    f"({card.max_length} tokens); shorten it",
                    "text",
                )
        backend.metrics.record(name, 200, time.perf_counter() - started, sizes)
        answer_model = RESPONSE_MODELS[card.task]
        if request.is_single:
            return answer_model.model_validate(answers[0])
        return [answer_model.model_validate(a) for a in answers]

    error_docs = {
        status: {"model": ErrorResponse, "description": text}
        for status, text in {
            401: "Missing or invalid bearer token",
            404: "Unknown model",
            413: "Body too large",
            415: "Not JSON",
            422: "Invalid request",
            503: "Model temporarily unavailable",
        }.items()
    }
    for card in backend.cards():
        if card.source != "deployment":
            continue
        api.add_api_route(
            f"/v1/models/{card.name}/predict",
            _typed_route(card, config, answer),
            methods=["POST"],
            response_model=RESPONSE_MODELS[card.task] | list[RESPONSE_MODELS[card.task]],  # type: ignore[valid-type]
            responses=error_docs,
            summary=f"{card.name} ({card.task}): one item or a list of items",
            tags=["predict"],
        )

    async def predict_any(name: str, request: Request) -> Any:
        """Any model by name (store models are loaded on first use)."""
        card = backend.card(name)  # UnknownModel → 404
        body = await request.body()
        try:
            data = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise ApiError(400, "the body could not be parsed (send UTF-8 encoded JSON)") from None
        except json.JSONDecodeError as err:
            raise ApiError(422, f"malformed JSON: {err.msg} at character {err.pos}") from None
        model = request_model_for(card.request_kind, config.max_text_chars, config.max_items)
        return await answer(name, card, model.model_validate(data))

    api.add_api_route(
        "/v1/models/{name}/predict",
        predict_any,
        methods=["POST"],
        responses=error_docs,
        summary="Predict with any model, including store models (body: the model's task items)",
        tags=["predict"],
    )

    @api.get("/v1/models", response_model=ModelList, tags=["models"])
    async def list_models() -> ModelList:
        return ModelList(models=backend.cards())

    @api.get("/v1/models/{name}", response_model=ModelCard, responses=error_docs, tags=["models"])
    async def get_model(name: str) -> ModelCard:
        return backend.card(name)

    @api.get("/healthz", response_model=HealthResponse, tags=["health"])
    async def healthz() -> HealthResponse:
        return HealthResponse()

    @api.get("/metrics", tags=["health"])
    async def metrics() -> Response:
        return Response(backend.metrics.render(), media_type=PROMETHEUS_CONTENT_TYPE)

    return api


def _typed_route(card: ModelCard, config: AppConfig, answer: Any) -> Any:
    """A route function whose body parameter is the task's request model (so /docs shows it)."""
    body_model = request_model_for(card.request_kind, config.max_text_chars, config.max_items)
    name = card.name

    async def predict(request: body_model) -> Any:  # type: ignore[valid-type]
        return await answer(name, card, request)

    predict.__doc__ = f"Ask {name} ({card.task}, version {card.version}, {card.variant})."
    return predict
