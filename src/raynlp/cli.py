"""`raynlp <verb>`: thin entry points, each calling one library function."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raynlp.config import EXPORT_VARIANTS

# Quiet, offline-safe defaults for every verb; set before Ray/transformers are imported.
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def cmd_validate(args: argparse.Namespace) -> int:
    from raynlp.config import load_job_config
    from raynlp.data.readers import read_rows
    from raynlp.tasks import get_task
    from raynlp.training.deepspeed import distributed_backend, resolve_precision
    from raynlp.training.strategies import pitfall_warnings

    config = load_job_config(args.config)
    print(
        f"{args.config}: OK — task {config.task}, {config.scaling.num_workers} workers "
        f"({'GPU' if config.scaling.use_gpu else 'CPU'}, {distributed_backend(config)}), "
        f"ZeRO-{config.deepspeed.zero_stage}, {resolve_precision(config)}, "
        f"batch {config.training.batch_size} (× {config.per_worker_batch_size} per worker), "
        f"lr {config.training.learning_rate:g}, {config.training.epochs} epochs, "
        f"strategy {config.training.strategy} → {config.run_dir}"
    )
    metric, mode = config.watched_metric
    stopping = config.training.early_stopping
    print(
        f"  checkpoints ranked by validation {metric} ({mode}); early stopping "
        + (
            f"after {stopping.patience} epoch(s) without a gain > {stopping.min_delta:g}"
            if stopping.enabled
            else "off"
        )
        + f"; restarts after failures: {config.scaling.max_failures}"
    )
    if config.tune.space:
        print(
            f"  tune (raynlp tune): {config.tune.num_samples} sample(s) of "
            f"{', '.join(config.tune.space)} ({config.tune.search_alg}, {config.tune.scheduler})"
        )
    export = config.export
    extra = [f"{export.distill.layers}-layer student"] if export.distill.enabled else []
    extra += ["pruned model"] if export.prune.enabled else []
    print(
        f"  optimize (raynlp optimize): {', '.join(export.variants + extra)}; served: the "
        f"fastest whose {get_task(config.task).best_metric} drops ≤ {export.max_metric_drop:g}"
    )
    train_rows = len(read_rows(config.data.train, config.data.format))
    for warning in pitfall_warnings(config, train_rows):
        print(f"  warning: {warning}")
    return 0


def _job_or_run(args: argparse.Namespace, what: str) -> Any:
    """The job config of ``CONFIG`` (validated before any cluster starts) or, with ``--resume
    RUN``, the config saved in that run folder."""
    from raynlp.config import ConfigError, load_job_config
    from raynlp.training.trainer import load_run_config

    if (args.config is None) == (args.resume is None):
        raise ConfigError(f"give a job config, or --resume RUN to continue a {what} (not both)")
    if args.resume:
        if args.output_dir or args.overwrite:
            raise ConfigError(
                f"--resume continues a {what} in place: no --output-dir / --overwrite"
            )
        return load_run_config(args.resume)
    config = load_job_config(args.config)
    if args.output_dir:
        config.output.dir = args.output_dir
    return config


def cmd_train(args: argparse.Namespace) -> int:
    from raynlp.runtime import ray_session
    from raynlp.training.trainer import train

    config = _job_or_run(args, "run")
    with ray_session(args.address):
        result = train(config, overwrite=args.overwrite, resume=args.resume is not None)
    validation = result.metrics["validation"]
    best = {k: v for k, v in validation.items() if isinstance(v, float)}
    print(f"[raynlp] best epoch {result.metrics['best_epoch']}: {json.dumps(best)}")
    print(f"[raynlp] next: raynlp export {result.run_dir}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from raynlp.runtime import ray_session
    from raynlp.tuning.tuner import tune

    config = _job_or_run(args, "search")
    with ray_session(args.address):
        result = tune(config, overwrite=args.overwrite, resume=args.resume is not None)
    print(
        f"[raynlp] trials: {result.run_dir / 'tune_results.md'}; plot: {result.run_dir / 'tune.png'}"
    )
    print(f"[raynlp] next: raynlp export {result.run_dir}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from raynlp.evaluation import evaluate_model, format_metrics
    from raynlp.export.pipeline import locate_model_dir

    result = evaluate_model(locate_model_dir(args.model), args.data)
    metrics = result["metrics"]
    print(format_metrics(metrics))
    print(f"[raynlp] written to {Path(result['model_dir']) / 'evaluation.json'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from raynlp.export.pipeline import ParityError, export_model, format_export_report

    try:
        report = export_model(  # None = the run's saved `export:` section (or its defaults)
            args.run,
            args.output,
            kernel_set=args.quantization,
            data=args.data,
            max_rows=args.max_rows,
            min_agreement=args.min_agreement,
            max_metric_drop=args.max_metric_drop,
            threads=args.threads,
            variants=args.variants,
        )
    except ParityError as err:
        print(f"raynlp {args.verb}: {err}", file=sys.stderr)
        return 3
    print(format_export_report(report))
    print(f"[raynlp] report: {Path(report['model_dir']).parent / 'export' / 'export_report.md'}")
    print(f"[raynlp] next: raynlp serve {report['serve_dir']}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """The optimize report of a run as a table (measuring first when the run has none)."""
    from raynlp.export.pipeline import export_model, locate_model_dir, markdown_report

    report_file = locate_model_dir(args.run).parent / "export" / "export_report.json"
    if args.measure or not report_file.is_file():
        print(f"[raynlp] no measurements yet: running raynlp optimize {args.run}", flush=True)
        report = export_model(args.run)
    else:
        report = json.loads(report_file.read_text())
    print(markdown_report(report))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from raynlp.config import ServeSection, load_job_config
    from raynlp.serving.app import load_serve_config, model_name_for, serve_until_interrupted
    from raynlp.serving.schemas import validation_message
    from raynlp.serving.settings import AppConfig

    section = load_job_config(args.config).serve if args.config else ServeSection()
    if args.placement:
        section.placement = args.placement
    route_prefix = "/"
    if args.serve_config:
        if args.models or args.store:
            args.usage_error("give models either on the command line or in --serve-config")
        config, http, route_prefix = load_serve_config(args.serve_config)
        section.host, section.port = http.get("host", section.host), http.get("port", section.port)
    else:
        if not args.models and not args.store:
            args.usage_error("give at least one exported model folder (NAME=FOLDER) or --store")
        models: dict[str, str] = {}
        for spec in args.models:
            name, sep, folder = spec.partition("=")
            name, folder = (name, folder) if sep else (model_name_for(spec), spec)
            if name in models:
                args.usage_error(f"two models are named '{name}'; name them: NAME=FOLDER")
            models[name] = folder
        try:
            config = AppConfig.from_section(section, models, store=args.store)
        except ValidationError as err:
            raise ValueError(f"invalid serve arguments: {validation_message(err)}") from None
    if args.token_env:
        config = config.model_copy(update={"auth_token_env": args.token_env})
    serve_until_interrupted(
        config,
        host=args.host or section.host,
        port=args.port or section.port,
        ingress=args.ingress or section.ingress,
        address=args.address,
        route_prefix=route_prefix,
    )
    return 0


LIST_KEYS = {"text": "texts", "pair": "pairs", "qa": "inputs"}
"""The list field of each request kind (see raynlp.serving.schemas)."""


def _read_items(args: argparse.Namespace) -> list[dict[str, str]]:
    """Items from the arguments or stdin: a JSON object per line ({"question", "context"}, ...)
    or plain text (→ {"text": line})."""
    lines = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    items = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("{"):
            try:
                items.append(json.loads(stripped))
                continue
            except json.JSONDecodeError:
                pass
        items.append({"text": line})
    return items


def _auth_headers() -> dict[str, str]:
    token = os.environ.get("RAYNLP_SERVE_TOKEN")
    return {"authorization": f"Bearer {token}"} if token else {}


def _endpoint(args: argparse.Namespace, requests: Any) -> tuple[str, dict[str, Any]]:
    """(predict URL, model card) for --url: a server base URL (+ --name, or its only model) or
    a full .../v1/models/NAME/predict URL."""
    url = args.url.rstrip("/")
    if url.endswith("/predict"):
        card_url = url.removesuffix("/predict")
    else:
        name = args.name
        if name is None:
            listed = requests.get(f"{url}/v1/models", timeout=args.timeout, headers=_auth_headers())
            if listed.status_code != 200:
                raise ValueError(f"{url}/v1/models: {listed.status_code} {listed.text[:300]}")
            names = [model["name"] for model in listed.json()["models"]]
            if len(names) != 1:
                raise ValueError(f"the server hosts {', '.join(names)}: pick one with --name")
            name = names[0]
        card_url = f"{url}/v1/models/{name}"
    card = requests.get(card_url, timeout=args.timeout, headers=_auth_headers())
    if card.status_code != 200:
        raise ValueError(f"{card_url}: {card.status_code} {card.text[:300]}")
    return f"{card_url}/predict", card.json()


def cmd_predict(args: argparse.Namespace) -> int:
    if args.input or args.output:
        if not args.input:
            args.usage_error("--output is for the predictions of an --input file")
        if not args.model:
            args.usage_error("--input needs --model (an exported model folder)")
        if not args.output:
            args.usage_error("--input needs --output (the JSONL file to write)")
        if args.texts:
            args.usage_error("give inputs as arguments/stdin or as an --input file, not both")
        if min(args.batch_size, args.threads, args.concurrency or 1) < 1:
            args.usage_error("--batch-size, --concurrency and --threads must be >= 1")
        from raynlp.runtime import ray_session
        from raynlp.serving.batch import (
            check_input_file,
            predict_file,
            request_kind_of,
            summary_line,
        )

        # Every line is checked before Ray starts: a bad file fails in seconds, naming its lines.
        checked = check_input_file(args.input, request_kind_of(args.model))
        with ray_session(args.address):
            summary = predict_file(
                args.model,
                args.input,
                args.output,
                batch_size=args.batch_size,
                concurrency=args.concurrency,
                intra_op_threads=args.threads,
                checked=checked,
                progress=True,
            )
        print(summary_line(summary))
        return 0
    items = _read_items(args)
    if args.model:
        from raynlp.serving.predictor import OnnxPredictor

        answers = OnnxPredictor(args.model, args.threads).predict(items)
    else:
        import requests

        predict_url, card = _endpoint(args, requests)
        kind = card["request_kind"]
        body = {LIST_KEYS[kind]: items if kind != "text" else [i["text"] for i in items]}
        response = requests.post(
            predict_url, json=body, timeout=args.timeout, headers=_auth_headers()
        )
        if response.status_code != 200:
            print(f"error {response.status_code}: {response.text}", file=sys.stderr)
            return 1
        answers = response.json()
    for item, answer in zip(items, answers, strict=True):
        print(json.dumps({**item, **answer}))
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from raynlp.tasks import get_task, task_names

    for name in task_names():
        print(f"{name:<16} {get_task(name).description}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from raynlp.demo import run_demo

    return run_demo(output_dir=args.output_dir, port=args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raynlp",
        description="Fine-tune transformers on Ray Train + DeepSpeed, export with Optimum, "
        "serve with Ray Serve.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, handler: Callable[[argparse.Namespace], int], text: str):
        sub = verbs.add_parser(name, help=text, description=text)
        sub.set_defaults(handler=handler, verb=name)
        return sub

    demo = verb(
        "demo",
        cmd_demo,
        "Run the whole pipeline on the packaged MiniLM and SST-2 sample: "
        "train (2 workers, ZeRO-2) → evaluate → export INT8 → serve → ask over HTTP.",
    )
    demo.add_argument("--output-dir", default="runs", help="where the demo run goes (runs/demo)")
    demo.add_argument("--port", type=int, default=0, help="HTTP port (0 = a free one)")

    validate = verb("validate", cmd_validate, "Check a job config; print what it would run.")
    validate.add_argument("config", help="job YAML, e.g. jobs/sentiment.yaml")

    train = verb("train", cmd_train, "Fine-tune per a job config on Ray Train + DeepSpeed.")
    train.add_argument("config", nargs="?", help="job YAML, e.g. jobs/sentiment.yaml")
    train.add_argument(
        "--resume",
        metavar="RUN",
        help="continue a stopped or crashed run (its folder, e.g. runs/sentiment) from its latest "
        "checkpoint: weights, optimizer, LR schedule, step and early-stopping state",
    )
    train.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    train.add_argument("--output-dir", help="override output.dir")
    train.add_argument(
        "--address", help="Ray cluster address (default: $RAY_ADDRESS or a private local cluster)"
    )

    tune_verb = verb(
        "tune",
        cmd_tune,
        "Search hyperparameters (the config's tune: section) with Ray Tune; every trial is a "
        "Ray Train + DeepSpeed run; the best trial's model is written for `raynlp export`.",
    )
    tune_verb.add_argument(
        "config", nargs="?", help="job YAML with a tune: section, e.g. jobs/sentiment_tune.yaml"
    )
    tune_verb.add_argument(
        "--resume",
        metavar="RUN",
        help="continue an interrupted search (its folder) with Tuner.restore: unfinished trials "
        "resume from their latest checkpoints",
    )
    tune_verb.add_argument(
        "--overwrite", action="store_true", help="replace an existing run folder"
    )
    tune_verb.add_argument("--output-dir", help="override output.dir")
    tune_verb.add_argument(
        "--address", help="Ray cluster address (default: $RAY_ADDRESS or a private local cluster)"
    )

    evaluate = verb(
        "evaluate",
        cmd_evaluate,
        "Score a trained model on a data file with its task's metrics (accuracy/P/R/F1, "
        "seqeval entity F1, SQuAD EM/F1, Pearson/Spearman, ROUGE).",
    )
    evaluate.add_argument("model", help="run folder (runs/NAME) or its model/ folder")
    evaluate.add_argument("data", help="data file (same columns as training) or sample://NAME")

    for name, summary in (
        (
            "optimize",
            "Build deployment variants of a trained run (ONNX fp32, O1-O3 graph fusions, dynamic "
            "and static INT8, TorchScript), score each on the validation rows with the task's "
            "metric, time it, and serve the fastest that holds the metric (export: section).",
        ),
        ("export", "Same as optimize (the name of earlier releases)."),
    ):
        export = verb(name, cmd_export, summary)
        export.add_argument("run", help="run folder (runs/NAME) or its model/ folder")
        export.add_argument("--output", help="export folder (default: <run>/export)")
        export.add_argument(
            "--variants",
            nargs="+",
            choices=list(EXPORT_VARIANTS),
            help="variants to build (default: the run's export.variants)",
        )
        export.add_argument(
            "--quantization",
            choices=["auto", "avx512_vnni", "avx2", "arm64", "none"],
            help="INT8 kernel set (default: the run's export.quantization, auto)",
        )
        export.add_argument(
            "--data", help="rows for the parity check (default: the run's validation)"
        )
        export.add_argument("--max-rows", type=int, help="score at most this many rows")
        export.add_argument("--threads", type=int, help="threads for scoring and timing")
        export.add_argument(
            "--min-agreement",
            type=float,
            help="serve a variant only if it answers like PyTorch on at least this share of "
            "rows (default: the run's export.min_argmax_agreement, 0.99)",
        )
        export.add_argument(
            "--max-metric-drop",
            type=float,
            help="... and its metric drops by at most this (default: export.max_metric_drop, "
            "0.005)",
        )
    bench = verb(
        "bench",
        cmd_bench,
        "Print a run's variant table (metric, drop, latency at seq 32/128, throughput, size, "
        "memory, gate decision); measures first if the run has not been optimized.",
    )
    bench.add_argument("run", help="run folder (runs/NAME) or its model/ folder")
    bench.add_argument("--measure", action="store_true", help="measure again (runs optimize)")

    serve = verb(
        "serve",
        cmd_serve,
        "Serve exported models with Ray Serve over HTTP: one gateway, one autoscaled deployment "
        "per model, an optional multiplexed model store (blocks until Ctrl-C).",
    )
    serve.set_defaults(usage_error=serve.error)
    serve.add_argument(
        "models",
        nargs="*",
        metavar="[NAME=]FOLDER",
        help="exported model folders, e.g. runs/demo/export/serving (name: the run's name)",
    )
    serve.add_argument("--store", help="model store: every sub-folder <id>/ is model <id>")
    serve.add_argument("--serve-config", help="Serve config file to run (e.g. serve/platform.yaml)")
    serve.add_argument("--config", help="job YAML whose serve: section to use")
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default 8000)")
    serve.add_argument("--address", help="Ray cluster address (default: a private local Ray)")
    serve.add_argument(
        "--ingress",
        choices=["direct", "proxy"],
        help="direct (default): the gateway replica is the HTTP server; proxy: Serve's proxy",
    )
    serve.add_argument(
        "--placement",
        choices=["deployment", "gateway"],
        help="deployment (default): each model in its own autoscaled deployment; gateway: "
        "models run inside the HTTP gateway (lowest latency, no per-model scaling)",
    )
    serve.add_argument(
        "--token-env",
        help="environment variable with the bearer token (default RAYNLP_SERVE_TOKEN)",
    )

    predict = verb(
        "predict",
        cmd_predict,
        "Predict through a running endpoint (--url) or an exported model in-process (--model). "
        "Inputs from args or stdin, one per line: plain text, or a JSON item such as "
        '{"question": ..., "context": ...} / {"text": ..., "text_pair": ...}. '
        "With --input FILE.jsonl --output OUT.jsonl: offline batch prediction of a whole file "
        "with Ray Data (one actor per --threads CPUs of the cluster), answers in input order.",
    )
    predict.set_defaults(usage_error=predict.error)
    predict.add_argument("texts", nargs="*", help="inputs (default: one per line on stdin)")
    predict.add_argument(
        "--url",
        default="http://127.0.0.1:8000",
        help="raynlp server (with --name) or a full .../v1/models/NAME/predict URL; "
        "$RAYNLP_SERVE_TOKEN is sent as the bearer token when set",
    )
    predict.add_argument("--name", help="model to ask (default: the server's only model)")
    predict.add_argument("--model", help="exported model folder: predict in-process instead")
    predict.add_argument("--timeout", type=float, default=30.0)
    predict.add_argument(
        "--input",
        metavar="FILE",
        help="JSONL file, one input per line (plain text, a JSON string or a JSON item; blank "
        "lines skipped; extra keys such as an id are kept): predict it with Ray Data; needs "
        "--model and --output. Every line is checked first; bad lines are named, nothing runs",
    )
    predict.add_argument(
        "--output", metavar="FILE", help="JSONL file to write: each input merged with its answer"
    )
    predict.add_argument("--batch-size", type=int, default=64, help="items per model call")
    predict.add_argument(
        "--concurrency",
        type=int,
        help="model actors (default: the cluster's CPUs // --threads)",
    )
    predict.add_argument(
        "--threads", type=int, default=1, help="ONNX Runtime threads (= CPUs) per model copy"
    )
    predict.add_argument(
        "--address", help="Ray cluster address (default: $RAY_ADDRESS or a private local cluster)"
    )

    verb("tasks", cmd_tasks, "List the registered tasks.")
    return parser


def main(argv: list[str] | None = None) -> int:
    from raynlp.config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"raynlp {args.verb}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
