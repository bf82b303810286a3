"""`raynlp serve` as a user runs it: a child process with its own private Ray (direct ingress),
two models and a store, reachable on the printed URL, stopped with Ctrl-C (SIGINT)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import free_port

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, tiny_base_model: Path) -> dict[str, Path]:
    from conftest import untrained_model_dir

    from raynlp.export.onnx import export_onnx

    root = tmp_path_factory.mktemp("serve-cli")
    folders = {}
    for task in ("classification", "similarity"):
        model_dir = untrained_model_dir(task, tiny_base_model, root / task / "model")
        folders[task] = export_onnx(model_dir, root / task / "export" / "onnx")
    store = root / "store"
    store.mkdir()
    shutil.copytree(folders["classification"], store / "tenant-a")
    folders["store"] = store
    return folders


@pytest.mark.timeout(300)
def test_raynlp_serve_runs_until_ctrl_c(exported: dict[str, Path], tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "RAYNLP_SERVE_TOKEN": "cli-token", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(BIN / "raynlp"), "serve", str(exported["classification"]),
             f"pairs={exported['similarity']}", "--store", str(exported["store"]),
             "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    auth = {"authorization": "Bearer cli-token"}
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and "[raynlp] ready:" not in log.read_text():
            assert process.poll() is None, log.read_text()[-3000:]
            time.sleep(1)
        text = log.read_text()
        assert f"[raynlp] ready: {base}/v1/models" in text, text[-3000:]
        assert "bearer token required" in text
        models = requests.get(f"{base}/v1/models", headers=auth, timeout=30).json()["models"]
        # runs-style folder <x>/export/onnx → named after <x>; NAME=FOLDER keeps its name
        assert [(m["name"], m["task"]) for m in models] == [
            ("classification", "classification"), ("pairs", "similarity"),
            ("tenant-a", "classification"),
        ]  # fmt: skip
        answer = requests.post(
            f"{base}/v1/models/pairs/predict",
            json={"text": "a cat", "text_pair": "a dog"},
            headers=auth,
            timeout=30,
        )
        assert answer.status_code == 200 and set(answer.json()) == {"score", "truncated"}
        assert requests.get(f"{base}/v1/models", timeout=30).status_code == 401
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert code == 0, log.read_text()[-3000:]
    assert "[raynlp] stopping" in log.read_text()
