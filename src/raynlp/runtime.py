"""Starting and attaching to Ray: a private local cluster by default, a running one on request."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import ray

WORKER_ENV = {
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    # Train V2 tees worker print() into its logger as well: every progress line came out twice.
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
}


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Use the Ray cluster at ``address`` / $RAY_ADDRESS, else start a private one and stop it after.

    Inside ``ray job submit`` $RAY_ADDRESS is set, so jobs run on the submitting cluster.
    """
    if ray.is_initialized():
        yield
        return
    for key, value in WORKER_ENV.items():
        os.environ.setdefault(key, value)
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
