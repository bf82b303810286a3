"""The Ray Serve application: one gateway (HTTP ingress) in front of one deployment per model,
plus an optional multiplexed deployment for a model store.

::

    HTTP ─▶ Gateway (FastAPI: auth, limits, validation, metrics, /v1 routes)
               ├─▶ Model[sentiment]  @serve.batch, autoscaled, warmed up before ready
               ├─▶ Model[ner] ...
               ├── (placement: gateway) a model loaded and batched inside the gateway itself
               └─▶ Store             @serve.multiplexed: store/<id>/ loaded on first use

Entry points: :func:`build_app` (``import_path: raynlp.serving.app:build_app`` in a Serve config
file, ``args`` = :class:`~raynlp.serving.settings.AppConfig`) and :func:`run_app`
(``raynlp serve``). Replicas load models only from ONNX, TorchScript or safetensors files, and
the model work is the Ray-free :class:`~raynlp.serving.predictor.OnnxPredictor`.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import ray
from pydantic import ValidationError
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from raynlp.serving.gateway import ApiError, build_api
from raynlp.serving.metrics import ServingMetrics
from raynlp.serving.schemas import validation_message
from raynlp.serving.settings import (
    AppConfig,
    DeploymentSettings,
    ModelEntry,
    StoreEntry,
)
from raynlp.serving.store import ModelCard, ModelStore, UnknownModel, check_servable, model_card

APP_NAME = "raynlp"
GATEWAY = "Gateway"
STORE = "Store"
RETRIES = 4
"""Calls to a model deployment are retried this many times when its replica died under them."""
RETRYABLE = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)
GATEWAY_BATCHES_IN_FLIGHT = 4
"""Batches per model the gateway keeps in flight (so replicas never wait for the gateway)."""


def predict_isolated(predictor: Any, items: list[Any]) -> list[dict[str, Any] | Exception]:
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


def load_predictor(folder: Path, threads: int) -> Any:
    """A warmed-up predictor for ``folder`` (refuses pickled weights)."""
    from raynlp.serving.predictor import OnnxPredictor

    check_servable(folder)
    predictor = OnnxPredictor(folder, threads)
    predictor.warmup()
    return predictor


def _configure_batching(method: Any, settings: DeploymentSettings, wait: bool = True) -> None:
    """Replica-side batching: the gateway already waited ``batch_wait_timeout_s`` to fill each
    batch, so a replica only merges what is queued (calls from several gateway batches)."""
    method.set_max_batch_size(settings.max_batch_size)
    method.set_batch_wait_timeout_s(settings.batch_wait_timeout_s if wait else 0.0)


def _unpack(results: list[tuple[dict[str, Any] | Exception, int]]) -> dict[str, list]:
    """Per-item answers, batch sizes and errors (an item that broke the model fails alone)."""
    return {
        "answers": [None if isinstance(a, Exception) else a for a, _ in results],
        "batch_sizes": [size for _, size in results],
        "errors": [f"{type(a).__name__}: {a}" if isinstance(a, Exception) else None
                   for a, _ in results],
    }  # fmt: skip


@serve.deployment
class ModelDeployment:
    """One model: loads it, runs a warm-up inference (so a replica that cannot answer never
    becomes ready), then answers every item of every request through ``@serve.batch``."""

    def __init__(self, entry: dict[str, Any]) -> None:
        self.entry = ModelEntry.model_validate(entry)
        self.predictor = load_predictor(Path(self.entry.path), self.entry.intra_op_threads)
        _configure_batching(self._batch, self.entry, wait=False)

    def check_health(self) -> None:
        if self.predictor.model is None:
            raise RuntimeError("model not loaded")

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _batch(self, items: list[dict[str, str]]) -> list[tuple[Any, int]]:
        # ONNX Runtime releases the GIL: run it off the event loop so new requests keep queueing.
        answers = await asyncio.to_thread(predict_isolated, self.predictor, items)
        return [(answer, len(items)) for answer in answers]

    async def predict(self, items: list[dict[str, str]]) -> dict[str, list]:
        """``{"answers", "batch_sizes", "errors"}``: lists in item order."""
        return _unpack(list(await asyncio.gather(*(self._batch(item) for item in items))))


@serve.deployment
class StoreDeployment:
    """Many models on few replicas: the request's multiplexed model id picks ``store/<id>``;
    models load on first use and the least recently used is dropped past the per-replica cap."""

    def __init__(self, entry: dict[str, Any]) -> None:
        self.entry = StoreEntry.model_validate(entry)
        self.store = ModelStore(self.entry.path)
        threads = self.entry.intra_op_threads

        async def load(model_id: str) -> Any:
            folder = self.store.resolve(model_id)
            return await asyncio.to_thread(load_predictor, folder, threads)

        self.get_model = serve.multiplexed(
            max_num_models_per_replica=self.entry.max_models_per_replica
        )(load)
        _configure_batching(self._batch, self.entry, wait=False)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _batch(self, pairs: list[tuple[str, dict[str, str]]]) -> list[tuple[Any, int]]:
        results: list[tuple[Any, int]] = [(None, 0)] * len(pairs)
        for model_id in dict.fromkeys(model_id for model_id, _ in pairs):
            indexes = [i for i, (m, _) in enumerate(pairs) if m == model_id]
            predictor = await self.get_model(model_id)
            items = [pairs[i][1] for i in indexes]
            answers = await asyncio.to_thread(predict_isolated, predictor, items)
            for index, answer in zip(indexes, answers, strict=True):
                results[index] = (answer, len(items))
        return results

    async def predict(self, items: list[dict[str, str]]) -> dict[str, list]:
        model_id = serve.get_multiplexed_model_id()
        self.store.resolve(model_id)  # the gateway checked too; never trust the caller
        return _unpack(list(await asyncio.gather(*(self._batch((model_id, i)) for i in items))))


@serve.deployment(name=GATEWAY)
@serve.ingress()
class Gateway:
    """The HTTP ingress: checks every request, then calls the model's deployment (retrying on
    another replica when the one it called died)."""

    def __init__(
        self,
        config: dict[str, Any],
        models: dict[str, DeploymentHandle],
        store: DeploymentHandle | None = None,
    ) -> None:
        self.config = AppConfig.model_validate(config)
        self.dedicated = {
            entry.name: model_card(entry.name, Path(entry.path), entry.placement, entry.version)
            for entry in self.config.models
        }
        self.handles = models
        self.entries = {entry.name: entry for entry in self.config.models}
        # placement: gateway — loaded (and warmed up) here, so the gateway is not ready without
        self.local = {
            entry.name: load_predictor(Path(entry.path), entry.intra_op_threads)
            for entry in self.config.models
            if entry.placement == "gateway"
        }
        self._senders: dict[str, Any] = {}
        self.store = ModelStore(self.config.store.path) if self.config.store else None
        self.store_handle = store
        self.metrics = ServingMetrics(export_to_ray=self.config.ray_metrics)
        env = self.config.auth_token_env
        self.token = os.environ.get(env) or None if env else None

    def __serve_build_asgi_app__(self) -> Any:
        """Called by Serve after ``__init__``: the replica's HTTP app."""
        return build_api(self)

    def cards(self) -> list[ModelCard]:
        cards = list(self.dedicated.values())
        if self.store is not None:
            cards += [self.store.card(i) for i in self.store.ids() if i not in self.dedicated]
        return cards

    def names(self) -> list[str]:
        return list(self.dedicated) + (self.store.ids() if self.store is not None else [])

    def card(self, name: str) -> ModelCard:
        if name in self.dedicated:
            return self.dedicated[name]
        if self.store is None or name not in self.store:
            raise UnknownModel(name, self.names())
        return self.store.card(name)

    async def predict(self, name: str, items: list[dict[str, str]]) -> tuple[list, list[int]]:
        """Answers for ``items``: each item joins the model's gateway-side batch, so concurrent
        requests cross to the model replicas in one call per batch, not one per request."""
        dedicated = name in self.handles or name in self.local
        if not dedicated and (self.store is None or name not in self.store):  # cached listing
            raise UnknownModel(name, self.names())
        sender = self._senders.get(name) or self._make_sender(name)
        results = await asyncio.gather(*(sender(item) for item in items))
        for index, (_, _, error) in enumerate(results):
            if error is not None:  # validated input should never get here; say what happened
                raise ApiError(500, f"model '{name}' failed on item {index}: {error}", "model")
        return [answer for answer, _, _ in results], [size for _, size, _ in results]

    def _make_sender(self, name: str) -> Any:
        """A ``@serve.batch`` function that sends a whole batch of items for ``name`` at once
        (or, for a model placed in the gateway, predicts it here, one batch at a time)."""
        settings: DeploymentSettings
        if name in self.local:
            return self._make_local_batcher(name)
        if name in self.handles:
            handle, settings = self.handles[name], self.entries[name]
        else:
            assert self.store_handle is not None and self.config.store is not None
            handle = self.store_handle.options(multiplexed_model_id=name)
            settings = self.config.store

        async def send(items: list[dict[str, str]]) -> list[tuple[Any, int, str | None]]:
            result = await self._call(name, handle, items)
            return list(
                zip(result["answers"], result["batch_sizes"], result["errors"], strict=True)
            )

        sender = serve.batch(
            max_batch_size=settings.max_batch_size,
            batch_wait_timeout_s=settings.batch_wait_timeout_s,
            max_concurrent_batches=GATEWAY_BATCHES_IN_FLIGHT,
        )(send)
        self._senders[name] = sender
        return sender

    def _make_local_batcher(self, name: str) -> Any:
        predictor, settings = self.local[name], self.entries[name]

        async def run(items: list[dict[str, str]]) -> list[tuple[Any, int, str | None]]:
            # ONNX Runtime releases the GIL: the event loop keeps taking requests meanwhile,
            # and they queue into the next batch
            answers = await asyncio.to_thread(predict_isolated, predictor, items)
            return [
                (None, len(items), f"{type(a).__name__}: {a}")
                if isinstance(a, Exception)
                else (a, len(items), None)
                for a in answers
            ]

        batcher = serve.batch(
            max_batch_size=settings.max_batch_size,
            batch_wait_timeout_s=settings.batch_wait_timeout_s,
        )(run)
        self._senders[name] = batcher
        return batcher

    async def _call(self, name: str, handle: DeploymentHandle, items: list) -> dict[str, list]:
        """One call to the model's deployment, retried when the replica died under it."""
        for attempt in range(RETRIES + 1):
            try:
                return await handle.predict.remote(items)
            except RETRYABLE:
                if attempt == RETRIES:
                    raise ApiError(
                        503, f"model '{name}' has no replica that answers right now; retry", "model"
                    ) from None
                await asyncio.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")


