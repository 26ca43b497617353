"""The cluster manifests parse, run commands that exist, ask for GPUs, keep work off the head."""

from __future__ import annotations

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


def test_kuberay_raycluster():
    doc = _load("kuberay/raycluster.yaml")
    assert doc["kind"] == "RayCluster" and doc["spec"]["rayVersion"] == "2.60.0"
    head = doc["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert "nvidia.com/gpu" not in str(head["template"])
    _check_gpu_workers(doc["spec"]["workerGroupSpecs"])


def test_kuberay_rayjob():
    doc = _load("kuberay/rayjob.yaml")
    assert doc["kind"] == "RayJob" and doc["spec"]["shutdownAfterJobFinishes"] is True
    _check_entrypoint(doc["spec"]["entrypoint"])
    cluster = doc["spec"]["rayClusterSpec"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    _check_gpu_workers(cluster["workerGroupSpecs"])
    yaml.safe_load(doc["spec"]["runtimeEnvYAML"])


def test_aws_cluster_launcher():
    doc = _load("aws/cluster.yaml")
    types = doc["available_node_types"]
    head = types[doc["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    assert any("--num-cpus=0" in c for c in doc["head_start_ray_commands"])
    workers = [t for name, t in types.items() if name != doc["head_node_type"]]
    assert workers and all(t["resources"].get("GPU", 0) >= 1 for t in workers)
    assert doc["provider"]["type"] == "aws"


def test_dockerfile_installs_the_project_and_its_weights():
    text = (INFRA / "Dockerfile").read_text()
    assert "FROM rayproject/ray:2.60.0" in text
    # A regular (non-editable) install: the wheel carries the presets and the mini catalogue.
    assert "pip install --no-cache-dir /tmp/nst-src" in text and "-e " not in text
    assert "NST_CONFIG_DIR" not in text and "load_caffe_state" in text
    assert "ENV NST_CACHE_DIR=" in text  # the dequantized weights are baked into the image
    for path in ("pipeline", "configs", "jobs", "pyproject.toml"):
        assert f"COPY {path}" in text
