"""The ``tune.space`` of a job config as a Ray Tune search space, and a trial's job config."""

from __future__ import annotations

from typing import Any

from raynlp.config import JobConfig, parse_job_config


def search_space(config: JobConfig) -> dict[str, Any]:
    """``{"training.learning_rate": tune.loguniform(...), ...}`` for ``Tuner(param_space=…)``."""
    from ray import tune

    space: dict[str, Any] = {}
    for key, spec in config.tune.space.items():
        kind, values = next(iter(spec.items()))
        if kind == "loguniform":
            space[key] = tune.loguniform(*values)
        elif kind == "uniform":
            space[key] = tune.uniform(*values)
        elif kind == "randint":
            space[key] = tune.randint(*values)
        elif kind == "choice" and config.tune.search_alg == "random":
            space[key] = tune.choice(values)
        else:  # grid, or choice under the grid search
            space[key] = tune.grid_search(values)
    return space


def trial_config(config: JobConfig, params: dict[str, Any], name: str) -> JobConfig:
    """The job config of one trial: the sampled training fields set, validated again (so a
    combination that cannot work, e.g. a batch size the workers cannot split, names its key)."""
    raw = config.model_dump(mode="json")
    for key, value in params.items():
        if key.startswith("_"):  # bookkeeping entries of the param space, not config keys
            continue
        section, field = key.split(".", 1)
        raw[section][field] = value.item() if hasattr(value, "item") else value
    raw["name"] = name
    raw["output"]["tensorboard"] = False  # Tune writes its own logs per trial
    raw["output"]["checkpoints_to_keep"] = config.tune.checkpoints_to_keep
    return parse_job_config(raw, f"trial {name}")
