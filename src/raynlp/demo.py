"""`raynlp demo`: the whole pipeline on the embedded default, end to end, in a few minutes.

Private local Ray cluster → fine-tune the packaged MiniLM on the shipped SST-2 sample with
2 Ray Train workers under DeepSpeed ZeRO-2 → evaluate → Optimum ONNX export + dynamic INT8 →
Ray Serve on 127.0.0.1 → ask "Best movie ever!" over HTTP → print the answer and the metrics.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

from raynlp.config import JobConfig, parse_job_config

DEMO_QUESTION = "Best movie ever!"

DEMO_CONFIG: dict[str, Any] = {
    "name": "demo",
    "task": "classification",
    "model": {"name_or_path": "minilm", "max_length": 64},
    "data": {
        "train": "sample://sst2_train.tsv",
        "validation": "sample://sst2_validation.tsv",
        "text_column": "sentence",
        "label_column": "label",
        "label_names": ["negative", "positive"],
    },
    # lr 5e-5 (the guide's upper start value) so 2 short epochs on 2,000 rows converge.
    "training": {
        "learning_rate": 5e-5,
        "batch_size": 32,
        "epochs": 2,
        "warmup_ratio": 0.1,
        "log_every_steps": 10,
    },
    "scaling": {"num_workers": 2, "use_gpu": False},
    "deepspeed": {"zero_stage": 2},
}


def demo_config(output_dir: str = "runs") -> JobConfig:
    raw = json.loads(json.dumps(DEMO_CONFIG))
    raw["output"] = {"dir": output_dir}
    return parse_job_config(raw, "<demo>")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _banner(step: int, text: str, started: float) -> None:
    print(f"\n=== [{step}/5] {text}  (t+{time.perf_counter() - started:.0f}s)", flush=True)


def run_demo(output_dir: str = "runs", port: int = 0) -> int:
    import requests
    from ray import serve

    from raynlp.evaluation import evaluate_model, format_classification_report
    from raynlp.export.pipeline import export_model, format_export_report
    from raynlp.runtime import ray_session
    from raynlp.serving.app import run_app
    from raynlp.serving.settings import AppConfig
    from raynlp.training.trainer import train

    started = time.perf_counter()
    config = demo_config(output_dir)
    config.serve.port = port or free_port()
    with ray_session():
        _banner(1, "fine-tune MiniLM: Ray Train, 2 workers, DeepSpeed ZeRO-2", started)
        result = train(config, overwrite=True)

        _banner(2, "evaluate on the validation sample", started)
        validation = str(config.data.validation)
        evaluation = evaluate_model(result.model_dir, validation)
        print(format_classification_report(evaluation["metrics"]), flush=True)

        _banner(3, "export to ONNX and quantize to INT8 (Optimum)", started)
        report = export_model(result.run_dir)
        print(format_export_report(report), flush=True)

        _banner(4, f"serve with Ray Serve on 127.0.0.1:{config.serve.port}", started)
        app = AppConfig.from_section(config.serve, {"sentiment": report["serve_dir"]})
        # The Ray started above is a plain one: Serve's HTTP proxy is the ingress here.
        run_app(app, config.serve.host, config.serve.port, ingress="proxy")
        try:
            _banner(5, f'ask over HTTP: "{DEMO_QUESTION}"', started)
            url = f"http://127.0.0.1:{config.serve.port}/v1/models/sentiment/predict"
            response = requests.post(url, json={"text": DEMO_QUESTION}, timeout=30)
            response.raise_for_status()
            answer = response.json()
            print(f'POST {url} {{"text": "{DEMO_QUESTION}"}}\n→ {json.dumps(answer)}')
        finally:
            serve.shutdown()

    metrics = evaluation["metrics"]
    served = report["parity"]["variants"][report["chosen"]]
    summary = {
        "answer": answer,
        "validation_accuracy": metrics["accuracy"],
        "validation_f1_macro": metrics["f1_macro"],
        "served_variant": report["chosen"],
        "served_accuracy": served["value"],
        "served_agreement_with_pytorch": served["agreement"],
        "served_p50_ms": served["p50_ms"],
        "pytorch_p50_ms": report["parity"]["variants"]["pytorch_fp32"]["p50_ms"],
        "run_dir": str(result.run_dir),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    Path(result.run_dir, "demo_summary.json").write_text(json.dumps(summary, indent=2))
    print("\n=== demo done\n" + json.dumps(summary, indent=2), flush=True)
    return 0
