"""The cluster manifests parse, run commands that exist, ask for GPUs, keep work off the head, keep
Ray's token authentication on, the dashboard inside the cluster and S3 credentials off the head;
and they grant least privilege: the head's AWS role, SSH from one CIDR, a non-root image without
sudo, locked-down pods, and a network policy around the KubeRay cluster."""

from __future__ import annotations

import importlib
import ipaddress
import re
import shlex
from pathlib import Path

import yaml

from pipeline.cli.parser import build_parser
from pipeline.job.load import load_spec

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


def _check_least_privilege(cluster: dict) -> None:
    """Every Ray container non-root, without privilege escalation or capabilities, on a read-only
    root; no pod gets a Kubernetes API token but the autoscaler's container, through its mount."""
    head = cluster["headGroupSpec"]["template"]["spec"]
    pods = [head] + [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    for pod in pods:
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True and context["runAsUser"] != 0
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert context["readOnlyRootFilesystem"] is True
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts and not any("serviceaccount" in m for m in mounts)
    token = {v["name"]: v for v in head["volumes"]}["api-token"]["projected"]["sources"]
    assert any("serviceAccountToken" in source for source in token)
    autoscaler = cluster["autoscalerOptions"]
    assert autoscaler["securityContext"]["allowPrivilegeEscalation"] is False
    assert [m["name"] for m in autoscaler["volumeMounts"]] == ["api-token"]


def test_kuberay_raycluster():
    doc = _load("kuberay/raycluster.yaml")
    assert doc["kind"] == "RayCluster" and doc["spec"]["rayVersion"] == "2.60.0"
    head = doc["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert "nvidia.com/gpu" not in str(head["template"])
    _check_gpu_workers(doc["spec"]["workerGroupSpecs"])
    _check_secured(doc["spec"])
    _check_least_privilege(doc["spec"])


def _policies() -> list[dict]:
    docs = list(yaml.safe_load_all((INFRA / "kuberay/networkpolicy.yaml").read_text()))
    assert docs and all(d["kind"] == "NetworkPolicy" for d in docs)
    # Plain label matches only, so that the check below reads them exactly.
    assert all(set(d["spec"]["podSelector"]) == {"matchLabels"} for d in docs)
    return docs


def _pods(cluster: dict, name: str) -> dict[str, dict[str, str]]:
    """The labels KubeRay gives a head and a worker pod of `cluster` (a RayCluster spec) named
    `name`: those of its template, then its own, which the template cannot change."""

    def labels(kind: str, group: str, template: dict) -> dict[str, str]:
        defaults = {"app.kubernetes.io/name": "kuberay", "ray.io/is-ray-node": "yes"}
        given = template.get("metadata", {}).get("labels", {})
        own = {"ray.io/cluster": name, "ray.io/node-type": kind, "ray.io/group": group}
        return {**defaults, **given, **own}

    worker = cluster["workerGroupSpecs"][0]
    return {
        "head": labels("head", "headgroup", cluster["headGroupSpec"]["template"]),
        "worker": labels("worker", worker["groupName"], worker["template"]),
    }


def _selecting(pod: dict[str, str], kind: str) -> list[dict]:
    """The policies of `kind` (Ingress, Egress) that apply to a pod with these labels."""
    return [
        p["spec"]
        for p in _policies()
        if p["spec"]["podSelector"]["matchLabels"].items() <= pod.items()
        and kind in p["spec"]["policyTypes"]
    ]


def _reaches(rules: list[dict], address: str, port: int = 443) -> bool:
    """Whether egress `rules` let a pod reach `address` (an address outside every pod)."""
    for rule in rules:
        if "to" not in rule:
            return True  # a rule without `to` allows every destination
        if rule.get("ports") and port not in {p["port"] for p in rule["ports"]}:
            continue
        for peer in rule["to"]:
            block = peer.get("ipBlock")
            if block and ipaddress.ip_address(address) in ipaddress.ip_network(block["cidr"]):
                if not any(
                    ipaddress.ip_address(address) in ipaddress.ip_network(e)
                    for e in block.get("except", [])
                ):
                    return True
    return False


METADATA = "169.254.169.254"  # instance metadata: the node's IAM role
# Where the Kubernetes API answers in-cluster: its Service (EKS 10.100.0.1 or 172.20.0.1, kubeadm
# 10.96.0.1) and its endpoints (private addresses).
KUBERNETES_API = ("10.100.0.1", "172.20.0.1", "10.96.0.1", "192.168.0.10", "100.64.0.1")


def _check_network_policies(cluster: dict, name: str, submitter: str | None = None) -> None:
    """In: the cluster's own pods, on any port, and nobody else (for a RayJob also its submitter
    and the KubeRay operator, on the Jobs API's port); out: no pod reaches instance metadata, no
    worker the Kubernetes API, the head reaches it (its autoscaler); DNS and the object store's
    public addresses stay open."""
    pods = _pods(cluster, name)
    for kind, pod in pods.items():
        ingress = [r for p in _selecting(pod, "Ingress") for r in p.get("ingress", [])]
        assert ingress, f"{kind}: no ingress policy"
        for rule in ingress:
            for peer in rule["from"]:
                assert "ipBlock" not in peer
                labels = peer["podSelector"]["matchLabels"]
                if "namespaceSelector" not in peer and all(
                    labels.items() <= p.items() for p in pods.values()
                ):
                    continue  # the cluster's own pods, whatever their kind
                # Anyone else: a RayJob's submitter or the operator, on the head's Jobs API only.
                assert submitter and kind == "head", (kind, peer)
                assert rule["ports"] == [{"port": 8265, "protocol": "TCP"}]
                assert labels in (
                    {"batch.kubernetes.io/job-name": submitter},
                    {"app.kubernetes.io/name": "kuberay-operator"},
                ), labels
        egress = [r for p in _selecting(pod, "Egress") for r in p.get("egress", [])]
        assert egress, f"{kind}: no egress policy, so every destination is open"
        assert not _reaches(egress, METADATA, 80), f"{kind} reaches instance metadata"
        api = [
            _reaches(egress, address, port) for address in KUBERNETES_API for port in (443, 6443)
        ]
        assert all(api) if kind == "head" else not any(api), (kind, api)
        assert _reaches(egress, "52.216.0.1")  # a public S3 address
        dns = [r for r in egress if {"port": 53, "protocol": "UDP"} in r.get("ports", [])]
        assert any(
            peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
            for r in dns
            for peer in r["to"]
        )
        for rule in egress:  # pods: only the cluster's own, and DNS
            for peer in rule["to"]:
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    assert peer["podSelector"]["matchLabels"].items() <= pod.items()


def test_kuberay_network_policies_cover_both_clusters_in_and_out():
    cluster = _load("kuberay/raycluster.yaml")
    _check_network_policies(cluster["spec"], cluster["metadata"]["name"])
    head = _containers(cluster["spec"]["headGroupSpec"]["template"])[0]
    assert {p["containerPort"] for p in head["ports"]} == {6379, 8265, 10001}
    # The RayJob's cluster: KubeRay names it after the RayJob with a random suffix, and its
    # submitter is a Kubernetes Job named after the RayJob.
    job = _load("kuberay/rayjob.yaml")
    name = job["metadata"]["name"]
    _check_network_policies(job["spec"]["rayClusterSpec"], f"{name}-x7k2q", submitter=name)
    _check_network_policies(job["spec"]["rayClusterSpec"], f"{name}-b4mzd", submitter=name)
    # Neither cluster's policies select the other's pods.
    ours = _pods(cluster["spec"], "nst")["worker"]
    theirs = _pods(job["spec"]["rayClusterSpec"], f"{name}-x7k2q")["worker"]
    for policy in _policies():
        selects = policy["spec"]["podSelector"]["matchLabels"].items()
        assert not (selects <= ours.items() and selects <= theirs.items())


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
    _check_least_privilege(cluster)
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
    # The profiles and the security group of access.yaml: given, Ray makes neither its default
    # role (EC2 and S3 full access) nor its default group (SSH from anywhere).
    assert head["node_config"]["IamInstanceProfile"] == {"Name": "nst-head"}
    assert all(t["node_config"]["IamInstanceProfile"] == {"Name": "nst-s3-access"} for t in workers)
    assert all(t["node_config"]["SecurityGroupIds"] for t in types.values())
    assert "0.0.0.0/0" not in yaml.safe_dump(doc)


def _statements(role: dict) -> list[dict]:
    return [s for p in role["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]


def _actions(statement: dict) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else action


def test_aws_access_grants_the_head_only_what_the_autoscaler_needs():
    doc = _load("aws/access.yaml")
    res = doc["Resources"]
    assert res["HeadProfile"]["Properties"]["InstanceProfileName"] == "nst-head"
    assert res["WorkerProfile"]["Properties"]["InstanceProfileName"] == "nst-s3-access"
    head = _statements(res["HeadRole"])
    actions = [a for s in head for a in _actions(s)]
    assert all(s["Effect"] == "Allow" for s in head)
    assert not any(a.startswith("s3:") or a.endswith("*") for a in actions)  # no data, no wildcards
    assert {a.split(":")[0] for a in actions} == {"ec2", "iam"}
    for statement in head:
        names = _actions(statement)
        if any(a in names for a in ("ec2:TerminateInstances", "ec2:StopInstances")):
            # Only instances of this cluster (Ray tags them with its name).
            condition = statement["Condition"]["StringEquals"]
            assert condition == {"ec2:ResourceTag/ray-cluster-name": {"Ref": "ClusterName"}}
        if "iam:PassRole" in names:  # the workers' role, to EC2, and no other
            assert statement["Resource"] == {"Fn::GetAtt": ["WorkerRole", "Arn"]}
        if statement["Resource"] == "*":
            assert all(a.startswith("ec2:Describe") for a in names)
    # The workers: the jobs' bucket only.
    for statement in _statements(res["WorkerRole"]):
        assert all(a.startswith("s3:") and "*" not in a for a in _actions(statement))
        assert "${Bucket}" in statement["Resource"]["Fn::Sub"]
    # SSH from the CIDR the deployer gives (no default), the rest only between the cluster's nodes.
    assert "Default" not in doc["Parameters"]["SshCidr"]
    ingress = res["ClusterSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert ingress == [
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIp": {"Ref": "SshCidr"}}
    ]
    internal = res["ClusterInternalTraffic"]["Properties"]
    assert internal["SourceSecurityGroupId"] == internal["GroupId"]
    assert "0.0.0.0/0" not in yaml.safe_dump(doc)


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
    # It runs as a numeric non-root user (Kubernetes can check runAsNonRoot), without sudo.
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and re.fullmatch(r"[1-9]\d*:\d+", users[-1]), users
    assert "apt-get purge -y sudo" in text.split(f"USER {users[-1]}")[0]


def test_aws_instances_take_imdsv2_only_one_hop_away():
    """Instance metadata hands out credentials only with a session token (IMDSv2), which a
    forwarded request cannot get; one hop reaches the containers, which Ray's cluster launcher
    runs on the host's network."""
    from ray.autoscaler._private.docker import docker_start_cmds

    doc = _load("aws/cluster.yaml")
    for name, node_type in doc["available_node_types"].items():
        options = node_type["node_config"]["MetadataOptions"]
        assert options == {
            "HttpTokens": "required",
            "HttpPutResponseHopLimit": 1,
            "HttpEndpoint": "enabled",
        }, name
    docker = doc["docker"]
    run = docker_start_cmds(
        "ubuntu", docker["image"], {}, docker["container_name"], docker["run_options"],
        doc["cluster_name"], "/home/ray", "docker",
    )  # fmt: skip
    assert "--net=host" in run.split()


def test_aws_head_launches_only_the_clusters_workers():
    """What the head's role (and so whoever runs code on the head) may launch: instances tagged
    for this cluster, of the workers' types, from the cluster's image, with the workers' profile,
    IMDSv2 only; not another head, not any type or image."""
    access, cluster = _load("aws/access.yaml"), _load("aws/cluster.yaml")
    launches = [
        s for s in _statements(access["Resources"]["HeadRole"]) if "ec2:RunInstances" in _actions(s)
    ]
    resources = [
        r
        for s in launches
        for r in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])
    ]
    instances = [s for s in launches if "instance/*" in str(s["Resource"])]
    assert len(instances) == 1
    condition = instances[0]["Condition"]
    assert condition["StringEquals"] == {
        "aws:RequestTag/ray-cluster-name": {"Ref": "ClusterName"},
        "ec2:InstanceType": {"Ref": "WorkerInstanceTypes"},
        "ec2:InstanceProfile": {"Fn::GetAtt": ["WorkerProfile", "Arn"]},
        "ec2:MetadataHttpTokens": "required",
    }
    assert condition["NumericLessThanEquals"] == {"ec2:MetadataHttpPutResponseHopLimit": 1}
    images = [r for r in resources if "image/" in str(r)]
    assert images == [{"Fn::Sub": "arn:${AWS::Partition}:ec2:${AWS::Region}::image/${ImageId}"}]
    parameters = access["Parameters"]
    assert parameters["ImageId"]["Type"] == "AWS::EC2::Image::Id"
    assert "Default" not in parameters["ImageId"]
    # cluster.yaml's workers are what the head may launch; its head is not.
    allowed = parameters["WorkerInstanceTypes"]["Default"].split(",")
    types = cluster["available_node_types"]
    head = types.pop(cluster["head_node_type"])
    assert all(t["node_config"]["InstanceType"] in allowed for t in types.values())
    assert head["node_config"]["InstanceType"] not in allowed
