"""Channels on a real local Ray cluster of two renderer workers (the demo model, on the CPU), behind one
daemon process: spread over the workers, a worker killed mid-stream, a worker hung (SIGSTOP), every
worker lost. One cluster for the module (Ray's start costs seconds); each test begins from a settled
cluster (both workers ready, each with channels, every channel's state rendered).
"""

from __future__ import annotations

import os
import re
import signal
import time

import numpy as np
import pytest

pytest.importorskip("ray", reason="the cluster extra: pip install -e '.[cluster]'")

from conftest import unique_shm_name
from ray_daemons import ClusterDaemon, until

DETECT_S = 5.0  # a lost worker shows in health within this
RESUME_S = 10.0  # and its channels' frames come again within this (from the fault)
REJOIN_S = 180.0  # Ray restarts the worker, which loads and warms the model again (a loaded 2-core machine)
# A size per channel: no two frames share a batch, so a frame rendered again is pixel for pixel the same
# (a batch of N may round one 8-bit level differently from a frame alone on the CPU: docs/architecture.md).
SIZES = {"main": (64, 64), "a": (72, 64), "b": (64, 72)}


@pytest.fixture(scope="module")
def cluster(cache_dir):
    daemon = ClusterDaemon(cache_dir, unique_shm_name(), "--model", "demo", "--cluster", "ray",
                           "--cluster-workers", "2", "--max-channels", "3")
    yield daemon
    assert daemon.stop() == 0


def spread(health: dict) -> bool:
    return health["status"] == "ok" and all(w["state"] == "ready" and w["channels"] for w in health["workers"])


def when(cluster: ClusterDaemon, condition):
    """A health check for ``until``: the health when ``condition(health)`` holds, else None."""
    return lambda: (health if condition(health := cluster.health()) else None)


# The state a moved channel must carry: a LoRA (loaded on its new worker first), an input image.
STATE = {"main": {"seed": 11}, "a": {"seed": 12, "loras": {"demo-a": 0.8}}, "b": {"seed": 13}}
INPUT = np.random.default_rng(7).integers(0, 256, (72, 64, 4), dtype=np.uint8)  # b's, image-to-image


@pytest.fixture
def settled(cluster):
    for name, (width, height) in SIZES.items():
        cluster.patch(name, {"width": width, "height": height, **STATE[name]})
    cluster.put_input("b", INPUT)
    health = until(when(cluster, spread), "both workers ready, each with channels",
                   REJOIN_S, every=0.2)
    for name, channel in health["channels"].items():
        cluster.frame_of(name, channel["version"])
    return cluster


def other(health: dict, worker: dict) -> dict:
    return next(w for w in health["workers"] if w["id"] != worker["id"])


def test_channels_spread_over_the_workers(settled):
    health = settled.health()
    workers = health["workers"]
    assert [w["id"] for w in workers] == ["w0", "w1"]
    assert all(w["state"] == "ready" and w["node"] == "127.0.0.1" and w["device"] == "cpu" for w in workers)
    assert len({w["pid"] for w in workers}) == 2 and os.getpid() not in {w["pid"] for w in workers}
    assert sorted(name for w in workers for name in w["channels"]) == ["a", "b", "main"]
    for worker in workers:  # each channel says where it runs, as the worker lists it
        assert all(health["channels"][name]["worker"] == worker["id"] for name in worker["channels"])
    assert health["cluster"]["started_here"] and health["cluster"]["auth"] == "token"
    assert [d["name"] for d in health["devices"]] == ["w0", "w1"] and health["family"] == "sdxl"
    # Prompt warnings answer on the daemon, from the workers' tokenizer.
    reply = settled.change("main", {"prompt": "a lighthouse on a cliff at dusk, " * 20})
    assert len(reply["warnings"]) == 1 and "CLIP reads 77" in reply["warnings"][0] \
        and "a lighthouse on" in reply["warnings"][0]
    settled.change("main", {"prompt": ""})


