"""Joining a Ray cluster, or starting a local one, and leaving it; the renderer workers' actors.

Security (see ``bridge.core.cluster``): a local cluster binds loopback only (Ray binds every
interface unless told it is not a cluster: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` before Ray is
imported, checked after start). A joined cluster's address must be loopback or in
``--cluster-allow``; the daemon joins with Ray's token authentication (``RAY_AUTH_MODE=token``,
the token from ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``) and refuses a
cluster outside loopback that answers without a token (``probe_open``). The daemon's ``--token``
never goes to a worker.

Every call here blocks (Ray's own start-up, seconds): the app runs them off the event loop.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..core.cluster import INSTALL_HINT, ClusterSpec, check_joinable, is_loopback, split_address
from ..core.errors import ConfigError
from .pool import Worker
from .worker import CONCURRENCY_GROUPS, Made, RenderWorker

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 20.0
# Asks the cluster's GCS for a key with no token: answered means anyone on its network may drive it.
PROBE = """
import sys
from ray._raylet import GcsClient
try:
    GcsClient(address=sys.argv[1]).internal_kv_get(b"turbo-bridge-probe", None, timeout=5)
except Exception as exc:
    print("closed" if "auth" in (type(exc).__name__ + str(exc)).lower() else f"error {type(exc).__name__}: {exc}")
else:
    print("open")
"""


@dataclass
class Joined:
    """The cluster this daemon is a driver of: where, whether it started it, its GPUs."""

    address: str
    local: bool
    gpus: int
    auth: str  # Ray's authentication mode: token or disabled


def import_ray():
    """Ray, or ``ConfigError`` saying how to install it.

    The first import turns off Ray's failure signal handler for this process (read at import): it
    would take SIGTERM from the daemon's own graceful stop (a stack dump, then an abort). The
    workers keep theirs (the variable is not left for the processes Ray starts).
    """
    ours = "RAY_DISABLE_FAILURE_SIGNAL_HANDLER" not in os.environ
    if ours:
        os.environ["RAY_DISABLE_FAILURE_SIGNAL_HANDLER"] = "1"
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--cluster ray needs Ray: {INSTALL_HINT}") from None
    finally:
        if ours:
            del os.environ["RAY_DISABLE_FAILURE_SIGNAL_HANDLER"]
    return ray


def connect(spec: ClusterSpec) -> Joined:
    """Start a local cluster (``spec.local``) or join ``spec.address``; refuses what the policy refuses."""
    if spec.local:
        # Read by Ray when it is imported: bind its services to loopback, not every interface.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
            log.warning("RAY_AUTH_MODE=%s: the local cluster runs without Ray's token authentication (loopback only)",
                        os.environ["RAY_AUTH_MODE"])
        ray = import_ray()
        cpus = max(os.cpu_count() or 1, spec.workers or 1)
        ray.init(num_cpus=cpus, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=True)
        address = ray.get_runtime_context().gcs_address
        if not is_loopback([split_address(address)[0]]):
            ray.shutdown()
            raise ConfigError(f"the local Ray cluster came up on {address}, not loopback (Ray was imported before "
                              f"the daemon could bind it to loopback): start turbo-bridge in a fresh process")
    else:
        ips = check_joinable(spec.address, spec.allow)  # before any traffic
        mode = os.environ.setdefault("RAY_AUTH_MODE", "token").lower()
        if not is_loopback(ips) and mode != "token":
            raise ConfigError(f"RAY_AUTH_MODE={mode}: joining {spec.address} outside loopback needs Ray's token "
                              f"authentication (RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN or "
                              f"~/.ray/auth_token)")
        answer = probe_open(spec.address)
        if answer == "open":
            if not is_loopback(ips):
                raise ConfigError(f"the Ray cluster at {spec.address} answers without a token (its token "
                                  f"authentication is off): start it with RAY_AUTH_MODE=token (ray start --head ...)")
            log.warning("the Ray cluster at %s answers without a token (RAY_AUTH_MODE=disabled there); allowed on "
                        "loopback only", spec.address)
        elif answer != "closed":
            raise ConfigError(f"cannot reach the Ray cluster at {spec.address}: {answer}")
        ray = import_ray()
        ray.init(address=spec.address, log_to_driver=True)
        address = spec.address
    gpus = int(ray.cluster_resources().get("GPU", 0))
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    joined = Joined(address, spec.local, gpus, "token" if is_token_auth_enabled() else "disabled")
    log.info("Ray cluster %s (%s, %d GPUs, auth %s)", address, "started here" if spec.local else "joined", gpus,
             joined.auth)
    return joined


def probe_open(address: str) -> str:
    """``open`` if the cluster answers a request without a token, ``closed`` if it refuses it, else why not reached.

    In a child process: Ray's authentication mode is per process, and this one joins with a token.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_TOKEN")}
    env["RAY_AUTH_MODE"] = "disabled"
    try:
        done = subprocess.run([sys.executable, "-c", PROBE, address], env=env, capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"no answer in {PROBE_TIMEOUT_S:g} s"
    lines = done.stdout.strip().splitlines()
    return lines[-1] if lines else f"the probe failed: {done.stderr.strip().splitlines()[-1:]}"


def start_workers(joined: Joined, spec: ClusterSpec, make: Callable[[Any], Made], config: Any) -> list[Worker]:
    """One renderer worker per GPU of the cluster (or ``--cluster-workers`` of them), each a restartable actor.

    The workers get the daemon's configuration without its access policy (the daemon's token stays here).
    """
    ray = import_ray()
    count = spec.workers or joined.gpus
    if count < 1:
        raise ConfigError("the Ray cluster has no GPU: name --cluster-workers N to render on its CPUs")
    if joined.gpus and count > joined.gpus:
        raise ConfigError(f"--cluster-workers {count}: the cluster has {joined.gpus} GPUs (one worker each)")
    from ..core.access import Access

    device = "cuda" if joined.gpus else "cpu"
    worker_config = replace(config, device=device, access=Access(), cluster=None)
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)) // count) if not joined.gpus else 1
    actor_class = ray.remote(concurrency_groups=CONCURRENCY_GROUPS, max_restarts=-1, max_task_retries=0)(
        RenderWorker).options(num_gpus=1 if joined.gpus else 0, num_cpus=cpus, scheduling_strategy="SPREAD")
    return [Worker(f"w{i}", actor_class.remote(make, worker_config)) for i in range(count)]


def stop_workers(workers: list[Worker]) -> None:
    """Kill the workers (a call waiting for one of them fails at once)."""
    ray = import_ray()
    for worker in workers:
        try:
            ray.kill(worker.actor, no_restart=True)
        except Exception as exc:  # gone already
            log.debug("worker %s: %s", worker.id, exc)


def disconnect(joined: Joined) -> None:
    """Leave the cluster; one started here stops with all its processes."""
    import_ray().shutdown()
    log.info("left the Ray cluster %s%s", joined.address, " (stopped)" if joined.local else "")
