"""The serving platform under load, failure and autoscaling, over real HTTP on loopback.

One app (direct ingress) with two deployments of the tiny INT8 classifier:

* ``steady``: 2 replicas; 16 clients hammer it for 30 s while one replica actor is killed. Not
  one client request may fail (the gateway retries on the surviving replica), and Serve must
  bring up a replacement.
* ``elastic``: 1-2 replicas, target 1 ongoing request, 1 s upscale delay; 16 clients must make
  it scale to 2 replicas, which Serve's status reports.

Every loop is bounded by a deadline; the fixture shuts Serve and Ray down.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import serve_app

from raynlp.serving.settings import AppConfig, ModelEntry

CLIENTS = 16
LOAD_SECONDS = 30.0
TIMEOUT_S = 420


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, tiny_base_model: Path) -> Path:
    from conftest import untrained_model_dir

    from raynlp.export.onnx import export_onnx, quantize_dynamic_int8

    root = tmp_path_factory.mktemp("serve-load")
    model_dir = untrained_model_dir("classification", tiny_base_model, root / "model")
    return quantize_dynamic_int8(export_onnx(model_dir, root / "onnx"), root / "int8", "avx2")


@pytest.fixture(scope="module")
def url(tiny_model: Path) -> Iterator[str]:
    shared = {"path": str(tiny_model), "replica_cpus": 0.25, "batch_wait_timeout_s": 0.005}
    config = AppConfig(
        models=[
            ModelEntry(name="steady", min_replicas=2, max_replicas=2, **shared),
            ModelEntry(
                name="elastic",
                min_replicas=1,
                max_replicas=2,
                target_ongoing_requests=1,
                upscale_delay_s=1,
                downscale_delay_s=600,
                **shared,
            ),
        ],
        auth_token_env=None,
    )
    with serve_app(config, ingress="direct") as base:
        yield base


@dataclass
class LoadResult:
    ok: int = 0
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)


def hammer(url: str, model: str, seconds: float, stop: threading.Event | None = None) -> LoadResult:
    """CLIENTS threads posting back to back until the deadline (or ``stop``); no client retries."""
    result = LoadResult()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(index: int) -> None:
        session = requests.Session()
        n = 0
        while time.monotonic() < deadline and not (stop and stop.is_set()):
            n += 1
            body = {"text": f"client {index} request {n}: a fine film"}
            started = time.perf_counter()
            try:
                response = session.post(f"{url}/v1/models/{model}/predict", json=body, timeout=30)
                failed = (
                    None
                    if response.status_code == 200
                    else f"{response.status_code} {response.text[:200]}"
                )
            except requests.RequestException as err:
                failed = f"{type(err).__name__}: {err}"
            with lock:
                if failed:
                    result.errors.append(failed)
                else:
                    result.ok += 1
                    result.latencies.append(time.perf_counter() - started)

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        list(pool.map(client, range(CLIENTS)))
    return result


def replica_actors(deployment: str) -> list[str]:
    import ray

    return sorted(
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["namespace"] == "serve" and f"#{deployment}#" in actor["name"]
    )


def deployment_status(deployment: str) -> Any:
    from ray import serve

    return serve.status().applications["raynlp"].deployments[deployment]


def running(deployment: str) -> int:
    return deployment_status(deployment).replica_states.get("RUNNING", 0)


@pytest.mark.timeout(TIMEOUT_S)
def test_load_survives_a_killed_replica(url: str) -> None:
    import ray

    before = replica_actors("Model_steady")
    assert len(before) == 2 and running("Model_steady") == 2, before
    with ThreadPoolExecutor(max_workers=1) as pool:
        load = pool.submit(hammer, url, "steady", LOAD_SECONDS)
        time.sleep(LOAD_SECONDS / 3)
        victim = before[0]
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        result = load.result(timeout=LOAD_SECONDS * 3)
    seconds = LOAD_SECONDS
    print(f"\n{result.ok} requests in {seconds:.0f} s ({result.ok / seconds:.0f}/s), "
          f"{len(result.errors)} errors, one of 2 replicas killed at {seconds / 3:.0f} s")  # fmt: skip
    assert result.errors == [], result.errors[:5]
    assert result.ok > 10 * seconds, "the load was too light to mean anything"

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        now = replica_actors("Model_steady")
        if running("Model_steady") == 2 and victim not in now and len(now) == 2:
            break
        time.sleep(1)
    now = replica_actors("Model_steady")
    assert victim not in now and len(now) == 2 and running("Model_steady") == 2, now
    print(f"replacement replica: {sorted(set(now) - set(before))}")
    response = requests.post(f"{url}/v1/models/steady/predict", json={"text": "ok"}, timeout=30)
    assert response.status_code == 200


@pytest.mark.timeout(TIMEOUT_S)
def test_autoscaling_adds_a_replica_under_load(url: str) -> None:
    assert running("Model_elastic") == 1
    stop = threading.Event()
    timeline: list[tuple[float, int, str]] = []
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=1) as pool:
        load = pool.submit(hammer, url, "elastic", 90.0, stop)
        while time.monotonic() - started < 90:
            status = deployment_status("Model_elastic")
            count = status.replica_states.get("RUNNING", 0)
            point = (round(time.monotonic() - started, 1), count, str(status.status))
            if not timeline or timeline[-1][1:] != point[1:]:
                timeline.append(point)
            if count >= 2:
                break
            time.sleep(0.5)
        stop.set()
        result = load.result(timeout=60)
    print("\nautoscaling timeline (s, running replicas, status):", timeline)
    assert running("Model_elastic") == 2, timeline
    assert any("UPSCALING" in status for _, _, status in timeline), timeline
    assert result.errors == [], result.errors[:5]
