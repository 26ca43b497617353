"""Real multi-node Ray clusters on one machine, for the tests and benchmarks: a head and worker
nodes, each its own `ray start --block` process group with free ports (never Ray's defaults, so
that another Ray on the machine is no obstacle), its own temp dir, and token authentication, the
token in this cluster's own HOME. Killing a node's process group is a lost node (a preempted
spot instance); adding one is an autoscaler's new node."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def user_env(home: Path, **changes: str) -> dict[str, str]:
    """A user's environment: HOME (where Ray keeps ~/.ray/auth_token) in the test's folder, no
    RAY_AUTH_* or address set, the project's interpreter first on PATH (as in a cluster image),
    and this checkout's package first on the path: the commands run from other folders, where
    the interpreter would find whichever checkout is installed."""
    drop = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")
    env = {k: v for k, v in os.environ.items() if k not in drop and k != "RAY_API_SERVER_ADDRESS"}
    path = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return {
        **env,
        "HOME": str(home),
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "PYTHONPATH": path,
        **changes,
    }


def generate_token(home: Path) -> str:
    """`ray get-auth-token --generate` as a user runs it: the token in `home`/.ray/auth_token."""
    subprocess.run(
        [str(BIN / "ray"), "get-auth-token", "--generate"],
        env=user_env(home),
        check=True,
        capture_output=True,
        timeout=60,
    )
    return (home / ".ray" / "auth_token").read_text().strip()


# Every server of a node, each on a free port: Ray's fixed defaults (the job agent's 52365, the
# client server's 10001, ...) may be held by another Ray on the machine.
SERVERS = (
    "node-manager-port",
    "object-manager-port",
    "ray-client-server-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
    "metrics-export-port",
)
WORKER_PORTS = 64  # per node: its worker processes' range


def _held(port: int) -> socket.socket | None:
    """A socket bound to `port` on 127.0.0.1 (port 0: any free one), or None if it is taken."""
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        return None
    return s


# Every port handed out in this process: a node binds its workers' ports only when it starts a
# worker, so another node started later must not be given them.
GIVEN: set[int] = set()


def node_ports(extra: int = 0, taken: set[int] = GIVEN) -> tuple[list[str], list[int]]:
    """`ray start` flags that give every server of a node its own free port and its workers a free
    range, and `extra` more ports for the caller (a head's GCS and dashboard). All of them are
    different from each other and from `taken` (the ports given to other nodes, which may not be
    bound yet), which this extends. Ports are held open while they are chosen: asked one by one,
    the kernel may hand out the same free port twice."""
    held: list[socket.socket] = []
    try:
        for _ in range(100):  # the workers' range: WORKER_PORTS consecutive free ports
            probe = _held(0)
            assert probe is not None
            first = probe.getsockname()[1]
            probe.close()
            span = range(first, first + WORKER_PORTS)
            if span[-1] > 65535 or taken.intersection(span):
                continue
            block = [_held(port) for port in span]
            held += [s for s in block if s]
            if all(block):
                break
        else:
            raise RuntimeError("no free range of ports for the workers")
        ports: list[int] = []
        while len(ports) < len(SERVERS) + extra:
            s = _held(0)
            assert s is not None
            held.append(s)
            port = s.getsockname()[1]
            if port not in taken:
                ports.append(port)
    finally:
        for s in held:
            s.close()
    taken.update(span, ports)
    flags = [
        *(f"--{server}={port}" for server, port in zip(SERVERS, ports, strict=False)),
        f"--min-worker-port={span[0]}",
        f"--max-worker-port={span[-1]}",
    ]
    return flags, ports[len(SERVERS) :]


class LocalCluster:
    """A head and named worker nodes. `client_env()` is what a client of this cluster sets."""

    def __init__(self, root: Path, head_cpus: int = 0):
        self.root = root
        self.home = root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.nodes: dict[str, subprocess.Popen] = {}
        self.temps: dict[str, Path] = {}  # node name -> its temp dir
        self.token = generate_token(self.home)
        flags, (self.port, dashboard) = node_ports(2)
        self.address = f"127.0.0.1:{self.port}"
        head = ["--head", f"--port={self.port}", "--include-dashboard=true"]
        head += ["--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}"]
        self._start("nst_head", head_cpus, head + flags)

    def client_env(self, **changes: str) -> dict[str, str]:
        """A client's (and a joining node's) environment: token mode and this cluster's token,
        as `ray start --head` alone turns it on; Ray's metrics exported every second (a run on a
        cluster waits one export interval at its end: pipeline/fanout/metrics.py, `settle`)."""
        return user_env(
            self.home,
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=self.token,
            RAY_metrics_report_interval_ms="1000",
            **changes,
        )

    def add_node(self, name: str, cpus: int = 1) -> None:
        """A worker node joins, carrying the custom resource `name` (to find it by; it starts
        with `nst_`)."""
        flags, _ = node_ports()
        self._start(name, cpus, [f"--address={self.address}", *flags])

    def _start(self, name: str, cpus: int, args: list[str], tries: int = 2) -> None:
        """Starts a node and waits until `ray start` says it runs. On a loaded 2-core machine a
        node's start times out now and then ("timed out during startup"): tried again once."""
        for attempt in range(tries):
            log_path = self.root / f"{name}.log"
            start = log_path.stat().st_size if log_path.exists() else 0
            self._spawn(name, cpus, args)
            deadline = time.time() + 120
            while time.time() < deadline:
                text = log_path.read_text()[start:]
                if "Ray runtime started" in text:
                    return
                if self.nodes[name].poll() is not None:
                    break
                time.sleep(0.5)
            self.nodes.pop(name).kill()
            if attempt == tries - 1:
                raise AssertionError(f"{name} did not start:\n{log_path.read_text()[-3000:]}")

    def _spawn(self, name: str, cpus: int, args: list[str]) -> None:
        # Short: a node's Unix sockets live below it, and their paths may not exceed 107 bytes.
        temp = Path(tempfile.mkdtemp(prefix=f"nst-{name}-", dir="/tmp"))
        self.temps[name] = temp
        cmd = [
            str(BIN / "ray"),
            "start",
            "--block",
            *args,
            f"--num-cpus={cpus}",
            "--num-gpus=0",
            f"--resources={json.dumps({name: 1})}",
            f"--temp-dir={temp}",
            "--object-store-memory=200000000",
            "--disable-usage-stats",
        ]
        log = (self.root / f"{name}.log").open("a")
        env = self.client_env()  # a worker needs token mode too, not only --head
        self.nodes[name] = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_alive(self, names: list[str], timeout: float = 120) -> None:
        """Until exactly the named nodes are alive in the cluster (asked by a client process)."""
        code = (
            "import sys, time, ray\n"
            "ray.init(address=sys.argv[1], logging_level='WARNING')\n"
            "want, deadline = set(sys.argv[2].split(',')), time.time() + float(sys.argv[3])\n"
            "while time.time() < deadline:\n"
            "    alive = {k for n in ray.nodes() if n['Alive'] for k in n['Resources']\n"
            "             if k.startswith('nst_')}\n"
            "    if alive == want:\n"
            "        sys.exit(0)\n"
            "    time.sleep(0.5)\n"
            "sys.exit(f'alive: {sorted(alive)}, wanted {sorted(want)}')\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code, self.address, ",".join(names), str(timeout)],
            env=self.client_env(),
            capture_output=True,
            text=True,
            timeout=timeout + 60,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]

    def run_job(self, spec: dict, on: str = "nst_a", **options: Any) -> JobProcess:
        """`run_plan` of `spec` in a driver process on node `on` (as `nst submit` puts a driver
        on a worker node), as `nst run --address` runs it."""
        return JobProcess(self, spec, options, self.temps[on])

    def kill_node(self, name: str) -> None:
        """The node is lost: its raylet and workers SIGKILLed at once, as a preempted VM."""
        proc = self.nodes.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        for name in [n for n in self.nodes if n != "nst_head"] + ["nst_head"]:
            proc = self.nodes.pop(name, None)
            if proc is None:
                continue
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for temp in self.temps.values():
            shutil.rmtree(temp, ignore_errors=True)


