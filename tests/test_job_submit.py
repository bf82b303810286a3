"""Stock Ray tooling against a real head node the test starts: `ray job submit … -- raynlp train`,
then `serve deploy` of the shipped serve/sentiment.yaml over the model that job trained.

The head runs under `ray start --head --block` in its own process group, on loopback ports the
test picked, with a private temp dir; it is stopped by signalling that group (never `ray stop`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests
import yaml
from conftest import REPO, tiny_job, write_job

BIN = Path(sys.executable).parent


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_for(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@pytest.fixture(scope="module")
def ray_head():
    """A private head node: yields (dashboard address, env for CLI calls)."""
    (
        gcs,
        dashboard,
        client,
        node_manager,
        object_manager,
        agent_grpc,
        agent_http,
        metrics,
        runtime_env,
    ) = free_ports(9)
    temp_dir = tempfile.mkdtemp(prefix="rnhead", dir="/tmp")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    command = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--block",
        "--disable-usage-stats",
        "--node-ip-address=127.0.0.1",
        f"--port={gcs}",
        "--num-cpus=2",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}",
        f"--ray-client-server-port={client}",
        f"--node-manager-port={node_manager}",
        f"--object-manager-port={object_manager}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--dashboard-agent-listen-port={agent_http}",
        f"--metrics-export-port={metrics}",
        f"--runtime-env-agent-port={runtime_env}",
        "--min-worker-port=20000",
        "--max-worker-port=20999",
        f"--temp-dir={temp_dir}",
    ]
    head = subprocess.Popen(
        command,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        wait_for(f"{address}/api/version", timeout=120)
        yield address, env
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=10)


@pytest.fixture(scope="module")
def job_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("job")


@pytest.mark.timeout(600)
def test_ray_job_submit_trains(job_dir: Path, tiny_base_model: Path, ray_head):
    address, env = ray_head
    tmp_path = job_dir
    work = tmp_path / "work"
    work.mkdir()
    job = tiny_job(tmp_path, tiny_base_model, training={"epochs": 1})
    write_job(work / "job.yaml", job)

    submitted = subprocess.run(
        [
            str(BIN / "ray"),
            "job",
            "submit",
            "--address",
            address,
            "--working-dir",
            str(work),
            "--",
            "raynlp",
            "train",
            "job.yaml",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=480,
    )
    output = submitted.stdout + submitted.stderr
    assert submitted.returncode == 0, output[-3000:]
    assert "succeeded" in output.lower(), output[-3000:]
    assert "[raynlp] model written to" in output
    model_dir = tmp_path / "runs" / "tiny" / "model"
    assert (model_dir / "raynlp.json").is_file()
    assert (model_dir / "model.safetensors").is_file()


@pytest.mark.timeout(600)
def test_ray_job_submit_tunes(job_dir: Path, tiny_base_model: Path, ray_head):
    """`ray job submit … -- raynlp tune`: 2 trials on the head's 2 CPUs, 2 epochs, halved after
    the first (synchronous ASHA, forced); the best trial's model is consolidated."""
    address, env = ray_head
    work = job_dir / "tune_work"
    work.mkdir()
    job = tiny_job(
        job_dir,
        tiny_base_model,
        name="tiny_tune",
        training={"epochs": 2, "batch_size": 32},
        scaling={"num_workers": 1},
        tune={
            "space": {"learning_rate": {"grid": [3e-3, 1e-7]}},
            "search_alg": "grid",
            "num_samples": 1,
            "asha": {"synchronous": True},
        },
    )
    job["data"]["max_train_rows"] = 128
    write_job(work / "job.yaml", job)
    submitted = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(work),
         "--", "raynlp", "tune", "job.yaml"],
        env=env, capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    output = submitted.stdout + submitted.stderr
    assert submitted.returncode == 0, output[-3000:]
    assert "synchronous successive halving (2 to epoch 1, 1 to epoch 2)" in output
    run = job_dir / "runs" / "tiny_tune"
    summary = json.loads((run / "metrics.json").read_text())
    assert sorted(t["epochs_run"] for t in summary["trials"]) == [1, 2]
    assert (run / "model" / "model.safetensors").is_file()


@pytest.mark.timeout(300)
def test_serve_deploy_of_the_shipped_config(job_dir: Path, ray_head):
    """serve/sentiment.yaml, with only the model path and the port changed, deploys and answers."""
    from raynlp.export.pipeline import export_model

    address, env = ray_head
    run_dir = job_dir / "runs" / "tiny"
    if not (run_dir / "model").is_dir():
        pytest.skip("needs the model trained by test_ray_job_submit_trains")
    export_model(run_dir, max_rows=64, min_agreement=0.0)
    (port,) = free_ports(1)
    config = yaml.safe_load((REPO / "serve" / "sentiment.yaml").read_text())
    config["http_options"]["port"] = port
    config["applications"][0]["args"]["models"][0]["path"] = str(run_dir / "export" / "serving")
    deploy_file = job_dir / "serve.yaml"
    deploy_file.write_text(yaml.safe_dump(config))

    serve_cli = [str(BIN / "serve")]
    deployed = subprocess.run(
        [*serve_cli, "deploy", "--address", address, str(deploy_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(f"{url}/healthz", timeout=180)
        predict = f"{url}/v1/models/sentiment/predict"
        answer = requests.post(predict, json={"text": "Best movie ever!"}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["label"] in ("negative", "positive")
        bad = requests.post(predict, json={"text": "   "}, timeout=30)
        assert bad.status_code == 422
        models = requests.get(f"{url}/v1/models", timeout=30).json()["models"]
        assert [(m["name"], m["task"]) for m in models] == [("sentiment", "classification")]
    finally:
        subprocess.run(
            [*serve_cli, "shutdown", "-y", "--address", address],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
