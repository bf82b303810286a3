"""Starting and attaching to Ray: a private local cluster by default, a running one on request."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import ray

WORKER_ENV = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_TELEMETRY": "1"}


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Use the Ray cluster at ``address`` / $RAY_ADDRESS, else start a private one and stop it after.

    Inside ``ray job submit`` $RAY_ADDRESS is set, so jobs run on the submitting cluster.
    """
    if ray.is_initialized():
        yield
        return
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    kwargs = {"num_cpus": num_cpus} if target == "local" and num_cpus else {}
    ray.init(
        address=target,
        runtime_env={"env_vars": WORKER_ENV},
        log_to_driver=True,
        configure_logging=True,
        logging_level="WARNING",
        **kwargs,
    )
    try:
        yield
    finally:
        ray.shutdown()