# The driver: runs the job with the cluster's token in its own process (Ray keeps one connection,
# and its token, per process) and prints, per row, the name of the node whose actor computed it
# (a node's name is its custom resource), then the summary with node names for ids.
DRIVER = """
import dataclasses, json, sys
import ray
from ray.util.state import get_actor
from pipeline.job.load import parse_spec
from pipeline.job.plan import make_plan
from pipeline.fanout.runner import run_plan
from pipeline.job.options import RunOptions

spec, options = json.loads(sys.argv[1]), json.loads(sys.argv[2])
# On the node whose temp dir is given: of several nodes on one machine Ray picks the head.
ray.init(address=options["address"], _temp_dir=sys.argv[3], logging_level="WARNING")
names, actors = {}, {}

def name(node_id):
    if node_id not in names:
        for n in ray.nodes():
            names.update({n["NodeID"]: k for k in n["Resources"] if k.startswith("nst_")})
    return names.get(node_id, node_id)

def on_row(row, summary):
    actor = row["actor_id"]
    if actor not in actors:
        actors[actor] = name(get_actor(actor).node_id)
    print("row", row["status"], actors[actor], flush=True)

summary = run_plan(make_plan(parse_spec(spec)), RunOptions(**options), on_row=on_row)
out = dataclasses.asdict(summary)
out["actors"] = {name(n): k for n, k in summary.actors.items()}
print("summary", json.dumps(out), flush=True)
"""


class JobProcess:
    """A job's driver process: `rows()` yields the node name of each row as it comes."""

    def __init__(self, cluster: LocalCluster, spec: dict, options: dict[str, Any], temp: Path):
        options = {"address": cluster.address, **options}
        self.log = (cluster.root / f"driver-{spec['name']}.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", DRIVER, json.dumps(spec), json.dumps(options), str(temp)],
            # RAY_ADDRESS: which cluster the state API (where an actor ran) asks.
            env=cluster.client_env(RAY_ADDRESS=cluster.address),
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        self.summary: dict[str, Any] = {}

    def rows(self) -> Iterator[tuple[str, str]]:
        """(status, node name) of each row, as the driver receives it."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            kind, _, rest = line.strip().partition(" ")
            if kind == "row":
                status, _, node = rest.partition(" ")
                yield status, node
            elif kind == "summary":
                self.summary = json.loads(rest)

    def finish(self, timeout: float = 300) -> dict[str, Any]:
        """Reads what is left; the summary (the driver must exit 0)."""
        for _ in self.rows():
            pass
        code = self.proc.wait(timeout=timeout)
        self.log.close()
        assert code == 0, Path(self.log.name).read_text()[-5000:]
        return self.summary