def deployment_name(model: str) -> str:
    return "Model_" + re.sub(r"[^A-Za-z0-9_-]", "_", model)


def parse_app_config(args: dict[str, Any] | AppConfig) -> AppConfig:
    """Validated app arguments; raises ValueError with one readable line if they are bad."""
    if isinstance(args, AppConfig):
        return args
    try:
        return AppConfig.model_validate(args)
    except ValidationError as err:
        raise ValueError(f"invalid raynlp serve arguments: {validation_message(err)}") from None


def resolve_paths(config: AppConfig) -> AppConfig:
    """Absolute model and store paths, after checking each holds what it should.

    A relative path is taken from the current directory of the process that builds the app
    (for ``serve deploy`` that is a process on the cluster, not the shell that ran the command).
    """
    models = []
    for entry in config.models:
        folder = Path(entry.path).expanduser().resolve()
        model_card(entry.name, folder, "deployment")  # FileNotFoundError names the folder
        check_servable(folder)
        models.append(entry.model_copy(update={"path": str(folder)}))
    store = config.store
    if store is not None:
        store = store.model_copy(update={"path": str(ModelStore(store.path).root)})
    return config.model_copy(update={"models": models, "store": store})


def fit_to_cluster(config: AppConfig, cluster_cpus: float) -> tuple[AppConfig, str | None]:
    """``config`` with its replicas' CPU reservations shrunk so that every deployment's
    ``min_replicas`` fit on ``cluster_cpus`` (only deployments whose ``replica_cpus`` was left
    unset are changed), and a note saying so; ValueError when even that cannot fit.

    Without this, three models on a 2-CPU laptop wait forever for CPUs that never come.
    """

    def cpus(d: DeploymentSettings) -> float:
        return float(d.deployment_options()["ray_actor_options"]["num_cpus"])

    deployments: list[DeploymentSettings] = [m for m in config.models if m.placement != "gateway"]
    if config.store is not None:
        deployments.append(config.store)
    gateway = gateway_cpus(config)
    need = gateway + sum(max(1, d.min_replicas) * cpus(d) for d in deployments)
    if need <= cluster_cpus + 1e-9:
        return config, None
    flexible = [d for d in deployments if d.replica_cpus is None]
    fixed = gateway + sum(
        max(1, d.min_replicas) * cpus(d) for d in deployments if d.replica_cpus is not None
    )
    slots = sum(max(1, d.min_replicas) for d in flexible)
    share = math.floor((cluster_cpus - fixed) / slots * 100) / 100 if slots else 0.0
    if share < 0.05:
        raise ValueError(
            f"the app needs {need:g} CPUs to start (gateway {gateway:g} + "
            f"min_replicas × replica_cpus per model) but the cluster has {cluster_cpus:g}: "
            "lower replica_cpus or min_replicas, or add nodes"
        )
    shrink = {id(d) for d in flexible}

    def fitted(d: Any) -> Any:
        return d.model_copy(update={"replica_cpus": share}) if id(d) in shrink else d

    store = fitted(config.store) if config.store is not None else None
    fitted_config = config.model_copy(
        update={"models": [fitted(m) for m in config.models], "store": store}
    )
    note = (
        f"[raynlp] {len(deployments)} deployment(s) need {need:g} CPUs at min_replicas; the "
        f"cluster has {cluster_cpus:g}: each replica without replica_cpus reserves {share:g} CPU"
    )
    return fitted_config, note


