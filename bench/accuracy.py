"""Accuracy of every task on the real shared data sets, next to published references.

    .venv/bin/python bench/accuracy.py --data-dir ../shared/data --task ner [--epochs E]
        [--max-train-rows N] [--learning-rate LR] [--max-length L]
    (tasks: sst2, ner, qa, similarity, summarization; run one per call, results merge)

Each run is the real pipeline: `raynlp train` (Ray Train, 2 workers, DeepSpeed ZeRO-2) on the
task's job in jobs/ with its data paths pointed at --data-dir → the consolidated PyTorch model
scored on the whole validation/dev file with the task's metric → `raynlp export` (ONNX + INT8,
the gate on the same rows; summarization on its first 48 rows). Time-bounded defaults per task
are below; what was really run (rows, epochs, lr, wall time) is recorded beside each metric in
bench/results/accuracy.json (keys as fractions in [0, 1]).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, write_result

REPO = Path(__file__).resolve().parents[1]

# task → (job file, data files under --data-dir, bounded defaults, result keys ← metrics)
TASKS: dict[str, dict[str, Any]] = {
    "sst2": {
        "job": "sst2_full.yaml",
        "train": "sst2/train.tsv",
        "validation": "sst2/dev.tsv",
        "defaults": {"epochs": 1, "max_train_rows": 40000, "learning_rate": 5e-5},
        "keys": {"sst2_dev_accuracy": "accuracy"},
        "reference": {"MiniLM-L6-H384 (Wang et al. 2020), SST-2 dev accuracy": 0.915},
    },
    "ner": {
        "job": "conll2003.yaml",
        "train": "conll2003/train.txt",
        "validation": "conll2003/validation.txt",
        "defaults": {"epochs": 2},
        "keys": {"conll_validation_f1": "f1"},
        "reference": {
            "BERT-base (Devlin et al. 2019), CoNLL-2003 dev F1": 0.964,
            "goal for the MiniLM base (issue)": 0.88,
        },
    },
    "qa": {
        "job": "squad.yaml",
        "train": "squad_v1.1/train.json",
        "validation": "squad_v1.1/validation.json",
        "defaults": {"epochs": 2},
        "keys": {"squad_validation_em": "exact_match", "squad_validation_f1": "f1"},
        "reference": {
            "DistilBERT (Sanh et al. 2019), SQuAD v1.1 dev F1 (trained on all 87.6k questions)": 0.869,
            "BERT-base, SQuAD v1.1 dev F1": 0.885,
            "goal for the MiniLM base (issue), F1": 0.75,
        },
    },
    "similarity": {
        "job": "stsb.yaml",
        "train": "stsb/train.tsv",
        "validation": "stsb/dev.tsv",
        "defaults": {"epochs": 4},
        "keys": {"stsb_dev_pearson": "pearson", "stsb_dev_spearman": "spearman"},
        "reference": {
            "DistilBERT (Sanh et al. 2019), STS-B dev Pearson": 0.869,
            "BERT-base (Devlin et al. 2019), STS-B Spearman": 0.865,
            "goal for the MiniLM base (issue), Spearman": 0.87,
        },
    },
    "summarization": {
        "job": "xsum.yaml",
        "train": "xsum/train.jsonl",
        "validation": "xsum/validation.jsonl",
        "defaults": {"epochs": 8},
        "keys": {
            "xsum_validation_rouge1": "rouge1",
            "xsum_validation_rouge2": "rouge2",
            "xsum_validation_rougeL": "rougeL",
        },
        "reference": {
            "LEAD-1 on full XSum test, ROUGE-1 (Narayan et al. 2018)": 0.164,
            "BertSumExtAbs on full XSum (204k training articles), ROUGE-1": 0.382,
        },
    },
}


def lead1_baseline(validation: str) -> dict[str, float]:
    """ROUGE of the first sentence of each document: the baseline summarizers must beat."""
    from raynlp.data.readers import read_rows
    from raynlp.metrics import lead_sentences, rouge_metrics
    from raynlp.tasks.summarization import sentences_per_line

    rows = read_rows(validation)
    scores = rouge_metrics(
        [sentences_per_line(lead_sentences(r["document"], 1)) for r in rows],
        [sentences_per_line(r["summary"]) for r in rows],
    )
    return {k: round(scores[k], 4) for k in ("rouge1", "rouge2", "rougeL")}


def run(task: str, data_dir: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    spec = TASKS[task]
    job = yaml.safe_load((REPO / "jobs" / spec["job"]).read_text())
    train_file, validation = str(data_dir / spec["train"]), str(data_dir / spec["validation"])
    job["data"].update(train=train_file, validation=validation)
    settings = {**spec["defaults"], **{k: v for k, v in overrides.items() if v is not None}}
    if settings.get("max_train_rows"):
        job["data"]["max_train_rows"] = settings["max_train_rows"]
    job["training"]["epochs"] = settings["epochs"]
    if settings.get("learning_rate"):
        job["training"]["learning_rate"] = settings["learning_rate"]
    if settings.get("max_length"):
        job["model"]["max_length"] = settings["max_length"]
    work = Path(tempfile.mkdtemp(prefix=f"raynlp-accuracy-{task}-"))
    job["output"] = {"dir": str(work / "runs")}
    (work / "job.yaml").write_text(yaml.safe_dump(job))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    raynlp = str(Path(sys.executable).parent / "raynlp")

    started = time.perf_counter()
    subprocess.run([raynlp, "train", str(work / "job.yaml")], check=True, env=env)
    train_s = time.perf_counter() - started
    run_dir = work / "runs" / job["name"]

    from raynlp.evaluation import evaluate_model
    from raynlp.export.pipeline import ParityError, export_model

    started = time.perf_counter()
    metrics = evaluate_model(run_dir / "model", validation)["metrics"]
    evaluate_s = time.perf_counter() - started
    result: dict[str, Any] = {
        key: round(float(metrics[name]), 4) for key, name in spec["keys"].items()
    }
    rows_limit = 48 if task == "summarization" else 10**9
    try:
        report = export_model(run_dir, data=validation, max_rows=rows_limit)
    except ParityError as err:  # the report is still written; record what was measured
        report = json.loads((run_dir / "export" / "export_report.json").read_text())
        print(f"export gate: {err}")
    variants = report["parity"]["variants"]
    result[f"{task}_export"] = {
        "rows": report["parity"]["rows"],
        "metric": next(iter(variants.values()))["metric"],
        "served_variant": report["chosen"],
        "reason": report["reason"],
        **{
            name: {k: round(v, 4) for k, v in row.items() if k in ("value", "agreement", "p50_ms")}
            for name, row in variants.items()
        },
    }
    result[f"{task}_run"] = {
        "train_rows": job["data"].get("max_train_rows", "all"),
        "epochs": settings["epochs"],
        "learning_rate": job["training"]["learning_rate"],
        "max_length": job["model"]["max_length"],
        "validation_rows": metrics.get("num_examples"),
        "train_wall_s": round(train_s, 1),
        "evaluate_wall_s": round(evaluate_s, 1),
        "all_metrics": {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)},
        "published_reference": spec["reference"],
        "machine": machine(),
    }
    if task == "summarization":
        result["xsum_validation_lead1"] = lead1_baseline(validation)
    return result


def import_gpu_summarization(path: Path) -> dict[str, Any]:
    """XSum numbers from bench/gpu_summarization.py's device run (same task code: BERT2BERT
    warm-started from MiniLM, teacher-forced training, beam search, ROUGE; bf16 on one GPU,
    DeepSpeed ZeRO-2, no Ray on that machine), recorded with the device they came from."""
    gpu = json.loads(path.read_text())
    run = gpu["summarization"]
    return {
        "xsum_validation_rouge1": run["rouge"]["rouge1"],
        "xsum_validation_rouge2": run["rouge"]["rouge2"],
        "xsum_validation_rougeL": run["rouge"]["rougeL"],
        "xsum_validation_lead1": run["lead1_rouge"],
        "summarization_run": {
            "source": f"bench/gpu_summarization.py ({path.name})",
            "device": gpu["gpu"],
            "train_rows": run["train_rows"],
            "epochs": run["epochs"],
            "validation_rows": run["validation_rows"],
            "train_wall_s": run["train_s"],
            "generate_wall_s": run["generate_s"],
            "published_reference": TASKS["summarization"]["reference"],
            "machine": {"cpus": "1 GPU", "date": machine()["date"]},
        },
    }


GPU_TASK_KEYS = {"ner": "ner", "similarity": "similarity", "qa": "qa"}


def import_gpu_task(path: Path, replace_keys: bool) -> dict[str, Any]:
    """Numbers of a bench/gpu_task.py device run (the task's own code, bf16 + ZeRO-2, no Ray),
    recorded with the device they came from. With ``replace_keys`` they fill the issue's keys
    (for a task with no CPU run); otherwise they go beside them under ``<task>_gpu``."""
    gpu = json.loads(path.read_text())
    run = gpu["run"]
    task = run["task"]
    best = max(run["history"], key=lambda h: h[run["best_metric"]])
    detail = {
        "source": f"bench/gpu_task.py ({path.name})",
        "device": gpu["gpu"],
        "train_rows": run["train_rows"],
        "epochs": run["epochs"],
        "best_epoch": best["epoch"],
        "validation_rows": run["validation_rows"],
        "train_wall_s": run["wall_s_with_validation"],
        "learning_rate": run["learning_rate"],
        "history": run["history"],
        "published_reference": TASKS[task]["reference"],
        "machine": {"cpus": "1 GPU", "date": machine()["date"]},
    }
    if not replace_keys:
        return {f"{task}_gpu": detail}
    result: dict[str, Any] = {
        key: round(float(best[name]), 4) for key, name in TASKS[task]["keys"].items()
    }
    result[f"{task}_run"] = detail
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="the shared data folder (see its README)")
    parser.add_argument("--task", choices=sorted(TASKS))
    parser.add_argument(
        "--import-gpu-summarization",
        metavar="JSON",
        help="record the XSum numbers of a bench/gpu_summarization.py result file instead",
    )
    parser.add_argument("--import-gpu-task", metavar="JSON", help="a bench/gpu_task.py result")
    parser.add_argument(
        "--as-main-result",
        action="store_true",
        help="with --import-gpu-task: fill the task's keys (when it has no CPU run)",
    )
    parser.add_argument("--max-train-rows", type=int, help="a seeded random sample of N rows")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--max-length", type=int)
    args = parser.parse_args()

    if not (args.import_gpu_summarization or args.import_gpu_task) and not args.data_dir:
        parser.error("give --data-dir")
    if args.import_gpu_task:
        result = import_gpu_task(Path(args.import_gpu_task), args.as_main_result)
    elif args.import_gpu_summarization:
        result = import_gpu_summarization(Path(args.import_gpu_summarization))
    elif not args.task:
        parser.error("give --task (or --import-gpu-summarization)")
    else:
        result = run(
            args.task,
            Path(args.data_dir),
            {
                "max_train_rows": args.max_train_rows,
                "epochs": args.epochs,
                "learning_rate": args.learning_rate,
                "max_length": args.max_length,
            },
        )
    print(json.dumps(result, indent=2))
    previous = RESULTS / "accuracy.json"
    merged = json.loads(previous.read_text()) if previous.is_file() else {}
    merged.pop("machine", None)
    merged.update(result)
    write_result("accuracy", merged)


if __name__ == "__main__":
    main()