def test_killing_a_worker_moves_its_channels_and_frames_resume_with_the_same_pixels(settled):
    health = settled.health()
    victim = next(w for w in health["workers"] if "a" in w["channels"])  # a's LoRA is loaded on the survivor first
    survivor = other(health, victim)
    before = {name: settled.frame_of(name, health["channels"][name]["version"]) for name in victim["channels"]}

    os.kill(victim["pid"], signal.SIGKILL)
    start = time.monotonic()
    until(lambda: all(settled.health()["channels"][name]["worker"] == survivor["id"] for name in before),
          f"{victim['id']}'s channels moved to {survivor['id']}", DETECT_S)
    for name, (seq, version, pixels) in before.items():
        got = settled.frame(name, seq, timeout=max(0.1, start + RESUME_S - time.monotonic()))
        assert got is not None, f"no frame of {name!r} within {RESUME_S:g} s of the kill"
        assert got[1] == version and np.array_equal(got[2], pixels)  # its state, rendered again, the same pixels

    # Ray restarts the worker's actor; warm again, it rejoins and takes channels back.
    health = until(when(settled, spread), f"{victim['id']} back", REJOIN_S, 0.2)
    back = next(w for w in health["workers"] if w["id"] == victim["id"])
    assert back["pid"] != victim["pid"] and back["losses"] == victim["losses"] + 1
    assert re.fullmatch(rf"worker {victim['id']} \(pid {victim['pid']} on node 127\.0\.0\.1\) lost: .+", back["error"])


def test_a_hung_worker_is_detected_and_a_change_sent_to_it_renders_elsewhere(settled):
    health = settled.health()
    victim = next(w for w in health["workers"] if "b" in w["channels"])  # b renders from its input image
    survivor, name = other(health, victim), "b"
    os.kill(victim["pid"], signal.SIGSTOP)
    start = time.monotonic()
    try:
        version = settled.patch(name, {"seed": 4242})  # its frame goes to the hung worker first
        until(lambda: next(w for w in settled.health()["workers"] if w["id"] == victim["id"])["state"] != "ready",
              f"{victim['id']} seen as lost", DETECT_S - (time.monotonic() - start))
        _, got_version, _ = settled.frame_of(name, version, timeout=max(0.1, start + RESUME_S - time.monotonic()))
        assert got_version == version and settled.health()["channels"][name]["worker"] == survivor["id"]
        # The daemon killed the stopped process (it holds a GPU in a real cluster): Ray starts a fresh one.
        health = until(when(settled, spread), f"{victim['id']} back", REJOIN_S, 0.2)
        assert next(w for w in health["workers"] if w["id"] == victim["id"])["pid"] != victim["pid"]
    finally:
        try:
            os.kill(victim["pid"], signal.SIGCONT)
        except ProcessLookupError:
            pass


def test_with_every_worker_lost_health_is_degraded_naming_one_until_the_channels_render_again(settled):
    health = settled.health()
    frames = {name: channel["frames"] for name, channel in health["channels"].items()}
    for worker in health["workers"]:
        os.kill(worker["pid"], signal.SIGKILL)
    start = time.monotonic()
    degraded = until(when(settled, lambda h: h["status"] == "degraded" and h["last_error"]),
                     "health degraded", DETECT_S)
    assert time.monotonic() - start <= DETECT_S
    assert re.match(r"worker w[01] \(pid \d+ on node 127\.0\.0\.1\) lost: ", degraded["last_error"])
    # Until a worker is back and every channel rendered again (nothing of their state lost).
    health = until(when(settled, lambda h: h["status"] == "ok"), "health ok again", REJOIN_S, 0.2)
    assert all(health["channels"][name]["frames"] > frames[name] for name in frames)
    for name, channel in health["channels"].items():  # each shows its current state
        assert settled.frame_of(name, channel["version"])[1] == channel["version"]