def build_app(args: dict[str, Any] | AppConfig) -> Application:
    """The Serve application for ``args`` (see :class:`AppConfig`).

    Raises ValueError for bad arguments and FileNotFoundError when a model folder holds no model.
    """
    config = resolve_paths(parse_app_config(args))
    handles = {
        entry.name: ModelDeployment.options(
            name=deployment_name(entry.name), **entry.deployment_options()
        ).bind(entry.model_dump())
        for entry in config.models
        if entry.placement == "deployment"
    }
    store = None
    if config.store is not None:
        store = StoreDeployment.options(name=STORE, **config.store.deployment_options()).bind(
            config.store.model_dump()
        )
    gateway = Gateway.options(
        num_replicas=1,
        max_ongoing_requests=1000,
        ray_actor_options={"num_cpus": gateway_cpus(config)},
    )
    return gateway.bind(config.model_dump(), handles, store)


def gateway_cpus(config: AppConfig) -> float:
    """The gateway's CPUs: its own, plus each model placed in it (as its replica would have)."""
    return config.gateway_cpus + sum(
        float(entry.deployment_options()["ray_actor_options"]["num_cpus"])
        for entry in config.models
        if entry.placement == "gateway"
    )


INGRESS_MODES = ("direct", "throughput", "proxy")


