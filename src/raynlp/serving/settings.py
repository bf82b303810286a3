"""Typed arguments of the serving application: which models, how each deployment batches and
scales, and the request limits every route enforces.

This is the ``args:`` mapping of a Serve config file (``import_path:
raynlp.serving.app:build_app``) and what ``raynlp serve`` builds from its command line and a job
config's ``serve:`` section. Bad arguments fail before anything is deployed, naming the key.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from raynlp.config import ServeSection, _Section, check_replica_bounds

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""Model names and store ids: a letter or digit, then letters, digits, '_', '.', '-' (≤ 64).
No '/', no leading '.', so a name can never leave the model store."""

DEFAULT = ServeSection()


def valid_model_name(name: str) -> bool:
    return bool(MODEL_NAME.fullmatch(name)) and ".." not in name


class DeploymentSettings(_Section):
    """How one deployment batches and scales (every key defaults to the ``serve:`` section's)."""

    max_batch_size: int = Field(DEFAULT.max_batch_size, ge=1, le=1024)
    batch_wait_timeout_s: float = Field(DEFAULT.batch_wait_timeout_s, ge=0.0, le=1.0)
    min_replicas: int = Field(DEFAULT.min_replicas, ge=0)
    max_replicas: int = Field(DEFAULT.max_replicas, ge=1)
    target_ongoing_requests: float = Field(DEFAULT.target_ongoing_requests, gt=0)
    upscale_delay_s: float = Field(DEFAULT.upscale_delay_s, ge=0)
    downscale_delay_s: float = Field(DEFAULT.downscale_delay_s, ge=0)
    intra_op_threads: int = Field(DEFAULT.intra_op_threads, ge=0)
    replica_cpus: float | None = Field(DEFAULT.replica_cpus, gt=0)

    @model_validator(mode="after")
    def _replica_bounds(self) -> DeploymentSettings:
        check_replica_bounds(self.min_replicas, self.max_replicas)
        return self

    def deployment_options(self) -> dict[str, Any]:
        """Ray Serve options: autoscaling bounds and delays, concurrency, CPUs per replica."""
        return {
            "autoscaling_config": {
                "min_replicas": self.min_replicas,
                "initial_replicas": max(1, self.min_replicas),
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests,
                "upscale_delay_s": self.upscale_delay_s,
                "downscale_delay_s": self.downscale_delay_s,
            },
            # Serve's default (5) would cap a batch at 5 requests per replica.
            "max_ongoing_requests": max(
                self.max_batch_size, math.ceil(2 * self.target_ongoing_requests)
            ),
            "ray_actor_options": {"num_cpus": self.replica_cpus or max(1, self.intra_op_threads)},
        }


class ModelEntry(DeploymentSettings):
    """One exported model with its own deployment."""

    name: str = Field(description="Route name: POST /v1/models/{name}/predict.")
    path: str = Field(min_length=1, description="Exported model folder (raynlp.json inside).")
    version: str | None = Field(
        None, description="Shown by GET /v1/models; default: a fingerprint of the model files."
    )
    placement: Literal["deployment", "gateway"] = Field(
        DEFAULT.placement,
        description="'deployment': the model's own autoscaled deployment (the gateway calls "
        "it); 'gateway': the gateway replica loads the model and batches it in-process (no "
        "replica-to-replica hop; min/max_replicas and the scaling keys do not apply).",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not valid_model_name(name):
            raise ValueError(
                f"'{name}' is not a model name: use letters, digits, '_', '.', '-' "
                "(start with a letter or digit, at most 64 characters)"
            )
        return name


class StoreEntry(DeploymentSettings):
    """A folder of exported models served by one multiplexed deployment: each sub-folder is a
    model id (``store/<id>/raynlp.json``), loaded on first request, at most
    ``max_models_per_replica`` kept per replica (least recently used dropped)."""

    path: str = Field(min_length=1)
    max_models_per_replica: int = Field(4, ge=1, le=256)


class AppConfig(_Section):
    """Everything the serving application needs (host, port and route prefix live in the Serve
    config's ``http_options`` / ``route_prefix`` instead)."""

    models: list[ModelEntry] = Field(default_factory=list)
    store: StoreEntry | None = None
    max_text_chars: int = Field(DEFAULT.max_text_chars, ge=1)
    max_items: int = Field(DEFAULT.max_items, ge=1)
    max_body_bytes: int = Field(DEFAULT.max_body_bytes, ge=256)
    on_too_long: Literal["truncate", "reject"] = DEFAULT.on_too_long
    auth_token_env: str | None = Field(
        DEFAULT.auth_token_env,
        description="Environment variable holding the bearer token; requests need it when the "
        "variable is set on the gateway replica (unset: no auth).",
    )
    gateway_cpus: float = Field(DEFAULT.gateway_cpus, ge=0)
    ray_metrics: bool = Field(
        False,
        description="Also record the per-model metrics as Ray Serve custom metrics (exported "
        "on Ray's metrics port next to Serve's own); GET /metrics has them either way.",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_http_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, where in ARG_FIELDS_SET_ELSEWHERE.items():
                if key in data:
                    raise ValueError(f"'{key}' is not an app argument; set it in {where}")
            if "model_dir" in data:
                raise ValueError(
                    "'model_dir' was replaced by 'models: [{name: ..., path: ...}]' (one entry "
                    "per model)"
                )
        return data

    @model_validator(mode="after")
    def _something_to_serve(self) -> AppConfig:
        if not self.models and self.store is None:
            raise ValueError("nothing to serve: give 'models' (a list) and/or a 'store' folder")
        names = [model.name for model in self.models]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"model names must be unique; repeated: {', '.join(duplicates)}")
        return self

    @classmethod
    def from_section(
        cls, section: ServeSection, models: dict[str, str], store: str | None = None
    ) -> AppConfig:
        """App arguments for ``models`` (name → folder) with a job config's serve settings."""
        shared = section.model_dump(include=set(DeploymentSettings.model_fields))
        return cls(
            models=[
                ModelEntry(name=name, path=path, placement=section.placement, **shared)
                for name, path in models.items()
            ],
            store=StoreEntry(path=store, **shared) if store else None,
            **section.model_dump(include=APP_LEVEL_KEYS),
        )


APP_LEVEL_KEYS = {
    "max_text_chars",
    "max_items",
    "max_body_bytes",
    "on_too_long",
    "auth_token_env",
    "gateway_cpus",
}

ARG_FIELDS_SET_ELSEWHERE = {
    "host": "http_options.host of the Serve config",
    "port": "http_options.port of the Serve config",
    "route_prefix": "the application's route_prefix",
}
