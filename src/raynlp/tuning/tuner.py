"""Driver side of ``raynlp tune``: data once → one Ray Tune trial per sampled config, each a Ray
Train + DeepSpeed run of the same training loop → results table, plot, best model folder."""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raynlp.config import JobConfig, dump_job_config
from raynlp.data.readers import write_jsonl
from raynlp.tuning.halving import (
    SyncHalving,
    await_decision,
    rungs,
    slots_actor,
    survivors,
    take_slot,
)
from raynlp.tuning.space import search_space, trial_config

TRIAL_DRIVER_RESOURCES = {"CPU": 0, "memory": 10**6}
"""The trial's own process only waits on its Ray Train run: it must not hold a CPU the workers
need (with one, 2 one-CPU workers per trial deadlock on 2 CPUs). Tune rejects an empty bundle."""


class TuneResourceError(ValueError):
    """The search cannot run one trial on this cluster."""


@dataclass
class TuneResult:
    run_dir: Path
    model_dir: Path
    best: dict[str, Any]
    trials: list[dict[str, Any]]


def tune_metric(config: JobConfig) -> tuple[str, str]:
    """The metric trials are ranked and stopped by (``val_<name>``) and its mode."""
    watched, watched_mode = config.watched_metric
    metric = config.tune.metric or watched
    mode = config.tune.mode or (watched_mode if metric == watched else "max")
    return f"val_{metric}", mode