def ingress_env(mode: str, port: int) -> dict[str, str]:
    """Environment Ray must start with for ``mode``: 'direct' makes the gateway replica itself
    the HTTP server on ``port`` (Serve direct ingress; no proxy hop), 'proxy' is Serve's
    default HTTP proxy actor."""
    if mode not in INGRESS_MODES:
        raise ValueError(f"ingress must be one of {', '.join(INGRESS_MODES)}, not '{mode}'")
    if mode == "proxy":
        return {}
    extra = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"} if mode == "throughput" else {}
    return {
        **extra,
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + 1),  # exclusive: one gateway
    }


def proxy_port(port: int, ingress: str) -> int:
    """Where Serve's own HTTP proxy listens: ``port``, or with direct ingress (which owns
    ``port``) the next one (Serve still starts a proxy on the head node; same routes)."""
    return port if ingress == "proxy" else port + 1


@contextmanager
def serving_env(mode: str, port: int) -> Iterator[dict[str, str]]:
    """Set :func:`ingress_env` for the Ray processes started inside (restored after)."""
    env = ingress_env(mode, port)
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_app(
    config: AppConfig | dict[str, Any],
    host: str = "127.0.0.1",
    port: int = 8000,
    route_prefix: str = "/",
    blocking: bool = False,
    name: str = APP_NAME,
    ingress: str = "proxy",
) -> DeploymentHandle:
    """Deploy on ``host:port`` under ``route_prefix``; return the gateway's handle.

    Starts Serve with those HTTP options (Ray must be initialized, with :func:`serving_env` of
    the same ``ingress`` mode in its environment). Returns once every model
    replica has loaded its model and run a warm-up inference; with ``blocking=True`` it then
    waits until Ctrl-C. If Serve is already running, its HTTP options stay as they are.
    """
    config, note = fit_to_cluster(
        parse_app_config(config), float(ray.cluster_resources().get("CPU", 0.0))
    )
    if note:
        print(note, flush=True)
    app = build_app(config)
    serve.start(http_options={"host": host, "port": proxy_port(port, ingress)})
    return serve.run(app, name=name, route_prefix=route_prefix, blocking=blocking)


