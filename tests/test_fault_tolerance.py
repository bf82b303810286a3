"""Training that survives what clusters do: a worker process killed mid-run (FailureConfig
restarts from the latest checkpoint), a crashed driver resumed with `raynlp train --resume`, and
a 2-node Ray cluster on this machine with one training worker per node."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from conftest import tiny_job, write_job

from raynlp.config import parse_job_config
from raynlp.evaluation import evaluate_model
from raynlp.training.checkpoints import read_checkpoint_meta
from raynlp.training.early_stopping import EarlyStopping
from raynlp.training.trainer import train

BIN = Path(sys.executable).parent
STEPS_PER_EPOCH = 32  # 1024 rows / batch 32


def wait_for_checkpoint(run_dir: Path, timeout: float, thread: threading.Thread | None = None):
    """The metadata of the first checkpoint Ray Train has registered for the run (listed in its
    checkpoint manager snapshot: every rank reported it, so a restart would be handed it)."""
    snapshot = run_dir / "ray" / "train" / "checkpoint_manager_snapshot.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result")
        except (FileNotFoundError, json.JSONDecodeError):
            latest = None
        if latest:
            return read_checkpoint_meta(snapshot.parent / latest["checkpoint_dir_name"])
        if thread is not None and not thread.is_alive():
            raise AssertionError("training ended before its first checkpoint")
        time.sleep(0.2)
    raise TimeoutError(f"no checkpoint in {run_dir} after {timeout}s")


def assert_continuous(metrics: dict, epochs: int) -> None:
    """Every epoch exactly once, and the optimizer step counter never restarted."""
    history = metrics["history"]
    assert [h["epoch"] for h in history] == list(range(1, epochs + 1))
    assert [h["step"] for h in history] == [STEPS_PER_EPOCH * e for e in range(1, epochs + 1)]


@pytest.mark.timeout(480)
def test_killed_worker_restarts_from_latest_checkpoint(
    tmp_path: Path, tiny_base_model: Path, ray_local
):
    config = parse_job_config(
        tiny_job(
            tmp_path,
            tiny_base_model,
            training={"epochs": 4, "learning_rate": 3e-3},
            scaling={"max_failures": 1},
        )
    )
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = train(config)
        except BaseException as err:  # surfaced by the assertions below
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    meta = wait_for_checkpoint(config.run_dir, timeout=240, thread=thread)
    victim = meta["workers"][1]["pid"]  # rank 1's worker process, for real
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=400)
    assert not thread.is_alive(), "training did not finish after the worker was killed"
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]

    resumed = result.metrics["resumed"]
    assert len(resumed) == 1 and resumed[0]["epoch"] >= 1  # restarted once, from a checkpoint
    assert resumed[0]["step"] == STEPS_PER_EPOCH * resumed[0]["epoch"]
    assert_continuous(result.metrics, 4)
    assert victim not in {w["pid"] for w in result.metrics["workers"]}  # a new worker group

    scored = evaluate_model(result.model_dir, str(result.run_dir / "data" / "validation.jsonl"))
    assert scored["metrics"]["accuracy"] == pytest.approx(result.metrics["validation"]["accuracy"])


@pytest.mark.timeout(480)
def test_crashed_run_resumes_with_cli(tmp_path: Path, tiny_base_model: Path):
    """`raynlp train` is killed (driver and its local Ray, SIGKILL) after its first checkpoint;
    `raynlp train --resume RUN` finishes it: weights, optimizer, LR schedule, step and
    early-stopping state come from the checkpoint."""
    job = tiny_job(
        tmp_path,
        tiny_base_model,
        training={
            "epochs": 3,
            "learning_rate": 3e-3,
            "early_stopping": {"enabled": True, "patience": 5, "min_delta": 0.001},
        },
    )
    path = write_job(tmp_path / "job.yaml", job)
    run_dir = tmp_path / "runs" / "tiny"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(
        [str(BIN / "raynlp"), "train", str(path)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the driver and the Ray it started
    )
    try:
        wait_for_checkpoint(run_dir, timeout=300)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
    time.sleep(2)
    assert not (run_dir / "metrics.json").exists()  # it really did not finish

    second = subprocess.run(
        [str(BIN / "raynlp"), "train", "--resume", str(run_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        start_new_session=True,
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resumed from the checkpoint of epoch" in second.stdout + second.stderr

    metrics = json.loads((run_dir / "metrics.json").read_text())
    resumed = metrics["resumed"]
    assert len(resumed) == 1 and 1 <= resumed[0]["epoch"] < 3
    assert_continuous(metrics, 3)
    # the LR schedule continued (linear decay over the whole run), it did not start over
    total = 3 * STEPS_PER_EPOCH
    for entry in metrics["history"]:
        expected = 3e-3 * (total - entry["step"]) / total
        assert entry["lr"]["head"] == pytest.approx(expected, abs=1e-9)
    # early-stopping state spans the crash: replaying all epochs gives the saved state
    replay = EarlyStopping("accuracy", "max", patience=5, min_delta=0.001)
    for entry in metrics["history"]:
        replay.update({"accuracy": entry["val_accuracy"]}, entry["epoch"])
    saved = metrics["early_stopping"]
    assert (saved["best"], saved["best_epoch"], saved["bad_epochs"]) == (
        replay.best,
        replay.best_epoch,
        replay.bad_epochs,
    )
    assert (run_dir / "model" / "model.safetensors").is_file()
    assert (run_dir / "learning_curve.png").is_file()

    again = subprocess.run(
        [str(BIN / "raynlp"), "train", "--resume", str(run_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode != 0 and "nothing to resume" in again.stderr


@pytest.mark.timeout(480)
def test_two_node_cluster_puts_one_worker_per_node(
    tmp_path: Path, tiny_base_model: Path, monkeypatch
):
    import ray
    from ray.cluster_utils import Cluster

    from raynlp.runtime import WORKER_ENV

    # Cluster writes a "current cluster" file into Ray's temp folder: keep it private (short
    # path: Ray's unix sockets live under it)
    monkeypatch.setenv("RAY_TMPDIR", tempfile.mkdtemp(prefix="rn", dir="/tmp"))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, runtime_env={"env_vars": WORKER_ENV})
        nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert len(nodes) == 2
        config = parse_job_config(
            tiny_job(
                tmp_path,
                tiny_base_model,
                # accumulation, clipping, warmup + cosine decay ride along
                training={
                    "epochs": 2,
                    "learning_rate": 3e-3,
                    "gradient_accumulation_steps": 2,
                    "max_grad_norm": 0.5,
                    "warmup_steps": 8,
                    "lr_schedule": "cosine",
                },
                scaling={"num_workers": 2, "placement_strategy": "STRICT_SPREAD"},
            )
        )
        result = train(config)
    finally:
        ray.shutdown()
        cluster.shutdown()

    workers = result.metrics["workers"]
    assert [w["rank"] for w in workers] == [0, 1]
    assert {w["node_id"] for w in workers} == nodes  # one worker on each node
    checkpoint = Path(result.ray_result.checkpoint.path)
    shards = sorted(p.name for p in (checkpoint / "deepspeed").glob("*optim_states.pt"))
    assert len(shards) == 2 and "rank_0" in shards[0] and "rank_1" in shards[1]
    assert [h["epoch"] for h in result.metrics["history"]] == [1, 2]
    # steps count optimizer steps (2 micro-batches each); the rate follows warmup + cosine
    assert_continuous(result.metrics, 2)
    for entry in result.metrics["history"]:
        progress = (entry["step"] - 8) / (2 * STEPS_PER_EPOCH - 8)
        expected = 3e-3 * 0.5 * (1 + math.cos(math.pi * progress))
        assert entry["lr"]["head"] == pytest.approx(expected, abs=1e-9)
    scored = evaluate_model(result.model_dir, str(result.run_dir / "data" / "validation.jsonl"))
    assert scored["metrics"]["accuracy"] == pytest.approx(result.metrics["validation"]["accuracy"])
