"""`raynlp tune`: the tune: section, trial resources, and a real Ray Tune search (ASHA) whose
trials are Ray Train + DeepSpeed runs of the training loop on a tiny BERT."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest
from conftest import tiny_job

from raynlp.config import ConfigError, parse_job_config
from raynlp.evaluation import evaluate_model
from raynlp.tuning.space import search_space, trial_config
from raynlp.tuning.tuner import TuneResourceError, concurrency, tune, tune_metric


def job(**tune_section) -> dict:
    return {"name": "t", "data": {"train": "sample://sst2_train.tsv"}, "tune": tune_section}


def test_search_space_kinds():
    from ray.tune.search.sample import Categorical, Float, Integer

    config = parse_job_config(
        job(
            space={
                "learning_rate": {"loguniform": [1e-5, 1e-3]},
                "training.weight_decay": {"uniform": [0.0, 0.1]},
                "epochs": {"randint": [2, 5]},
                "batch_size": {"choice": [16, 32]},
                "strategy": {"grid": ["full", "freeze"]},
            }
        )
    )
    space = search_space(config)
    assert isinstance(space["training.learning_rate"], Float)
    assert isinstance(space["training.weight_decay"], Float)
    assert isinstance(space["training.epochs"], Integer)
    assert isinstance(space["training.batch_size"], Categorical)
    assert space["training.strategy"] == {"grid_search": ["full", "freeze"]}
    grid = parse_job_config(job(search_alg="grid", space={"batch_size": {"choice": [16, 32]}}))
    assert search_space(grid)["training.batch_size"] == {"grid_search": [16, 32]}


def test_trial_config_sets_and_revalidates_fields():
    config = parse_job_config(job(space={"learning_rate": {"loguniform": [1e-5, 1e-3]}}))
    trial = trial_config(
        config, {"training.learning_rate": 3e-4, "training.epochs": 4, "_epochs": 3}, "trial_1"
    )
    assert trial.training.learning_rate == 3e-4 and trial.training.epochs == 4
    assert trial.name == "trial_1" and trial.output.tensorboard is False
    with pytest.raises(ConfigError, match="divisible"):
        trial_config(config, {"training.batch_size": 33}, "trial_2")  # 2 workers cannot split it


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"space": {"lr": {"choice": [1e-5]}}}, "'lr' is not a training field"),
        ({"space": {"learning_rate": {"between": [1, 2]}}}, "give one of loguniform"),
        ({"space": {"batch_size": {"choice": [0, 32]}}}, "value 0 is invalid"),
        ({"space": {"learning_rate": {"loguniform": [1e-3, 1e-5]}}}, "needs 0 < low < high"),
        (
            {"search_alg": "grid", "space": {"learning_rate": {"uniform": [1e-5, 1e-4]}}},
            "search_alg 'grid' cannot enumerate ranges",
        ),
        ({"scheduler": "hyperband"}, "tune.scheduler"),
        (
            {"search_alg": "optuna", "space": {"strategy": {"grid": ["full", "freeze"]}}},
            "search_alg 'optuna' samples, it cannot enumerate a grid: training.strategy",
        ),
        (
            {"scheduler": "pbt", "space": {"epochs": {"choice": [2, 3]}}},
            "pbt.mutate: 'training.learning_rate' is not in tune.space",
        ),
        (
            {
                "scheduler": "pbt",
                "pbt": {"mutate": ["epochs"]},
                "space": {"epochs": {"choice": [2, 3]}},
            },
            "training.epochs cannot change mid-run",
        ),
        ({"pbt": {"quantile_fraction": 0.9}}, "tune.pbt.quantile_fraction"),
    ],
)
def test_bad_tune_section_names_the_key(section, message):
    with pytest.raises(ConfigError) as err:
        parse_job_config(job(**section))
    assert message in str(err.value)


def test_trials_fit_the_cluster_or_fail_clearly():
    config = parse_job_config({**job(), "scaling": {"num_workers": 1}})
    assert concurrency(config, {"CPU": 2.0}) == 2
    two = parse_job_config({**job(max_concurrent_trials=1), "scaling": {"num_workers": 1}})
    assert concurrency(two, {"CPU": 8.0}) == 1
    gpu = parse_job_config(
        {
            **job(),
            "scaling": {
                "num_workers": 2,
                "use_gpu": True,
                "resources_per_worker": {"CPU": 4, "GPU": 1},
            },
        }
    )
    assert concurrency(gpu, {"CPU": 32.0, "GPU": 4.0}) == 2
    with pytest.raises(TuneResourceError, match=r"needs 2 GPU .* but the Ray cluster has 1"):
        concurrency(gpu, {"CPU": 32.0, "GPU": 1.0})
    assert tune_metric(parse_job_config(job())) == ("val_accuracy", "max")


@pytest.mark.timeout(120)
def test_impossible_trial_resources_fail_fast(tmp_path: Path, tiny_base_model: Path, ray_local):
    config = parse_job_config(
        tiny_job(
            tmp_path,
            tiny_base_model,
            scaling={"num_workers": 2, "resources_per_worker": {"CPU": 8}},
            tune={"space": {"learning_rate": {"choice": [1e-3, 1e-4]}}},
        )
    )
    started = time.monotonic()
    with pytest.raises(TuneResourceError, match=r"one trial needs 16 CPU .* has 2"):
        tune(config)
    assert time.monotonic() - started < 30
    assert not config.run_dir.exists()  # nothing was started or written


@pytest.mark.timeout(600)
def test_asha_search_stops_weak_trials_and_exports_the_best(
    tmp_path: Path, tiny_base_model: Path, ray_local
):
    """4 trials (a good and a useless learning rate, twice), one 1-CPU worker each, 2 at a
    time, so ASHA runs synchronously: every trial pauses at epochs 1 and 2 until all live ones
    got there, then the better half goes on from its own checkpoint (4 → 2 → 1 trials); the
    best trial's model is consolidated."""
    import json

    import ray

    job = tiny_job(
        tmp_path,
        tiny_base_model,
        training={"epochs": 3, "batch_size": 32},
        scaling={"num_workers": 1},
        tune={
            "space": {"learning_rate": {"grid": [3e-3, 1e-7]}},
            "search_alg": "grid",
            "num_samples": 2,
            "asha": {"grace_period": 1, "reduction_factor": 2},
        },
    )
    job["data"]["max_train_rows"] = 256
    result = tune(parse_job_config(job))

    ok = [t for t in result.trials if t["status"] == "ok"]
    assert len(ok) == 4
    assert sorted(t["epochs_run"] for t in ok) == [1, 1, 2, 3]  # halved at each rung
    assert [t["stopped_early"] for t in ok].count(True) == 3
    # the trials that went on resumed from their own rung checkpoints, with continuous steps
    starts = [json.loads(p.read_text()) for p in (result.run_dir / "trials/starts").glob("*")]
    assert sorted(s["epoch"] for s in starts) == [1, 1, 2]
    assert all(s["from_trial"] == s["trial"] for s in starts)
    longest = max(ok, key=lambda t: t["epochs_run"])
    assert longest["steps"] == 3 * 256 // 32
    assert not [a for a in ray.util.list_named_actors() if "raynlp_tune_slots" in a]
    best = result.best["best"]
    assert best["val_accuracy"] == max(t["val_accuracy"] for t in ok)

    rows = list(csv.DictReader((result.run_dir / "tune_results.csv").open()))
    assert len(rows) == 4
    scores = [float(r["val_accuracy"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert (result.run_dir / "tune_results.md").read_text().startswith("| trial |")
    assert (result.run_dir / "tune.png").read_bytes()[:4] == b"\x89PNG"

    scored = evaluate_model(result.model_dir, str(result.run_dir / "data" / "validation.jsonl"))
    assert scored["metrics"]["accuracy"] == pytest.approx(result.best["validation"]["accuracy"])
    best_config = parse_job_config(
        __import__("yaml").safe_load((result.run_dir / "best_config.yaml").read_text())
    )
    assert best_config.training.learning_rate == best["learning_rate"]


def test_successive_halving_plan():
    """Rungs, survivors and when ASHA runs synchronously (auto: more trials than fit at once)."""
    from raynlp.tuning.halving import rungs, survivors
    from raynlp.tuning.tuner import describe_scheduler, num_trials, synchronous

    assert rungs(1, 3, 6) == [1, 3, 6]
    assert rungs(1, 2, 4) == [1, 2, 4]
    assert rungs(2, 1.5, 6) == [2, 3, 4, 6]
    assert survivors(8, 3, 3) == [8, 3, 1]
    grid = {"learning_rate": {"grid": [1e-5, 3e-5, 1e-4, 3e-4]}, "batch_size": {"choice": [16, 32]}}
    config = parse_job_config(
        job(space=grid, search_alg="grid", num_samples=1, asha={"reduction_factor": 3})
    )
    assert num_trials(config) == 8
    assert synchronous(config, 2) and not synchronous(config, 8)
    assert describe_scheduler(config, 6, 2) == (
        "synchronous successive halving (8 to epoch 1, 3 to epoch 3, 1 to epoch 6)"
    )
    assert describe_scheduler(config, 6, 8).startswith("asynchronous ASHA (rungs at epochs: 1, 3)")
    assert describe_scheduler(config, 1, 8) == (
        "asynchronous ASHA (rungs at epochs: none before the last epoch)"
    )
    forced = parse_job_config(job(space=grid, asha={"synchronous": False}))
    assert not synchronous(forced, 1)
    assert num_trials(parse_job_config(job(space=grid, num_samples=5))) == 5 * 4
    with pytest.raises(ConfigError, match=r"reduction_factor 1\.5 × grace_period 1"):
        parse_job_config(job(space=grid, asha={"reduction_factor": 1.5}))


def test_schedulers_and_search_algorithms_build():
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining
    from ray.tune.search.basic_variant import BasicVariantGenerator
    from ray.tune.search.hyperopt import HyperOptSearch
    from ray.tune.search.optuna import OptunaSearch

    from raynlp.tuning.halving import SyncHalving
    from raynlp.tuning.tuner import build_scheduler, build_search_alg

    space = {"learning_rate": {"loguniform": [1e-5, 1e-3]}, "batch_size": {"choice": [16, 32]}}
    expected = {"asha": ASHAScheduler, "fifo": FIFOScheduler, "pbt": PopulationBasedTraining}
    for name, kind in expected.items():
        config = parse_job_config(job(scheduler=name, space=space))
        assert isinstance(build_scheduler(config, 3), kind)
    sync = build_scheduler(parse_job_config(job(space=space)), 3, slots="s")
    assert isinstance(sync, SyncHalving) and sync._halvings == 2  # rungs 1, 2 and 3
    pbt = build_scheduler(
        parse_job_config(
            job(scheduler="pbt", space=space, pbt={"mutate": ["learning_rate", "batch_size"]})
        ),
        3,
    )
    assert set(pbt._hyperparam_mutations) == {"training.learning_rate", "training.batch_size"}
    assert pbt._hyperparam_mutations["training.batch_size"] == [16, 32]  # neighbours
    grid = {"learning_rate": {"grid": [1e-4, 3e-5]}}
    pbt = build_scheduler(parse_job_config(job(scheduler="pbt", space=grid)), 3)
    assert pbt._hyperparam_mutations["training.learning_rate"]() in (1e-4, 3e-5)  # or ×0.8/1.2
    assert not pbt._synch
    synch = parse_job_config(job(scheduler="pbt", space=grid, pbt={"synch": True}))
    assert build_scheduler(synch, 3)._synch
    algs = {"random": BasicVariantGenerator, "optuna": OptunaSearch, "hyperopt": HyperOptSearch}
    for name, kind in algs.items():
        assert isinstance(build_search_alg(parse_job_config(job(search_alg=name))), kind)
    # Tune ignores max_concurrent_trials for its own generator: the limit must be set on it
    assert build_search_alg(parse_job_config(job()), 2).max_concurrent == 2


@pytest.mark.timeout(600)
def test_pbt_trials_continue_from_better_trials(tmp_path: Path, tiny_base_model: Path, ray_local):
    """Synchronous PBT over 2 trials (both at once, 2 epochs): after epoch 1 the weaker one
    is restarted from the stronger one's checkpoint and continues its epochs and steps with a
    perturbed learning rate."""
    import json

    from raynlp.training.checkpoints import read_checkpoint_meta

    job = tiny_job(
        tmp_path,
        tiny_base_model,
        training={"epochs": 2, "batch_size": 32, "lr_schedule": "constant", "warmup_ratio": 0.0},
        scaling={"num_workers": 1},
        tune={
            "space": {"learning_rate": {"grid": [3e-3, 1e-7]}},
            "search_alg": "grid",
            "num_samples": 1,
            "scheduler": "pbt",
            # synchronous: both trials meet after each epoch and the lower one exploits, every
            # time (asynchronous PBT's exploits depend on which trial reports first)
            "pbt": {"quantile_fraction": 0.5, "resample_probability": 0.0, "synch": True},
        },
    )
    job["data"]["max_train_rows"] = 256
    result = tune(parse_job_config(job))

    ok = [t for t in result.trials if t["status"] == "ok"]
    assert len(ok) == 2
    exploited = [t for t in ok if t["continued_from"]]
    assert exploited, "no PBT exploit happened"
    for row in exploited:
        donors = [entry.split("@")[0] for entry in row["continued_from"].split()]
        assert all(donor != row["trial"] for donor in donors)

    trials = result.run_dir / "trials"
    starts = [json.loads(p.read_text()) for p in (trials / "starts").glob("*.json")]
    exploits = [s for s in starts if s["from_trial"] != s["trial"]]
    assert [s["epoch"] for s in exploits] == [1]  # the bottom half of two: one trial, each time
    for start in exploits:
        run = trials / f"trial_{start['trial']}_e{start['epoch']}"
        metas = [read_checkpoint_meta(c) for c in run.glob("checkpoint_0*")]
        if not metas:
            continue  # a Train run with nothing left to do
        latest = max(metas, key=lambda m: m["epoch"])
        assert latest["resumed"][-1]["warm_start"] == start["from"]
        assert f"run_trial_{start['from_trial']}_" in start["from"]
        start = start["epoch"]
        history = latest["history"]
        assert [h["epoch"] for h in history] == list(range(1, latest["epoch"] + 1))
        before, after = history[start - 1], history[start]
        assert after["step"] > before["step"]  # steps go on from the copied checkpoint
        assert after["lr"] != before["lr"]  # the explored learning rate is in use
    assert (result.model_dir / "model.safetensors").is_file()
    assert not list((result.run_dir / "tune").glob("*/checkpoint_*"))  # PBT's copies removed


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_interrupted_search_resumes(tmp_path: Path, tiny_base_model: Path):
    """`raynlp tune` is killed with its Ray after a trial's first checkpoint; `raynlp tune
    --resume RUN` (Tuner.restore) finishes the same trials and writes the results."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from conftest import write_job

    job = tiny_job(
        tmp_path,
        tiny_base_model,
        training={"epochs": 2},
        scaling={"num_workers": 1},
        tune={
            "space": {"learning_rate": {"grid": [3e-3, 1e-4]}},
            "search_alg": "grid",
            "num_samples": 2,
            "scheduler": "fifo",
        },
    )
    job["data"]["max_train_rows"] = 256
    path = write_job(tmp_path / "tune.yaml", job)
    run_dir = tmp_path / "runs" / "tiny"
    raynlp = str(Path(sys.executable).parent / "raynlp")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen(
            [raynlp, "tune", str(path)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 300
            while not list((run_dir / "trials").glob("*/checkpoint_manager_snapshot.json")):
                assert time.monotonic() < deadline, "no trial checkpoint within 300 s"
                assert first.poll() is None, "the search ended before it was interrupted"
                time.sleep(0.5)
            time.sleep(3)  # let Tune save its experiment state
        finally:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=60)
    trials_before = {p.name for p in (run_dir / "trials").iterdir()}
    assert not (run_dir / "metrics.json").exists()

    second = subprocess.run(
        [raynlp, "tune", "--resume", str(run_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=500,
        start_new_session=True,
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resuming the search" in second.stdout + second.stderr
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert len([t for t in summary["trials"] if t["status"] == "ok"]) == 4
    assert all(t["epochs_run"] == 2 for t in summary["trials"])
    assert trials_before <= {p.name for p in (run_dir / "trials").iterdir()}  # same trials
    assert (run_dir / "model" / "model.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("search_alg", ["optuna", "hyperopt"])
def test_model_based_search_runs(tmp_path: Path, tiny_base_model: Path, ray_local, search_alg):
    """Optuna (TPE) / HyperOpt sample the space through Ray Tune's integrations; their trial
    ids (no index suffix) still map to each trial's Ray Train run."""
    job = tiny_job(
        tmp_path,
        tiny_base_model,
        training={"epochs": 1, "batch_size": 32},
        scaling={"num_workers": 1},
        tune={
            "space": {"learning_rate": {"loguniform": [1e-5, 3e-3]}, "seed": {"randint": [0, 9]}},
            "search_alg": search_alg,
            "num_samples": 3,
            "scheduler": "fifo",
        },
    )
    job["data"]["max_train_rows"] = 128
    result = tune(parse_job_config(job))
    ok = [t for t in result.trials if t["status"] == "ok"]
    assert len(ok) == 3
    assert len({t["learning_rate"] for t in ok}) == 3
    assert all(1e-5 <= t["learning_rate"] <= 3e-3 and 0 <= t["seed"] < 9 for t in ok)
    assert (result.model_dir / "model.safetensors").is_file()