def model_name_for(folder: str | Path) -> str:
    """Default route name of an exported folder: the run's name for ``runs/<run>/export/<x>``
    (e.g. ``runs/sentiment/export/serving`` → ``sentiment``), else the folder's own name."""
    path = Path(folder).expanduser().absolute()
    name = path.parents[1].name if path.parent.name == "export" else path.name
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name).lstrip(".-_") or "model"


def load_serve_config(path: str | Path) -> tuple[AppConfig, dict[str, Any], str]:
    """(app arguments, http_options, route_prefix) of a Serve config file's raynlp app."""
    import yaml

    raw = yaml.safe_load(Path(path).read_text()) or {}
    apps = [
        a for a in raw.get("applications", []) if a.get("import_path", "").endswith("build_app")
    ]
    if len(apps) != 1:
        raise ValueError(f"{path}: expected one application with import_path ...:build_app")
    return (
        parse_app_config(apps[0].get("args") or {}),
        raw.get("http_options") or {},
        apps[0].get("route_prefix", "/"),
    )


def serve_until_interrupted(
    config: AppConfig,
    host: str,
    port: int,
    ingress: str,
    address: str | None = None,
    route_prefix: str = "/",
    blocking: bool = True,
) -> None:
    """``raynlp serve``: start a private Ray with ``ingress``'s environment (or join the cluster
    at ``address``), deploy, print where to reach it, and block until Ctrl-C."""
    from raynlp.runtime import ray_session

    joining = bool(address or os.environ.get("RAY_ADDRESS")) or ray.is_initialized()
    if joining and ingress != "proxy":
        print(
            "[raynlp] joining a running cluster: direct ingress works only if it was started "
            f"with {' '.join(f'{k}={v}' for k, v in ingress_env(ingress, port).items())}; "
            "serving through Serve's proxy instead",
            flush=True,
        )
        ingress = "proxy"
    with ExitStack() as stack:
        with serving_env(ingress, port):  # Ray processes inherit it; restored right after
            stack.enter_context(ray_session(address))
        try:
            names = ", ".join(m.name for m in config.models) or "-"
            store = f"; store: {config.store.path}" if config.store else ""
            print(f"[raynlp] deploying models: {names}{store}", flush=True)
            run_app(config, host, port, route_prefix, name=APP_NAME, ingress=ingress)
            base = f"http://{host}:{port}{route_prefix.rstrip('/')}"
            print(f"[raynlp] ready: {base}/v1/models (docs: {base}/docs, metrics: {base}/metrics)")
            if config.auth_token_env and os.environ.get(config.auth_token_env):
                print(f"[raynlp] bearer token required (from ${config.auth_token_env})")
            sys.stdout.flush()
            while blocking:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("[raynlp] stopping", flush=True)
        finally:
            serve.shutdown()