def concurrency(config: JobConfig, cluster: dict[str, float]) -> int:
    """How many trials fit the cluster at once; a clear error when not even one does."""
    scaling = config.scaling
    need = {k: v * scaling.num_workers for k, v in scaling.resources_per_worker.items() if v}
    if scaling.use_gpu:
        need.setdefault("GPU", float(scaling.num_workers))
    fits = []
    for resource, amount in need.items():
        have = cluster.get(resource, 0.0)
        if have < amount:
            raise TuneResourceError(
                f"tune: one trial needs {amount:g} {resource} (scaling.num_workers "
                f"{scaling.num_workers} × scaling.resources_per_worker {resource} "
                f"{scaling.resources_per_worker.get(resource, 1):g}) but the Ray cluster has "
                f"{have:g}: lower scaling.num_workers / resources_per_worker or add nodes"
            )
        fits.append(int(have // amount))
    fit = min(fits) if fits else 1
    wanted = config.tune.max_concurrent_trials
    return min(fit, wanted) if wanted else fit


class ReportToTrial:
    """A Ray Train callback (it runs in the Train controller): every report's metrics and
    checkpoint path go on a queue that the trial's own process reads and hands to Tune."""

    def __init__(self, channel: Any):
        self.channel = channel

    def after_report(self, run_context: Any, metrics: list[dict], checkpoint: Any) -> None:
        self.channel.put((metrics[0], checkpoint.path if checkpoint else None))


def _report_callback(channel: Any) -> Any:
    from ray.train.v2.api.callback import UserCallback

    class _Report(ReportToTrial, UserCallback):
        pass

    return _Report(channel)


def run_trial(params: dict[str, Any], base: dict[str, Any], inputs: dict[str, Any]) -> None:
    """One Tune trial: the sampled config's Ray Train run, reporting every epoch to Tune.

    The Train run goes on in a thread; this process relays each epoch's report to Tune, with
    the epoch's checkpoint when the scheduler needs them (PBT, synchronous halving). A trial
    that Tune starts from a checkpoint (PBT's exploit of another trial, or its own after a
    pause or a restore) warm-starts a new Train run, ``trial_<id>_e<epoch>``, from it.

    Under synchronous halving (``inputs["rungs"]``) a Train run stops at the next rung, so no
    step is trained that the halving may throw away; the trial then waits for the scheduler's
    decision: go on (a new run from its own checkpoint, to the next rung) or be paused/stopped
    by Tune."""
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    storage = Path(inputs["storage"])
    epochs = trial_config(JobConfig.model_validate(base), params, "t").training.epochs
    rung_epochs = inputs.get("rungs")
    warm_start, done = None, 0
    start = tune.get_checkpoint()
    if start is not None:
        path = str(start.path)
        done = _checkpoint_epoch(path)
        if done >= epochs:
            return  # the checkpoint is of the last epoch: nothing left to train
        warm_start = _record_start(storage, trial_id, done, trial_id_of(path) or "?", path)
    while True:
        run_name = f"trial_{trial_id}" if warm_start is None else f"trial_{trial_id}_e{done}"
        config = trial_config(JobConfig.model_validate(base), params, run_name)
        stop_after = min([e for e in rung_epochs or [epochs] if e > done] + [epochs])
        if inputs.get("slots"):
            take_slot(inputs["slots"], trial_id)
        done, last = _train_and_report(config, inputs, trial_id, storage, warm_start, stop_after)
        if done >= epochs or not rung_epochs:
            return
        await_decision(inputs["slots"], trial_id, done)  # returns only to go on
        warm_start = _record_start(storage, trial_id, done, trial_id, last)


def _train_and_report(
    config: JobConfig,
    inputs: dict[str, Any],
    trial_id: str,
    storage: Path,
    warm_start: str | None,
    stop_after: int,
) -> tuple[int, str | None]:
    """One Ray Train run of the trial (to epoch ``stop_after``), each epoch relayed to Tune;
    returns the last epoch reported and its checkpoint."""
    import threading

    from ray import tune
    from ray.util.queue import Empty, Queue

    from raynlp.training.trainer import build_trainer

    channel = Queue(actor_options={"num_cpus": 0})
    trainer = build_trainer(
        config,
        inputs["prepared"],
        inputs["model_path"],
        inputs["train_features"],
        inputs["validation_features"],
        run_name=config.name,
        storage_path=storage,
        callbacks=[_report_callback(channel)],
        warm_start=warm_start,
        stop_after_epoch=stop_after,
    )
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as err:  # re-raised in the trial's thread below
            outcome["error"] = err

    thread = threading.Thread(target=fit, name=f"train-{trial_id}", daemon=True)
    thread.start()
    epoch, last = 0, None
    wanted = inputs.get("rungs")  # checkpoints to Tune: at rungs only, or every epoch (PBT)
    while True:
        try:
            metrics, path = channel.get(timeout=1.0)
        except Empty:
            if thread.is_alive() or not channel.empty():
                continue
            break
        epoch, last = int(metrics["epoch"]), path
        checkpoint = None
        if path and inputs["report_checkpoints"] and (not wanted or epoch in wanted):
            from ray.tune import Checkpoint

            checkpoint = Checkpoint.from_directory(path)
        tune.report(metrics, checkpoint=checkpoint)
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    if outcome["result"].error:
        raise outcome["result"].error
    return epoch, last


def _checkpoint_epoch(path: str) -> int:
    from raynlp.training.checkpoints import read_checkpoint_meta

    return int(read_checkpoint_meta(Path(path))["epoch"])


def _record_start(storage: Path, trial_id: str, epoch: int, source: str, path: str) -> str:
    """Note in ``trials/starts/`` that the trial goes on from ``path`` (a checkpoint of epoch
    ``epoch``): another trial's (a PBT exploit) or its own (after a pause, a rung or a
    restore). Tune keeps every checkpoint reported to it until the search ends, so the path
    cannot vanish before the new run loads it."""
    record = storage / "starts" / f"{trial_id}_e{epoch}.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(
        json.dumps({"trial": trial_id, "epoch": epoch, "from_trial": source, "from": path})
    )
    print(
        f"[raynlp] trial {trial_id} continues from "
        + ("its own checkpoint" if source == trial_id else f"trial {source}'s checkpoint")
        + f" of epoch {epoch}",
        flush=True,
    )
    return path


TRIAL_ID = re.compile(r"run_trial_([0-9a-f]+(?:_\d{5})?)_")


def trial_id_of(path: str) -> str | None:
    """The trial id in a Tune trial folder's path (``run_trial_<id>_<index>_<params>…``)."""
    match = TRIAL_ID.search(path)
    return match.group(1) if match else None


def _exploits(storage: Path, trial_id: str) -> list[dict[str, Any]]:
    """Every other trial's checkpoint this trial continued from (PBT), in epoch order."""
    found = [json.loads(path.read_text()) for path in (storage / "starts").glob(f"{trial_id}_e*")]
    return sorted(
        (entry for entry in found if entry["from_trial"] != trial_id),
        key=lambda entry: entry["epoch"],
    )


def _trial_history(storage: Path, trial_id: str) -> tuple[list[dict], list[dict]]:
    """A trial's per-epoch history (from its latest Ray Train checkpoint's metadata, which
    survives restarts and resumes) and the metadata of every checkpoint Ray kept."""
    from raynlp.training.checkpoints import read_checkpoint_meta

    runs = [storage / f"trial_{trial_id}", *storage.glob(f"trial_{trial_id}_e*")]
    kept = []
    for run in runs:  # the trial's first Train run, then one per warm start (PBT)
        for checkpoint in sorted(run.glob("checkpoint_*")):
            if (checkpoint / "raynlp_checkpoint.json").is_file():
                kept.append({**read_checkpoint_meta(checkpoint), "path": str(checkpoint)})
    latest = max(kept, key=lambda m: m["epoch"], default=None)
    return (latest["history"] if latest else []), kept


def _trial_rows(
    results: Any, metric: str, mode: str, space_keys: list[str], storage: Path, epochs: int
) -> list[dict]:
    """One row per trial: its sampled params, best metric (and epoch, checkpoint), epochs run."""
    rows = []
    for result in results:
        trial_id = (result.metrics or {}).get("trial_id") or trial_id_of(str(result.path))
        history, kept = _trial_history(storage, trial_id) if trial_id else ([], [])
        scored = [
            m for m in kept if isinstance(m["metrics"].get(metric.removeprefix("val_")), float)
        ]
        if not history or not scored:
            rows.append({"trial": trial_id or "?", "status": "error",
                         "error": str(result.error)})  # fmt: skip
            continue
        name = metric.removeprefix("val_")
        pick = max if mode == "max" else min
        best = pick(scored, key=lambda m: m["metrics"][name])
        # the config of the trial's last report (PBT may change a trial's config afterwards)
        used = (result.metrics or {}).get("config") or result.config
        params = {key: used.get(key) for key in space_keys}
        planned = int(params.get("training.epochs") or epochs)
        rows.append(
            {
                "trial": trial_id,
                **{key.removeprefix("training."): value for key, value in params.items()},
                metric: float(best["metrics"][name]),
                "best_epoch": int(best["epoch"]),
                "epochs_run": len(history),
                "stopped_early": len(history) < planned,
                "steps": int(history[-1]["step"]),
                "continued_from": " ".join(
                    f"{entry['from_trial']}@{entry['epoch']}"
                    for entry in _exploits(storage, trial_id)
                ),
                "checkpoint": best["path"],
                "curve": [float(h[metric]) for h in history],
                "status": "ok",
            }
        )
    ok = [r for r in rows if r["status"] == "ok"]
    ok.sort(key=lambda r: r[metric], reverse=mode == "max")
    return ok + [r for r in rows if r["status"] != "ok"]


def write_tables(rows: list[dict], directory: Path) -> tuple[Path, Path]:
    import csv

    columns = [k for k in rows[0] if k not in ("curve", "checkpoint")] if rows else []
    csv_path, md_path = directory / "tune_results.csv", directory / "tune_results.md"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

    def cell(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def plot_trials(rows: list[dict], metric: str, path: Path) -> Path:
    """Left: best metric vs learning rate. Right: every trial's validation curve per epoch;
    trials stopped early dashed, ending in ×."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["status"] == "ok"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    if rows and "learning_rate" in rows[0]:
        left.scatter([r["learning_rate"] for r in rows], [r[metric] for r in rows])
        left.set_xscale("log")
        left.set_xlabel("learning rate")
    else:
        left.scatter(range(len(rows)), [r[metric] for r in rows])
        left.set_xlabel("trial (sorted)")
    left.set_ylabel(f"best {metric}")
    for row in rows:
        epochs = list(range(1, len(row["curve"]) + 1))
        style = "--" if row["stopped_early"] else "-"
        (line,) = right.plot(epochs, row["curve"], style, marker="o", ms=3, label=row["trial"])
        if row["stopped_early"]:
            right.plot(epochs[-1], row["curve"][-1], "x", ms=9, color=line.get_color())
    right.set_xlabel("epoch")
    right.set_ylabel(metric)
    right.set_title("trials (dashed, ×: stopped early by the scheduler)", fontsize=9)
    if len(rows) <= 12:
        right.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def tune(config: JobConfig, overwrite: bool = False, resume: bool = False) -> TuneResult:
    """Search ``config.tune.space`` on the current Ray cluster; write ``<output.dir>/<name>/``
    with ``tune_results.{csv,md}``, ``tune.png``, the best trial's ``model/`` (ready for
    ``raynlp export``), ``metrics.json`` and Tune's own experiment folder (``tune/``).

    ``resume=True`` continues an interrupted search with ``Tuner.restore``: finished trials
    stay finished, unfinished and errored ones run again, and each of those picks up its own
    Ray Train run from that run's latest checkpoint (trial runs keep their name and storage)."""
    import ray
    from ray import tune as ray_tune

    from raynlp.training.trainer import (
        encode_inputs,
        prepare_data,
        start_run_dir,
    )

    if not config.tune.space:
        raise ValueError("tune.space is empty: name at least one training field to search")
    parallel = concurrency(config, ray.cluster_resources())  # before any trial starts
    run_dir = start_run_dir(config, overwrite, resume, state="tune", what="search")
    started = time.perf_counter()
    prepared = prepare_data(config)
    model_path, tokenizer, train_features, validation_features = encode_inputs(config, prepared)
    if not resume:
        (run_dir / "config.yaml").write_text(dump_job_config(config))
    write_jsonl(prepared.validation_rows, run_dir / "data" / "validation.jsonl")
    metric, mode = tune_metric(config)
    space = search_space(config)
    max_epochs = max(
        [config.training.epochs]
        + [int(v) for v in _space_values(config, "training.epochs") if v is not None]
    )
    sync = synchronous(config, parallel)
    # stable across processes: a resumed search's pickled scheduler names the same actor
    digest = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:12]
    slots = f"raynlp_tune_slots_{digest}" if sync else None
    scheduler = build_scheduler(config, max_epochs, slots)
    print(
        f"[raynlp] tune: {num_trials(config)} trial(s) of {list(space)} by {metric} "
        f"({mode}), {describe_scheduler(config, max_epochs, parallel)}, {parallel} trial(s) at "
        f"a time × {config.scaling.num_workers} worker(s)",
        flush=True,
    )
    inputs = {
        "prepared": prepared,
        "model_path": model_path,
        "train_features": train_features,
        "validation_features": validation_features,
        "storage": str(run_dir / "trials"),
        # PBT exploits Tune checkpoints; synchronous halving pauses trials at its rungs
        "report_checkpoints": config.tune.scheduler == "pbt" or sync,
        "rungs": rungs_of(config, max_epochs) if sync else None,
        "slots": slots,
    }
    trainable = ray_tune.with_resources(
        ray_tune.with_parameters(run_trial, base=config.model_dump(mode="json"), inputs=inputs),
        TRIAL_DRIVER_RESOURCES,
    )
    if resume:
        print(f"[raynlp] tune: resuming the search in {run_dir / 'tune'}", flush=True)
        tuner = ray_tune.Tuner.restore(
            str(run_dir / "tune"), trainable=trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        tuner = _new_tuner(trainable, config, space, metric, mode, scheduler, parallel, run_dir)
    slot_actor = slots_actor(slots, parallel) if slots else None
    try:
        results = tuner.fit()
    finally:
        if slot_actor is not None:
            ray.kill(slot_actor)
    return _finish(
        config, results, run_dir, metric, mode, space, prepared, model_path, tokenizer, started
    )


def num_trials(config: JobConfig) -> int:
    """Trials the search runs: ``num_samples``, times every grid's size for a grid."""
    grids = [
        len(values)
        for spec in config.tune.space.values()
        for kind, values in spec.items()
        if kind == "grid" or (kind == "choice" and config.tune.search_alg == "grid")
    ]
    return config.tune.num_samples * math.prod(grids)


def synchronous(config: JobConfig, parallel: int) -> bool:
    """ASHA as synchronous successive halving (``tune.asha.synchronous``; auto: when the
    cluster runs fewer trials at once than the search has, where asynchronous ASHA lets the
    first trials to reach a rung go on whatever they score)."""
    wanted = config.tune.asha.synchronous
    if config.tune.scheduler != "asha":
        return False
    return parallel < num_trials(config) if wanted == "auto" else bool(wanted)


def rungs_of(config: JobConfig, max_epochs: int) -> list[int]:
    return rungs(config.tune.asha.grace_period, config.tune.asha.reduction_factor, max_epochs)


def describe_scheduler(config: JobConfig, max_epochs: int, parallel: int) -> str:
    """One line for the console: the scheduler, and for halving its rungs and survivors."""
    section = config.tune
    if section.scheduler != "asha":
        return f"{section.scheduler} scheduler"
    points = rungs_of(config, max_epochs)
    if not synchronous(config, parallel):
        rungs = ", ".join(map(str, points[:-1])) or "none before the last epoch"
        return f"asynchronous ASHA (rungs at epochs: {rungs})"
    counts = survivors(num_trials(config), section.asha.reduction_factor, len(points))
    plan = ", ".join(f"{n} to epoch {e}" for n, e in zip(counts, points, strict=True))
    return f"synchronous successive halving ({plan})"


def build_scheduler(config: JobConfig, max_epochs: int, slots: str | None = None) -> Any:
    """ASHA (stop weak trials at epoch rungs; synchronous halving when ``slots`` names the
    search's slot actor), FIFO (run all to the end) or PBT (weak trials continue from a strong
    trial's checkpoint with perturbed values), all on the ``epoch`` every report carries."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    section = config.tune
    if section.scheduler == "asha" and slots:
        return SyncHalving(
            num_trials=num_trials(config),
            grace_period=section.asha.grace_period,
            reduction_factor=section.asha.reduction_factor,
            max_t=max_epochs,
            slots=slots,
        )
    if section.scheduler == "asha":
        return ASHAScheduler(
            time_attr="epoch",
            max_t=max_epochs,
            grace_period=section.asha.grace_period,
            reduction_factor=section.asha.reduction_factor,
        )
    if section.scheduler == "fifo":
        return FIFOScheduler()
    mutations = {
        key: _mutation(*next(iter(section.space[key].items()))) for key in section.pbt.mutate
    }
    return PopulationBasedTraining(
        time_attr="epoch",
        perturbation_interval=section.pbt.perturbation_interval,
        hyperparam_mutations=mutations,
        quantile_fraction=section.pbt.quantile_fraction,
        resample_probability=section.pbt.resample_probability,
        synch=section.pbt.synch,
    )


def _mutation(kind: str, values: list[Any]) -> Any:
    """How PBT's explore changes a value: a range is scaled ×0.8/×1.2 (or resampled); a list
    of floats (e.g. a learning-rate grid) too, resampling from the list; any other list (batch
    sizes, strategies) moves to a neighbouring entry (or resamples)."""
    import random

    from ray import tune as ray_tune

    if kind in ("loguniform", "uniform", "randint"):
        return getattr(ray_tune, kind)(*values)
    if all(isinstance(v, float) for v in values):
        return lambda: random.choice(values)
    return list(values)


def build_search_alg(config: JobConfig, parallel: int = 0) -> Any:
    """Tune's own random/grid sampling, Optuna's TPE or HyperOpt (those two need
    ``pip install raynlp[search]``), seeded by ``tune.seed`` (default ``training.seed``)."""
    seed = config.tune.seed if config.tune.seed is not None else config.training.seed
    try:
        if config.tune.search_alg == "optuna":
            from ray.tune.search.optuna import OptunaSearch

            return OptunaSearch(seed=seed)
        if config.tune.search_alg == "hyperopt":
            from ray.tune.search.hyperopt import HyperOptSearch

            return HyperOptSearch(random_state_seed=seed)
    except (ImportError, AssertionError) as err:  # Ray asserts the package is importable
        raise ImportError(
            f"tune.search_alg {config.tune.search_alg!r} needs its package: "
            f"pip install 'raynlp[search]' ({err})"
        ) from err
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=seed, max_concurrent=parallel)


def _new_tuner(trainable, config, space, metric, mode, scheduler, parallel, run_dir):
    from ray import tune as ray_tune

    sync = isinstance(scheduler, SyncHalving)  # paused trials keep a searcher slot: no cap
    search_alg = build_search_alg(config, 0 if sync else parallel)
    return ray_tune.Tuner(
        trainable,
        param_space=space,
        tune_config=ray_tune.TuneConfig(
            metric=metric,
            mode=mode,
            num_samples=config.tune.num_samples,
            scheduler=scheduler,
            search_alg=search_alg,
            # Tune's own generator takes the limit itself (Tune ignores this one for it)
            max_concurrent_trials=None
            if config.tune.search_alg in ("random", "grid") or sync
            else parallel,
            reuse_actors=False,  # a stopped trial's process (and its Train run) must go
        ),
        run_config=ray_tune.RunConfig(
            name="tune",
            storage_path=str(run_dir),
            verbose=1,
            log_to_file=True,
            # only PBT and synchronous halving report checkpoints to Tune; all are kept (a
            # trial may exploit or resume an older one after waiting) until the search ends
            checkpoint_config=ray_tune.CheckpointConfig(num_to_keep=None),
        ),
    )


def _finish(
    config, results, run_dir, metric, mode, space, prepared, model_path, tokenizer, started
):
    from raynlp.training.trainer import _consolidate

    rows = _trial_rows(
        results, metric, mode, list(space), run_dir / "trials", config.training.epochs
    )
    _drop_tune_checkpoints(run_dir / "tune")
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        errors = [str(r.error) for r in results if r.error][:3]
        raise RuntimeError(f"every trial failed; first errors: {errors}")
    best = ok[0]
    write_tables(rows, run_dir)
    plot_trials(rows, metric, run_dir / "tune.png")

    best_params = {f"training.{k}": best[k] for k in (p.removeprefix("training.") for p in space)}
    best_config = trial_config(config, best_params, config.name)
    from ray.train import Checkpoint

    model_dir, meta = _consolidate(
        best_config,
        Checkpoint.from_directory(best["checkpoint"]),
        prepared,
        model_path,
        tokenizer,
    )
    (run_dir / "best_config.yaml").write_text(dump_job_config(best_config))
    summary = {
        "task": config.task,
        "metric": metric,
        "mode": mode,
        "best_trial": best["trial"],
        "best": {k: v for k, v in best.items() if k != "curve"},
        "best_epoch": meta["epoch"],
        "validation": meta["metrics"],
        "trials": [{k: v for k, v in r.items() if k != "curve"} for r in rows],
        "total_steps": sum(r.get("steps", 0) for r in ok),
        "stopped_early": sum(r["stopped_early"] for r in ok),
        "wall_s": round(time.perf_counter() - started, 2),
    }
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2, default=str))
    print(
        f"[raynlp] tune: best trial {best['trial']} {metric} {best[metric]:.4f} "
        f"({_describe(best, space)}); {summary['stopped_early']}/{len(ok)} trials stopped early; "
        f"model written to {model_dir} ({summary['wall_s']}s)",
        flush=True,
    )
    return TuneResult(run_dir, model_dir, summary, rows)


def _drop_tune_checkpoints(experiment: Path) -> None:
    """Delete the copies of trial checkpoints that the scheduler (PBT's exploits, synchronous
    halving's pauses) needed during the search (each trial's own Ray Train checkpoints, best N
    kept, stay in ``trials/``)."""
    import shutil

    copies = [path for path in experiment.glob("*/checkpoint_*") if path.is_dir()]
    if not copies:
        return
    size = sum(f.stat().st_size for path in copies for f in path.rglob("*") if f.is_file())
    for path in copies:
        shutil.rmtree(path, ignore_errors=True)
    print(
        f"[raynlp] tune: removed {len(copies)} checkpoint copies the scheduler no longer needs "
        f"({size / 2**20:.0f} MiB)",
        flush=True,
    )


def _space_values(config: JobConfig, key: str) -> list[Any]:
    spec = config.tune.space.get(key)
    if not spec:
        return []
    kind, values = next(iter(spec.items()))
    return [values[1] - 1] if kind == "randint" else list(values)  # randint's high is exclusive


def _describe(row: dict[str, Any], space: dict[str, Any]) -> str:
    return ", ".join(
        f"{k.removeprefix('training.')}={row[k.removeprefix('training.')]}" for k in space
    )
