"""raynlp's Serve app vs a naive FastAPI + transformers pipeline, and the Serve options measured.

One run, one machine, the same model (the packaged MiniLM with a 2-class head; raynlp serves
its INT8 ONNX export, as the export gate would, the naive server runs the PyTorch model) and the
same sentences (the shipped SST-2 sample):

* in-process p50: tokenizer + ONNX Runtime, no HTTP (the floor);
* for the naive server and for each Serve option: a sequential client (p50 → overhead over the
  in-process p50), then CLIENTS concurrent clients for SECONDS (req/s, p50, p99, errors).

Each Serve option runs in its own process with its own Ray, so environment-level switches
(direct ingress, throughput mode) do not leak between rows. Results: bench/results/serve.json
with ``throughput_ratio_vs_naive``, ``overhead_ms_p50``, ``errors``, ``p99_ms`` for the default
setting (the ``serve:`` section defaults), and every row.

    .venv/bin/python bench/serve_load.py [--seconds 20] [--clients 16]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from common import write_result  # noqa: E402

SAMPLE = BENCH.parent / "src" / "raynlp" / "data" / "samples" / "sst2_validation.tsv"
OPTIONS: list[dict[str, Any]] = [
    {"name": "proxy", "ingress": "proxy", "batch_wait_timeout_s": 0.005, "intra_op_threads": 1},
    {"name": "direct", "ingress": "direct", "batch_wait_timeout_s": 0.005, "intra_op_threads": 1},
    {"name": "direct_wait_1ms", "ingress": "direct", "batch_wait_timeout_s": 0.001,
     "intra_op_threads": 1},
    {"name": "direct_wait_0", "ingress": "direct", "batch_wait_timeout_s": 0.0,
     "intra_op_threads": 1},
    {"name": "direct_2_threads", "ingress": "direct", "batch_wait_timeout_s": 0.005,
     "intra_op_threads": 2},
    {"name": "direct_wait_1ms_2_threads", "ingress": "direct", "batch_wait_timeout_s": 0.001,
     "intra_op_threads": 2},
    {"name": "throughput_mode", "ingress": "throughput", "batch_wait_timeout_s": 0.005,
     "intra_op_threads": 1},
    # placement: gateway — the model runs inside the HTTP gateway replica (no second hop)
    {"name": "in_gateway_wait_1ms", "ingress": "direct", "batch_wait_timeout_s": 0.001,
     "intra_op_threads": 1, "placement": "gateway"},
    {"name": "in_gateway_wait_0", "ingress": "direct", "batch_wait_timeout_s": 0.0,
     "intra_op_threads": 1, "placement": "gateway"},
]  # fmt: skip
GOALS = {"throughput_ratio_vs_naive": 5.0, "overhead_ms_p50": 2.0, "errors": 0}


def texts() -> list[str]:
    lines = SAMPLE.read_text().splitlines()[1:]
    return [line.split("\t")[0] for line in lines if line.strip()][:200]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000.0


def build_models(root: Path) -> tuple[Path, Path]:
    """(PyTorch model folder, its INT8 ONNX export) of MiniLM with a fresh 2-class head."""
    import torch
    from transformers import AutoTokenizer

    from raynlp.config import PACKAGED_MODEL
    from raynlp.export.onnx import export_onnx, pick_kernel_set, quantize_dynamic_int8
    from raynlp.models import resolve_model_path
    from raynlp.tasks import get_task

    base = resolve_model_path(PACKAGED_MODEL)
    model_dir = root / "model"
    torch.manual_seed(0)
    model = get_task("classification").build_model(base, ["negative", "positive"], None)
    model.eval().save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(base).save_pretrained(model_dir)
    meta = {"task": "classification", "labels": ["negative", "positive"], "text_column": "text",
            "text_pair_column": None, "label_column": "label", "max_length": 128,
            "base_model": "minilm"}  # fmt: skip
    (model_dir / "raynlp.json").write_text(json.dumps(meta))
    onnx = export_onnx(model_dir, root / "onnx")
    return model_dir, quantize_dynamic_int8(onnx, root / "int8", pick_kernel_set("auto"))


def in_process_p50(model: Path, sentences: list[str], n: int = 300) -> float:
    from raynlp.serving.predictor import OnnxPredictor

    predictor = OnnxPredictor(model, intra_op_threads=1)
    for text in sentences[:20]:
        predictor.predict([{"text": text}])
    times = []
    for i in range(n):
        started = time.perf_counter()
        predictor.predict([{"text": sentences[i % len(sentences)]}])
        times.append(time.perf_counter() - started)
    return percentile(times, 0.5)


def in_process_ceiling(model: Path, sentences: list[str], batch: int = 16) -> dict[str, float]:
    """Sentences/s of the bare model (tokenizer + ONNX Runtime) on this machine, nothing else
    running: no server can answer faster than this."""
    from raynlp.serving.predictor import OnnxPredictor

    ceiling = {}
    for threads in (1, 2):
        predictor = OnnxPredictor(model, intra_op_threads=threads)
        predictor.predict([{"text": t} for t in sentences[:batch]])
        started, done = time.perf_counter(), 0
        for i in range(0, len(sentences) - batch + 1, batch):
            predictor.predict([{"text": t} for t in sentences[i : i + batch]])
            done += batch
        ceiling[f"threads_{threads}"] = round(done / (time.perf_counter() - started), 1)
    return ceiling


def sequential_p50_ms(url: str, sentences: list[str], n: int = 200) -> float:
    """p50 of one client's requests, one at a time (after 30 warm-up requests)."""
    session = requests.Session()
    for text in sentences[:30]:
        session.post(url, json={"text": text}, timeout=30).raise_for_status()
    sequential = []
    for i in range(n):
        started = time.perf_counter()
        session.post(url, json={"text": sentences[i % len(sentences)]}, timeout=30)
        sequential.append(time.perf_counter() - started)
    return round(percentile(sequential, 0.5), 2)


