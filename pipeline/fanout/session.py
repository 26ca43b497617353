"""Joining a Ray cluster or starting a local Ray for this process, with the cluster's token."""

from __future__ import annotations

import logging
import os

# Ray reads this when it is imported: "0" (what macOS and Windows get by default) makes a node it
# starts take 127.0.0.1 as its address, so that its GCS, raylet, agents and metrics ports listen
# on loopback only. A driver that joins a cluster must not set it: the other nodes could not
# reach it.
LOCAL_RAY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def local_ray_on_loopback(address: str | None) -> None:
    """Before Ray is imported: the throwaway Ray this process starts when it joins none (no
    `address`, no $RAY_ADDRESS) listens on 127.0.0.1 only."""
    if not joins_cluster(address):
        os.environ.setdefault(LOCAL_RAY_ENV, "0")


def joins_cluster(address: str | None) -> str | None:
    """The cluster a run joins (`address`, else $RAY_ADDRESS); None: it starts a local Ray."""
    return address or os.environ.get("RAY_ADDRESS") or None


def ensure_ray(address: str | None) -> None:
    """Connect this process to Ray once: join `address` (or $RAY_ADDRESS) with the user's token,
    else start a local Ray."""
    import ray

    from .submit import SubmitError, auth_advice, private_token_file, use_given_token

    if ray.is_initialized():
        return
    joining = joins_cluster(address)
    token_sent = use_given_token() if joining else False
    if not joining:
        # Ray's own default authentication (Ray 2.60: token, in ~/.ray/auth_token), with the
        # token file private; RAY_AUTH_MODE=disabled (the user's choice) needs none.
        private_token_file(create=os.environ.get("RAY_AUTH_MODE", "token").lower() == "token")
    try:
        ray.init(
            # "local": a Ray of this process's own. Without an address ray.init() would join the
            # cluster that Ray's pointer file in the shared temp folder names (the last `ray
            # start` on this machine, any user's), run this process's work there and unpickle
            # its results here.
            address=joining or "local",
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=True,
        )
    except ConnectionError as exc:
        if not joining:
            raise
        # A cluster that refuses the token looks to ray.init() like one that does not answer: it
        # retries for 20 s and raises ConnectionError (Ray 2.60).
        raise SubmitError(
            joining,
            f"cannot join this Ray cluster ({exc}); if it uses token "
            f"authentication, {auth_advice(token_sent)}",
        ) from None
    if joining:
        _refuse_a_node_without_cpus(joining)


def _refuse_a_node_without_cpus(cluster: str) -> None:
    """A driver stops on a node without CPUs: such a node (the heads of infra/) is meant to run no
    work and holds no object-store access. Ray's Jobs API puts a job's driver on the head when the
    job asks for no CPU, its default; `nst submit` asks for one."""
    import ray

    from .submit import SubmitError

    here = ray.get_runtime_context().get_node_id()
    node = next((n for n in ray.nodes() if n["NodeID"] == here), None)
    if node is not None and not node["Resources"].get("CPU"):
        ray.shutdown()
        raise SubmitError(
            cluster,
            "this driver runs on a node without CPUs (the head, which runs no work): submit "
            "with `nst submit`, which asks for a CPU, or give the job entrypoint_num_cpus=1",
        )
