"""The CLI (help, validate, errors before any cluster) and cluster.yaml against Ray's own schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raynlp.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
VERBS = [
    "demo",
    "validate",
    "train",
    "tune",
    "evaluate",
    "optimize",
    "export",
    "bench",
    "serve",
    "predict",
    "tasks",
]


def test_every_verb_has_help():
    for verb in VERBS:
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args([verb, "--help"])
        assert exit_.value.code == 0


def test_console_script_help_lists_verbs():
    out = subprocess.run(
        [str(Path(sys.executable).parent / "raynlp"), "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for verb in VERBS:
        assert verb in out


def test_validate_ok(capsys):
    assert main(["validate", str(REPO / "jobs" / "sentiment.yaml")]) == 0
    out = capsys.readouterr().out
    assert "OK — task classification, 2 workers (CPU, gloo), ZeRO-2, fp32" in out


def test_bad_config_fails_before_any_cluster(tmp_path: Path, capsys):
    import ray

    job = yaml.safe_load((REPO / "jobs" / "sentiment.yaml").read_text())
    job["deepspeed"]["zero_stage"] = 7
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(job))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "deepspeed.zero_stage: Input should be 0, 1, 2 or 3 (got 7)" in err
    assert not ray.is_initialized()


def test_tasks_verb_matches_registry(capsys):
    from raynlp.tasks import task_names

    assert main(["tasks"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == task_names()
    readme = (REPO / "README.md").read_text()
    for name in task_names():
        assert f"`{name}`" in readme


def test_cluster_yaml_passes_ray_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(config))
    assert config["available_node_types"]["gpu_worker"]["max_workers"] >= 1
    config["available_node_types"]["gpu_worker"]["min_workers"] = "many"
    with pytest.raises(Exception, match="min_workers"):
        validate_config(prepare_config(config))