def measure(url: str, sentences: list[str], seconds: float, clients: int) -> dict[str, Any]:
    """Sequential p50, then ``clients`` concurrent clients for ``seconds``."""
    sequential = sequential_p50_ms(url, sentences)

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(index: int) -> None:
        own = requests.Session()
        i = index
        while time.monotonic() < deadline:
            text = sentences[i % len(sentences)]
            i += clients
            started = time.perf_counter()
            try:
                response = own.post(url, json={"text": text}, timeout=30)
                problem = None if response.status_code == 200 else str(response.status_code)
            except requests.RequestException as err:
                problem = type(err).__name__
            with lock:
                if problem:
                    errors.append(problem)
                else:
                    latencies.append(time.perf_counter() - started)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(client, range(clients)))
    elapsed = time.monotonic() - started
    return {
        "sequential_p50_ms": sequential,
        "requests": len(latencies),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.5), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:5],
    }


def run_naive(
    model_dir: Path, sentences: list[str], seconds: float, clients: int, onnx: bool = False
) -> dict:
    """The naive server (or with ``onnx`` the plain FastAPI + ONNX floor, whose result also
    holds ``empty_roundtrip_p50_ms``: an HTTP request that does no work)."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(BENCH / "naive_server.py"), str(model_dir), str(port)]
        + (["--onnx"] if onnx else []),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).ok:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        result = measure(f"http://127.0.0.1:{port}/predict", sentences, seconds, clients)
        if onnx:
            result["empty_roundtrip_p50_ms"] = sequential_p50_ms(
                f"http://127.0.0.1:{port}/empty", sentences
            )
        return result
    finally:
        server.terminate()
        server.wait(timeout=30)


def run_option(option: dict[str, Any], model: Path, seconds: float, clients: int) -> dict:
    """One Serve option in a child process (its own Ray); returns its measurements."""
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        spec = {**option, "model": str(model), "seconds": seconds, "clients": clients}
        done = subprocess.run(
            [sys.executable, __file__, "--one", json.dumps(spec), "--out", out.name],
            timeout=900,
        )
        if done.returncode != 0:
            return {"failed": f"exit {done.returncode}", "errors": 1}
        return json.loads(Path(out.name).read_text())


def one(spec: dict[str, Any], out: str) -> None:
    """Child process: start Ray for the option, deploy, measure, stop."""
    import os

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray import serve

    from raynlp.serving.app import run_app, serving_env
    from raynlp.serving.settings import AppConfig, ModelEntry

    port = free_port()
    entry = ModelEntry(
        name="sentiment",
        path=spec["model"],
        min_replicas=1,
        max_replicas=1,
        batch_wait_timeout_s=spec["batch_wait_timeout_s"],
        intra_op_threads=spec["intra_op_threads"],
        replica_cpus=1,  # threads are not reservations: 2 threads must still fit on 2 CPUs
        placement=spec.get("placement", "deployment"),
    )
    with serving_env(spec["ingress"], port):
        ray.init(address="local", include_dashboard=False, log_to_driver=False)
    try:
        run_app(AppConfig(models=[entry], auth_token_env=None), port=port, ingress=spec["ingress"])
        url = f"http://127.0.0.1:{port}/v1/models/sentiment/predict"
        result = measure(url, texts(), spec["seconds"], spec["clients"])
    finally:
        serve.shutdown()
        ray.shutdown()
    Path(out).write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--options", nargs="*", help="subset of option names")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(json.loads(args.one), args.out)
        return

    from raynlp.config import ServeSection

    section = ServeSection()
    sentences = texts()
    root = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    print("[bench] building MiniLM classifier + INT8 ONNX export ...", flush=True)
    model_dir, int8 = build_models(root)
    floor = in_process_p50(int8, sentences)
    print(f"[bench] in-process p50 (tokenizer + ONNX INT8, 1 thread): {floor:.2f} ms", flush=True)
    ceiling = in_process_ceiling(int8, sentences)
    print(f"[bench] in-process throughput at batch 16 (sentences/s): {ceiling}", flush=True)

    print(f"[bench] naive FastAPI + transformers pipeline, {args.clients} clients ...", flush=True)
    naive = run_naive(model_dir, sentences, args.seconds, args.clients)
    print(f"  naive: {naive}", flush=True)
    print("[bench] plain FastAPI + the same ONNX model, no Ray (the HTTP floor) ...", flush=True)
    plain = run_naive(int8, sentences, args.seconds, args.clients, onnx=True)
    plain["overhead_ms_p50"] = round(plain["sequential_p50_ms"] - floor, 2)
    print(f"  plain: {plain}", flush=True)
    rows: dict[str, dict[str, Any]] = {}
    chosen = [o for o in OPTIONS if not args.options or o["name"] in args.options]
    for option in chosen:
        print(f"[bench] Serve option {option['name']} ...", flush=True)
        rows[option["name"]] = {**option, **run_option(option, int8, args.seconds, args.clients)}
        rows[option["name"]]["overhead_ms_p50"] = round(
            rows[option["name"]].get("sequential_p50_ms", float("nan")) - floor, 2
        )
        print(f"  {rows[option['name']]}", flush=True)

    default = next(
        (name for name, row in rows.items()
         if (row["ingress"], row["batch_wait_timeout_s"], row["intra_op_threads"],
             row.get("placement", "deployment"))
         == (section.ingress, section.batch_wait_timeout_s, section.intra_op_threads,
             section.placement)),
        next(iter(rows)),
    )  # fmt: skip
    measured = [r for r in rows.values() if "rps" in r]
    fastest = max(measured, key=lambda r: r["rps"])["name"] if measured else None
    lowest = min(measured, key=lambda r: r["overhead_ms_p50"])["name"] if measured else None
    row = rows[default]
    result = {
        "throughput_ratio_vs_naive": round(row.get("rps", 0.0) / naive["rps"], 2),
        "overhead_ms_p50": row["overhead_ms_p50"],
        "errors": naive["errors"] + sum(r.get("errors", 0) for r in rows.values()),
        "p99_ms": row.get("p99_ms"),
        "default_option": default,
        "fastest_option": fastest,
        "lowest_overhead_option": lowest,
        "in_process_p50_ms": round(floor, 2),
        "in_process_rps_batch16": ceiling,
        # The best any server could reach here: the bare model on both cores, nothing else.
        "ceiling_ratio_vs_naive": round(max(ceiling.values()) / naive["rps"], 2),
        "naive": naive,
        # no Ray, no batching, no checks: the least any Python HTTP server adds on this machine
        "plain_fastapi_onnx": plain,
        "options": rows,
        "clients": args.clients,
        "seconds": args.seconds,
        "model": "all-MiniLM-L6-v2 + 2-class head; Serve: its INT8 ONNX export, 1 replica; "
        "naive: PyTorch fp32 via transformers.pipeline",
        "goals": GOALS,
    }
    result["goals_met"] = {
        "throughput_ratio_vs_naive": result["throughput_ratio_vs_naive"] >= GOALS["throughput_ratio_vs_naive"],
        "overhead_ms_p50": result["overhead_ms_p50"] <= GOALS["overhead_ms_p50"],
        "errors": result["errors"] == 0,
    }  # fmt: skip
    print(
        f"\n{'option':<18}{'seq p50':>9}{'overhead':>10}{'req/s':>8}{'p50':>8}{'p99':>8}{'err':>5}"
    )
    for name, r in {"naive": {**naive, "overhead_ms_p50": naive["sequential_p50_ms"] - floor},
                    "plain_fastapi_onnx": plain, **rows}.items():  # fmt: skip
        if "rps" not in r:
            print(f"{name:<18} failed: {r.get('failed')}")
            continue
        mark = " *" if name == default else ""
        print(f"{name:<18}{r['sequential_p50_ms']:>9.2f}{r['overhead_ms_p50']:>10.2f}"
              f"{r['rps']:>8.1f}{r['p50_ms']:>8.2f}{r['p99_ms']:>8.2f}{r['errors']:>5}{mark}")  # fmt: skip
    print(f"(* = default; in-process p50 {floor:.2f} ms; {args.clients} clients, {args.seconds} s)")
    print(f"an HTTP round trip that does no work: {plain['empty_roundtrip_p50_ms']} ms p50")
    print(f"bare model, batch 16, nothing else running: {ceiling} sentences/s = "
          f"{result['ceiling_ratio_vs_naive']}x naive at most")  # fmt: skip
    print(json.dumps({k: result[k] for k in ("throughput_ratio_vs_naive", "overhead_ms_p50",
                                              "errors", "p99_ms", "goals_met")}))  # fmt: skip
    write_result("serve", result)


if __name__ == "__main__":
    main()
