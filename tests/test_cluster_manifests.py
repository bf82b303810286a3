"""The KubeRay manifests and their image: structure and consistency with the repository.

Plain YAML checks (no Kubernetes client, no CRD schema, no Ray cluster, no network): the kinds,
GPU requests, head settings, the shared /runs volume, the RayJob entrypoint against the real
CLI and job configs, and the Dockerfile's pins against pyproject.toml.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
KUBERAY = REPO / "deploy" / "kuberay"
RUNS_CLAIM = "raynlp-runs"


def load_one(name: str) -> dict[str, Any]:
    documents = [d for d in yaml.safe_load_all((KUBERAY / name).read_text()) if d is not None]
    assert len(documents) == 1, f"{name}: expected one document, got {len(documents)}"
    return documents[0]


def ray_pin() -> str:
    pins = re.findall(r'"ray\[[^\]]*\]==([0-9.]+)"', (REPO / "pyproject.toml").read_text())
    assert len(pins) == 1, pins
    return pins[0]


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    return load_one("raycluster.yaml")


@pytest.fixture(scope="module")
def job() -> dict[str, Any]:
    return load_one("rayjob.yaml")


def cluster_specs(cluster: dict[str, Any], job: dict[str, Any]) -> list[dict[str, Any]]:
    return [cluster["spec"], job["spec"]["rayClusterSpec"]]


def pod_specs(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(group name, pod spec) of the head and every worker group."""
    pods = [("head", spec["headGroupSpec"]["template"]["spec"])]
    pods += [(g["groupName"], g["template"]["spec"]) for g in spec["workerGroupSpecs"]]
    return pods


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item.get("value") for item in container.get("env", [])}


def test_kinds_and_api_version(cluster, job):
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    pvc = load_one("pvc.yaml")
    assert (pvc["apiVersion"], pvc["kind"]) == ("v1", "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == RUNS_CLAIM
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]


def test_rayjob_runs_on_the_same_cluster_spec(cluster, job):
    assert job["spec"]["rayClusterSpec"] == cluster["spec"]


def test_head_schedules_only(cluster, job):
    for spec in cluster_specs(cluster, job):
        params = spec["headGroupSpec"]["rayStartParams"]
        # KubeRay's rayStartParams is map[string]string: an unquoted 0 is rejected
        assert params["num-cpus"] == "0"
        assert params["dashboard-host"] == "0.0.0.0"
        head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
        assert "nvidia.com/gpu" not in head["resources"].get("limits", {})
        assert "nvidia.com/gpu" not in head["resources"].get("requests", {})


def test_autoscaling_gpu_workers(cluster, job):
    for spec in cluster_specs(cluster, job):
        assert spec["enableInTreeAutoscaling"] is True
        assert spec["rayVersion"] == ray_pin()
        groups = spec["workerGroupSpecs"]
        assert len(groups) == 1
        group = groups[0]
        assert (group["minReplicas"], group["maxReplicas"]) == (0, 4)
        assert group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]
        resources = group["template"]["spec"]["containers"][0]["resources"]
        assert int(resources["limits"]["nvidia.com/gpu"]) == 1
        assert {"cpu", "memory"} <= set(resources["requests"])


def test_workers_fit_the_gpu_job(cluster):
    """jobs/sentiment_gpu.yaml's workers fit the group: one per pod, and enough pods."""
    scaling = yaml.safe_load((REPO / "jobs" / "sentiment_gpu.yaml").read_text())["scaling"]
    group = cluster["spec"]["workerGroupSpecs"][0]
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    per_worker = scaling["resources_per_worker"]
    assert scaling["use_gpu"] is True
    assert float(limits["cpu"]) >= per_worker["CPU"]
    workers_per_pod = int(limits["nvidia.com/gpu"]) // per_worker["GPU"]
    assert workers_per_pod >= 1
    assert group["maxReplicas"] * workers_per_pod >= scaling["num_workers"]


def test_runs_volume_on_head_and_workers(cluster, job):
    for spec in cluster_specs(cluster, job):
        for group, pod in pod_specs(spec):
            claims = {
                v["name"]: v["persistentVolumeClaim"]["claimName"]
                for v in pod["volumes"]
                if "persistentVolumeClaim" in v
            }
            mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
            assert "/runs" in mounts, f"{group}: /runs is not mounted"
            assert claims.get(mounts["/runs"]) == RUNS_CLAIM, f"{group}: /runs is not the claim"


def test_auth_mode_is_the_same_everywhere(cluster, job):
    """Every `ray start`, the autoscaler and the job submitter agree (else 401s)."""
    containers = [job["spec"]["submitterPodTemplate"]["spec"]["containers"][0]]
    for spec in cluster_specs(cluster, job):
        containers += [pod["containers"][0] for _, pod in pod_specs(spec)]
        containers.append(spec["autoscalerOptions"])
    assert len(containers) == 7
    assert {env_of(c).get("RAY_AUTH_MODE") for c in containers} == {"disabled"}


def test_one_image_everywhere(cluster, job):
    images = {job["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["image"]}
    for spec in cluster_specs(cluster, job):
        images |= {pod["containers"][0]["image"] for _, pod in pod_specs(spec)}
    assert len(images) == 1, images
    # the project image, not the stock Ray image (which lacks raynlp)
    assert not images.pop().startswith("rayproject/")


def test_rayjob_entrypoint_matches_cli_and_repo(job):
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[:2] == ["raynlp", "train"]
    config = words[2]
    # the Dockerfile copies jobs/ to /app/jobs
    assert config.startswith("/app/jobs/")
    assert (REPO / config.removeprefix("/app/")).is_file(), f"{config} is not in jobs/"
    assert words[words.index("--output-dir") + 1] == "/runs"
    flags = {w.split("=")[0] for w in words[3:] if w.startswith("--")}
    assert flags <= {"--output-dir", "--overwrite", "--address", "--resume"}, flags


def test_rayjob_lifecycle(job):
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0
    assert spec["activeDeadlineSeconds"] > 0
    assert spec["backoffLimit"] >= 0
    assert spec["submitterPodTemplate"]["spec"]["restartPolicy"] in {"Never", "OnFailure"}


def test_dockerfile_pins():
    text = (KUBERAY / "Dockerfile").read_text()
    instructions = [line.strip() for line in text.replace("\\\n", " ").splitlines() if line.strip()]
    instructions = [line for line in instructions if not line.startswith("#")]
    froms = [line.split()[1] for line in instructions if line.upper().startswith("FROM ")]
    assert froms == [f"rayproject/ray:{ray_pin()}-py311-gpu"]
    runs = [line for line in instructions if line.upper().startswith("RUN ")]
    torch = [i for i, line in enumerate(runs) if "torch==2.13.0" in line]
    project = [
        i for i, line in enumerate(runs) if re.search(r"pip install .*-c constraints\.txt", line)
    ]
    assert torch and project, runs
    assert torch[0] < project[0], "the CUDA torch must be installed before the project"
    assert "https://download.pytorch.org/whl/cu" in runs[torch[0]]
    assert "torch==2.13.0" in (REPO / "pyproject.toml").read_text()
    assert re.search(r"^torch==2\.13\.0$", (REPO / "constraints.txt").read_text(), re.M)
    copies = " ".join(line for line in instructions if line.upper().startswith("COPY "))
    for needed in ("pyproject.toml", "constraints.txt", "README.md", "src", "jobs"):
        assert re.search(rf"\b{re.escape(needed)}\b", copies), f"{needed} is not copied"
