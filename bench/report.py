"""Render bench/results/*.json into the README's benchmark table (between the bench markers).

    .venv/bin/python bench/report.py

Only numbers present in the result files are shown; a benchmark that was not run says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def fmt(value, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else str(value)


TASK_ROWS = {
    # task → (data set, result keys, goal text)
    "ner": ("CoNLL-2003 validation", ["conll_validation_f1"], "F1 ≥ 0.88"),
    "qa": (
        "SQuAD v1.1 validation articles",
        ["squad_validation_em", "squad_validation_f1"],
        "F1 ≥ 0.75",
    ),
    "similarity": ("STS-B dev", ["stsb_dev_pearson", "stsb_dev_spearman"], "Spearman ≥ 0.87"),
    "summarization": (
        "XSum validation",
        ["xsum_validation_rouge1", "xsum_validation_rouge2", "xsum_validation_rougeL"],
        "ROUGE-1 above lead-1",
    ),
}


def accuracy_rows(accuracy: dict) -> list[str]:
    lines = []
    if "sst2_dev_accuracy" in accuracy and "dev_rows" in accuracy:
        where = f"{accuracy['machine']['cpus']} CPUs, {accuracy['machine']['date'][:10]}"
        lines.append(
            f"| accuracy: SST-2 dev ({accuracy['dev_rows']} rows), trained on "
            f"{accuracy['train_rows']} rows × {accuracy['epochs']} epoch(s) in "
            f"{accuracy['train_wall_s']:.0f} s | sst2_dev_accuracy **{fmt(accuracy['sst2_dev_accuracy'], 4)}**, "
            f"INT8 {fmt(accuracy['sst2_dev_accuracy_int8'], 4)} | ≥ 0.915 (published MiniLM-L6-H384) "
            f"| 2 CPUs, 2026-11-27 |"
        )
    for task, (data, keys, goal) in TASK_ROWS.items():
        run = accuracy.get(f"{task}_run")
        if not run:
            lines.append(f"| accuracy: {data} | not run yet | {goal} | — |")
            continue
        where = run.get("device") or f"{run['machine']['cpus']} CPUs"
        where = f"{where}, {run['machine']['date'][:10]}"
        values = ", ".join(f"{key} **{fmt(accuracy[key], 4)}**" for key in keys)
        if task == "summarization" and "xsum_validation_lead1" in accuracy:
            lead = accuracy["xsum_validation_lead1"]
            values += f" (lead-1 on the same rows: ROUGE-1 {fmt(lead['rouge1'], 4)})"
        export = accuracy.get(f"{task}_export", {})
        if export:
            values += f"; export serves {export.get('served_variant')}"
        reference = "; ".join(f"{k} {v}" for k, v in run["published_reference"].items())
        lines.append(
            f"| accuracy: {data} ({run['validation_rows']} rows), MiniLM trained on "
            f"{run['train_rows']} rows × {run['epochs']} epoch(s) in {run['train_wall_s']:.0f} s"
            f"{' (' + run['source'] + ')' if 'source' in run else ''} "
            f"| {values} | {goal} (ref.: {reference}) | {where} |"
        )
    return lines


def strategy_rows(result: dict) -> list[str]:
    setup = result["setup"]
    where = f"{result['machine']['cpus']} CPUs, {result['machine']['date'][:10]}"
    lines = []
    full = result.get("full")
    for name in ("full", "freeze", "progressive"):
        row = result.get(name)
        if not row:
            continue
        versus = ""
        if full and name != "full":
            versus = (
                f"; vs full: wall ×{row['wall_s'] / full['wall_s']:.2f}, accuracy "
                f"{row['accuracy'] - full['accuracy']:+.4f}"
            )
        lines.append(
            f"| strategies: {name} (SST-2, MiniLM, {setup['train_rows']} rows × "
            f"{setup['epochs']} epochs, dev {setup['validation_rows']}) | accuracy "
            f"**{fmt(row['accuracy'], 4)}**, wall {row['wall_s']:.0f} s, trainable "
            f"{row['trainable_params']:,}, peak worker memory {row['peak_mem_mb']:.0f} MB{versus} "
            f"| — | {where} |"
        )
    return lines


def tune_rows(result: dict[str, Any]) -> list[str]:
    setup, fifo, asha = result["setup"], result["fifo"], result["asha"]
    where = f"{result['machine']['cpus']} CPUs, {result['machine']['date'][:10]}"
    return [
        f"| tune: ASHA vs FIFO over the same {fifo['trials']}-config grid (SST-2, MiniLM, "
        f"{setup['train_rows']} rows × {setup['epochs']} epochs, dev "
        f"{setup['validation_rows'] or 'all 872'}; ASHA: {setup.get('asha_plan', 'asynchronous')}) "
        f"| steps {asha['total_steps']} vs {fifo['total_steps']} → compute_ratio "
        f"**{fmt(result['compute_ratio'], 3)}**; best accuracy {fmt(asha['best_accuracy'], 4)} vs "
        f"{fmt(fifo['best_accuracy'], 4)} → accuracy_gap **{result['accuracy_gap']:+.4f}**; wall "
        f"{asha['wall_s']:.0f} s vs {fifo['wall_s']:.0f} s | ≤ 0.4 for ≤ 0.005 | {where} |"
    ]


def optimize_rows(result: dict[str, Any]) -> list[str]:
    setup, variants = result["setup"], result["variants"]
    where = f"{result['machine']['cpus']} CPUs, {result['machine']['date'][:10]}"
    detail = ", ".join(
        f"{name} {row['accuracy']:.3f} / {row['p50_ms_seq128']:.1f} ms / {row['size_mb']:.0f} MB"
        for name, row in variants.items()
    )
    return [
        f"| optimize: INT8 vs PyTorch fp32 (SST-2 dev, MiniLM teacher, batch 1, seq 128, "
        f"{setup['threads']} thread, {setup['kernel_set']}) | {result['int8_variant']}: "
        f"int8_speedup **{fmt(result['int8_speedup'])}×**, int8_accuracy_drop "
        f"**{result['int8_accuracy_drop']:+.4f}** | ≥ 4× at ≤ 0.003 | {where} |",
        f"| optimize: distilled 3-layer student vs teacher (PyTorch fp32) | student_speedup "
        f"**{fmt(result['student_speedup'])}×**, student_accuracy_ratio "
        f"**{fmt(result['student_accuracy_ratio'], 3)}** | ≥ 1.8× at ≥ 0.97 | {where} |",
        f"| optimize: every variant (accuracy / p50 seq 128 / size); served: {result['chosen']} "
        f"| {detail} | — | {where} |",
    ]


def int8_ceiling_rows(result: dict[str, Any]) -> list[str]:
    where = f"{result['machine']['cpus']} CPUs, {result['machine']['date'][:10]}"
    gemm = result["gemm"]
    return [
        f"| int8_ceiling: how fast can dynamic INT8 get here (MiniLM, batch 1, seq 128, 1 thread, "
        f"{result['kernel_set']} kernels, CPU flags {', '.join(result['cpu_flags']) or 'none'}) | "
        f"measured int8_speedup {fmt(result['int8_speedup'])}×; INT8 weight GEMMs "
        f"{fmt(gemm['gemm_speedup'])}× fp32 (best weight type of {'/'.join(gemm['weight_types'])}) "
        f"→ bound **{fmt(result['bound_gemm_speedup'])}×**; even with zero-time weight GEMMs "
        f"**{fmt(result['bound_zero_gemm'])}×** | (explains the ≥ 4× goal) | {where} |"
    ]


def serve_rows(result: dict[str, Any]) -> list[str]:
    where = f"{result['machine']['cpus']} CPUs, {result['machine']['date'][:10]}"
    naive, default = result["naive"], result["options"][result["default_option"]]
    options = ", ".join(
        f"{name} {row['rps']:.0f}/s, +{row['overhead_ms_p50']:.1f} ms"
        for name, row in result["options"].items()
        if "rps" in row
    )
    return [
        f"| serve_load: raynlp Serve ({result['default_option']}) vs naive FastAPI + "
        f"transformers pipeline, {result['clients']} clients × {result['seconds']:.0f} s | "
        f"{default['rps']:.0f} vs {naive['rps']:.0f} req/s → throughput_ratio_vs_naive "
        f"**{fmt(result['throughput_ratio_vs_naive'])}×**; p99_ms **{fmt(result['p99_ms'], 1)}**; "
        f"errors **{result['errors']}**; overhead_ms_p50 (sequential HTTP − in-process "
        f"{result['in_process_p50_ms']:.1f} ms) **{fmt(result['overhead_ms_p50'], 1)}**; the "
        f"bare model alone tops out at {fmt(result['ceiling_ratio_vs_naive'])}× naive here"
        + (
            f"; without Ray, plain FastAPI + the same ONNX model: {plain['rps']:.0f} req/s, "
            f"+{plain['overhead_ms_p50']:.1f} ms; an HTTP round trip doing nothing: "
            f"{plain['empty_roundtrip_p50_ms']:.1f} ms"
            if (plain := result.get("plain_fastapi_onnx"))
            else ""
        )
        + " | "
        f"≥ 5×, ≤ 2 ms, 0 errors | {where} |",
        f"| serve_load: every option (req/s, overhead over in-process p50) | {options} | — | "
        f"{where} |",
    ]


def rows() -> list[str]:
    lines = ["| benchmark | result | goal | measured on |", "|---|---|---|---|"]
    throughput = load("train_throughput")
    if throughput:
        where = f"{throughput['machine']['cpus']} CPUs, {throughput['machine']['date'][:10]}"
        lines.append(
            f"| train_throughput: raynlp (2 workers, ZeRO-{throughput['setup']['zero_stage']}) "
            f"vs plain PyTorch loop | {throughput['raynlp_samples_per_s']} vs "
            f"{throughput['plain_samples_per_s']} samples/s → ratio_vs_plain_loop "
            f"**{fmt(throughput['ratio_vs_plain_loop'])}** | ≥ 1.0 | {where} |"
        )
        lines.append(
            f"| train_throughput: startup_s (command start → first step) | "
            f"**{fmt(throughput['startup_s'], 1)} s** | ≤ 10 s | {where} |"
        )
    latency = load("inference_latency")
    if latency:
        where = f"{latency['machine']['cpus']} CPUs, {latency['machine']['date'][:10]}"
        b1 = latency["batch1"]
        detail = ", ".join(f"{name} {b1[name]['seq128']['p50_ms']:.1f} ms" for name in b1)
        lines.append(
            f"| inference_latency: batch 1, seq 128, p50 ({latency['threads']} thread, INT8 "
            f"{latency['kernel_set']}) | {detail} → int8_speedup_seq128 "
            f"**{fmt(latency['int8_speedup_seq128'])}×** | ≥ 3× | {where} |"
        )
        b32 = latency["batch32_seq128"]
        lines.append(
            "| inference_latency: batch 32 × 128 throughput "
            f"({latency['batch_threads']} threads) | "
            + ", ".join(f"{name} {row['sequences_per_s']:.0f}/s" for name, row in b32.items())
            + f" | — | {where} |"
        )
    accuracy = load("accuracy")
    if accuracy:
        lines.extend(accuracy_rows(accuracy))
    strategies = load("strategies")
    if strategies:
        lines.extend(strategy_rows(strategies))
    optimize = load("optimize")
    if optimize:
        lines.extend(optimize_rows(optimize))
    ceiling = load("int8_ceiling")
    if ceiling:
        lines.extend(int8_ceiling_rows(ceiling))
    tune = load("tune")
    if tune:
        lines.extend(tune_rows(tune))
    serving = load("serve")
    if serving:
        lines.extend(serve_rows(serving))
    gpu = load("gpu_check")
    if gpu:
        train = gpu["train"]
        lines.append(
            f"| gpu_check: raynlp's DeepSpeed path on {gpu['gpu']} ({train['backend']}, "
            f"{train['precision']}, ZeRO-{train['zero_stage']}, BERT-base size, no Ray) | "
            f"{train['samples_per_s']} samples/s, loss {train['loss_first5']} → "
            f"{train['loss_last5']}, consolidated model agrees "
            f"{train['consolidated_argmax_agreement_bf16_engine_vs_fp32']:.0%}; ORT CUDA: "
            f"{gpu['ort'].get('cuda_provider', gpu['ort'].get('error'))} | — | 1 GPU |"
        )
        ray_train = gpu.get("ray_train")
        if ray_train and "history" in ray_train:
            last = ray_train["history"][-1]
            lines.append(
                f"| gpu_check: `raynlp train` through Ray Train on {gpu['gpu']} (1 worker, NCCL, "
                f"bf16, ZeRO-2, random-init BERT-base, 2 epochs × 2,000 rows) | ran end to end in "
                f"{ray_train['wall_s']:.0f} s, {last['train_samples_per_s']:.0f} samples/s at "
                f"batch 32; consolidated HF folder written | — | 1 GPU |"
            )
    if len(lines) == 2:
        lines.append("| (no results yet) | | | |")
    return lines


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + START + "\n" + "\n".join(rows()) + "\n" + END + tail)
    print("\n".join(rows()))


if __name__ == "__main__":
    main()
