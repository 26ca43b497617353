"""The cluster manifests parse, run commands that exist, ask for GPUs, keep work off the head, keep
Ray's token authentication on, the dashboard inside the cluster and S3 credentials off the head."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import yaml

from pipeline.cli import build_parser
from pipeline.jobspec import load_spec

INFRA = Path(__file__).resolve().parents[1] / "infra"
ROOT = INFRA.parent


def _load(name: str) -> dict:
    return yaml.safe_load((INFRA / name).read_text())


def _check_entrypoint(command: str) -> None:
    """`python -m pipeline.cli run SPEC [options]`: the options exist and the spec parses."""
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "pipeline.cli"], argv
    args = build_parser().parse_args(argv[3:])  # exits on an unknown option
    assert args.command == "run"
    load_spec(ROOT / args.job)


def _check_gpu_workers(groups: list[dict]) -> None:
    assert groups
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            limits = container["resources"]["limits"]
            assert int(limits["nvidia.com/gpu"]) >= 1
            assert int(container["resources"]["requests"]["nvidia.com/gpu"]) >= 1
        assert group["maxReplicas"] >= group["minReplicas"]


def _containers(template: dict) -> list[dict]:
    return template["spec"]["containers"]


def _check_secured(cluster: dict) -> None:
    """Token auth on, from a Secret (KubeRay's authOptions); nothing turns it off; the dashboard's
    Service is ClusterIP; S3 credentials on the workers (or IRSA) and never on the head."""
    assert cluster["authOptions"]["mode"] == "token" and cluster["authOptions"]["secretName"]
    assert "disabled" not in yaml.safe_dump(cluster)
    head = cluster["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP" and not head.get("enableIngress")
    assert "nst-s3-credentials" not in str(head["template"])
    assert "AWS_" not in str(_containers(head["template"]))
    for group in cluster["workerGroupSpecs"]:
        for container in _containers(group["template"]):
            assert {"secretRef": {"name": "nst-s3-credentials"}} in container["envFrom"]


def test_kuberay_raycluster():
    doc = _load("kuberay/raycluster.yaml")
    assert doc["kind"] == "RayCluster" and doc["spec"]["rayVersion"] == "2.60.0"
    head = doc["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert "nvidia.com/gpu" not in str(head["template"])
    _check_gpu_workers(doc["spec"]["workerGroupSpecs"])
    _check_secured(doc["spec"])


def test_kuberay_rayjob():
    doc = _load("kuberay/rayjob.yaml")
    assert doc["kind"] == "RayJob" and doc["spec"]["shutdownAfterJobFinishes"] is True
    _check_entrypoint(doc["spec"]["entrypoint"])
    # The driver needs a CPU, which only the workers (with the S3 credentials) have.
    assert doc["spec"]["entrypointNumCpus"] >= 1
    cluster = doc["spec"]["rayClusterSpec"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    _check_gpu_workers(cluster["workerGroupSpecs"])
    _check_secured(cluster)
    assert "RAY_AUTH_MODE" not in yaml.safe_dump(doc)  # KubeRay's authOptions set it


def test_aws_cluster_launcher():
    doc = _load("aws/cluster.yaml")
    types = doc["available_node_types"]
    head = types[doc["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    assert any("--num-cpus=0" in c for c in doc["head_start_ray_commands"])
    workers = [t for name, t in types.items() if name != doc["head_node_type"]]
    assert workers and all(t["resources"].get("GPU", 0) >= 1 for t in workers)
    # Drivers ask for a CPU (`nst submit`): the autoscaler must know that a worker has one.
    assert all(t["resources"].get("CPU", 0) >= 1 for t in workers)
    assert doc["provider"]["type"] == "aws"
    # Token auth on every node, with the token `ray get-auth-token --generate` wrote; the
    # dashboard on the head's loopback (reached through `ray dashboard`); S3 only on workers.
    starts = doc["head_start_ray_commands"] + doc["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token ray start" in c for c in starts if "ray start" in c)
    assert doc["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert "dashboard-host" not in str(starts)
    assert "IamInstanceProfile" not in head["node_config"]
    assert all(t["node_config"]["IamInstanceProfile"] for t in workers)


def test_dockerfile_installs_the_project_and_its_weights():
    text = (INFRA / "Dockerfile").read_text()
    assert "FROM rayproject/ray:2.60.0" in text
    # A regular (non-editable) install: the wheel carries the presets and the mini catalogue.
    assert "pip install --no-cache-dir /tmp/nst-src" in text and "-e " not in text
    assert "NST_CONFIG_DIR" not in text and "load_caffe_state" in text
    assert "ENV NST_CACHE_DIR=" in text  # the dequantized weights are baked into the image
    for path in ("pipeline", "configs", "jobs", "pyproject.toml"):
        assert f"COPY {path}" in text
    # What the image build imports exists: a renamed module would break only the image build.
    imports = re.findall(r"from (pipeline[\w.]*) import (\w+)", text)
    assert imports
    for module, name in imports:
        assert hasattr(importlib.import_module(module), name), f"{module}.{name}"
