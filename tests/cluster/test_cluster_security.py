"""Who a daemon joins and how it leaves: a local cluster on loopback only that stops with the daemon,
clusters joined on loopback with Ray's token authentication (and a cluster without it seen as such),
and addresses outside loopback refused before anything is sent to them.

Real Ray processes, the null model (no torch in the workers: the Ray parts are what is tested here).
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys

import pytest

pytest.importorskip("ray", reason="the cluster extra: pip install -e '.[cluster]'")

from bridge.cluster.ray_cluster import probe_open
from conftest import unique_shm_name
from ray_daemons import ClusterDaemon, RayHead, alive, listening, ray_env, until


def serve(*args, env=None, timeout=60) -> subprocess.CompletedProcess:
    """``serve`` that is expected to refuse at start: its exit status and log."""
    return subprocess.run([sys.executable, "-m", "bridge", "serve", "--model", "null", "--http-port", "0",
                           "--osc-port", "0", "--shm-name", unique_shm_name(), *args],
                          env=env or ray_env(), capture_output=True, text=True, timeout=timeout)


def test_a_local_cluster_listens_on_loopback_only_and_stops_with_the_daemon(cache_dir):
    daemon = ClusterDaemon(cache_dir, unique_shm_name(), "--model", "null", "--cluster", "ray",
                           "--cluster-workers", "2")
    try:
        daemon.patch("a", {"seed": 3})
        daemon.frame_of("a", 2)
        processes = daemon.processes()
        names = " ".join(p.name() for p in processes)
        assert "raylet" in names and "gcs_server" in names and names.count("RenderWorker") == 2
        addresses = listening(processes)
        assert addresses and all(ipaddress.ip_address(a.rsplit(":", 1)[0].removeprefix("::ffff:")).is_loopback
                                 for a in addresses), addresses
        health = daemon.health()
        assert health["cluster"]["address"].startswith("127.0.0.1:") and health["cluster"]["auth"] == "token"
    finally:
        status = daemon.stop(timeout=60)
    assert status == 0, "".join(daemon.log[-20:])
    # Every Ray process it started is gone with it (workers were running when it stopped).
    assert until(lambda: not alive(processes), "the daemon's Ray processes to end", 15, 0.2)


@pytest.fixture(scope="module")
def token_head():
    head = RayHead("token")
    yield head
    head.close()


def test_the_probe_tells_a_cluster_that_answers_without_a_token(token_head):
    open_head = RayHead("disabled")
    try:
        assert probe_open(open_head.address) == "open"
    finally:
        open_head.close()
    assert probe_open(token_head.address) == "closed"


def test_a_daemon_joins_a_cluster_with_its_token_and_leaves_it_running(cache_dir, token_head):
    daemon = ClusterDaemon(cache_dir, unique_shm_name(), "--cluster", "ray", "--model", "null",
                           "--cluster-address", token_head.address, "--cluster-workers", "1",
                           env=ray_env(RAY_AUTH_MODE=None))  # the daemon turns token mode on when joining
    try:
        health = daemon.health()
        assert health["cluster"] == {"kind": "ray", "address": token_head.address, "started_here": False,
                                     "auth": "token", "gpus": 0}
        assert [w["state"] for w in health["workers"]] == ["ready"]
        daemon.patch("main", {"seed": 9})
        daemon.frame_of("main", 2)
    finally:
        assert daemon.stop() == 0
    assert token_head.proc.poll() is None  # the joined cluster runs on
    assert "left the Ray cluster" in "".join(daemon.log) and "(stopped)" not in "".join(daemon.log)


@pytest.mark.parametrize("args, env, said", [
    (("--cluster-address", "10.255.0.1:6379"), {},
     "cluster address '10.255.0.1:6379' (10.255.0.1) is outside loopback"),
    (("--cluster-address", "10.255.0.1:6379", "--cluster-allow", "10.255.0.0/16"), {"RAY_AUTH_MODE": "disabled"},
     "RAY_AUTH_MODE=disabled: joining 10.255.0.1:6379 outside loopback needs Ray's token authentication"),
    ((), {"RAY_ADDRESS": "192.168.77.5:6379"}, "(192.168.77.5) is outside loopback"),
    (("--cluster-address", "ray://127.0.0.1:10001"), {}, "a cluster address is HOST:PORT of its head"),
    ((), {}, "--cluster ray needs a cluster to join"),
    (("--cluster-workers", "2", "--device", "cpu"), {}, "--device places channels on this host's GPUs"),
])
def test_what_is_refused_at_start_in_one_line_before_anything_is_sent(args, env, said):
    done = serve("--cluster", "ray", *args, env=ray_env(**env), timeout=60)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and said in lines[-1] and "Traceback" not in done.stderr, done.stderr
    assert "Ray cluster" not in done.stderr  # refused before Ray was started or joined


def test_cluster_options_go_with_cluster_ray():
    done = serve("--cluster-workers", "2")
    assert done.returncode == 2 and "go with --cluster ray" in done.stderr.strip().splitlines()[-1]
