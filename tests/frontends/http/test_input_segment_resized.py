"""A client truncates (or resizes in place) the segment it attached as an input, control or style image.

Issue 24 item 1: the daemon mapped the client's segment, so a truncation made its next read a
SIGBUS, and it died within 2 s on all three routes. Here a second process owns the segment and
truncates it under a real daemon process (demo model, a ControlNet and an IP-Adapter): the daemon
keeps serving, reports the size change once (the route's ``shm_error``, ``last_error``), and takes
frames again once the client gives the segment a size its header fits.
"""

import json
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import unique_shm_name

DAEMON_ARGS = ("--controlnet", "depth=demo", "--ip-adapter", "demo")

OWNER = r"""
import os, sys
import numpy as np
from bridge.client import ShmInputWriter, layout

name = sys.argv[1]
writer = ShmInputWriter(name, 64, 64)
writer.write(np.full((32, 32, 4), 7, np.uint8))
print("ready", flush=True)
fd = os.open("/dev/shm/" + name, os.O_RDWR)
for line in sys.stdin:
    word, *args = line.split()
    if word == "truncate":  # the writer's own mapping is never touched again: it would fault here
        os.ftruncate(fd, int(args[0]))
    elif word == "resize":  # a new geometry in place, a frame of it published
        side = int(args[0])
        geometry = layout.Geometry(3, side, side)
        os.ftruncate(fd, geometry.total_bytes)
        segment = layout.Segment(name)
        layout.write_geometry(segment.buf, geometry)
        meta = layout.Meta(0, side, side, side * 4, 1, 0, 0, 0.0)
        layout.publish(segment.buf, geometry, 0, meta, np.full((side, side, 4), 9, np.uint8))
        segment.close()
    print("done", flush=True)
layout.Segment.unlink_name(name)
"""


def call(daemon, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(daemon.url + path, data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def until(daemon, predicate, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        assert daemon.proc.poll() is None, f"the daemon died ({daemon.proc.returncode}) waiting for {what}:\n" \
                                           + "".join(daemon.log[-20:])
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)


@pytest.fixture
def owner():
    """A second process that creates the segment, then truncates or resizes it when told."""
    name = unique_shm_name()
    proc = subprocess.Popen([sys.executable, "-c", OWNER, name], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "ready"

    def tell(command: str) -> None:
        proc.stdin.write(command + "\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "done"

    yield name, tell
    proc.stdin.close()
    proc.wait(10)


@pytest.mark.parametrize("route", ["/v1/input", "/v1/control/depth", "/v1/style"])
def test_a_segment_truncated_by_its_client_is_reported_and_attached_again_at_its_new_size(demo_daemon, owner, route):
    name, tell = owner
    assert call(demo_daemon, "PUT", route, {"shm": name})["shm"] == name
    reads = until(demo_daemon, lambda: call(demo_daemon, "GET", route)["shm_reads"], "the first frame read")

    tell("truncate 0")
    state = until(demo_daemon, lambda: (s := call(demo_daemon, "GET", route))["shm_error"] and s, "the error")
    # the size change, or (polled again meanwhile) why the truncated segment cannot be read
    assert name in state["shm_error"] and ("changed size" in state["shm_error"] or "too small" in state["shm_error"])
    health = call(demo_daemon, "GET", "/v1/health")
    assert name in health["last_error"] and "changed size" in health["last_error"], health
    time.sleep(0.5)  # polled while truncated (at most every second): still alive, one report
    errors = call(demo_daemon, "GET", route)["shm_errors"]
    assert errors <= 10, errors  # backed off, not a spin

    tell("resize 96")  # the client's new resolution, in place
    state = until(demo_daemon, lambda: (s := call(demo_daemon, "GET", route))["shm_reads"] > reads
                  and s["shm_error"] is None and s, "frames from the resized segment")
    assert state["shm"] == name
    logged = "".join(demo_daemon.log)
    assert logged.count(f"segment {name!r} changed size from 49280 to 0 bytes") == 1, logged[-2000:]
    assert "attached again at its new size (96x96 max)" in logged

    tell("truncate 100")  # shorter than a header, then detached by the user: nothing is left polling
    until(demo_daemon, lambda: call(demo_daemon, "GET", route)["shm_error"], "the second error")
    call(demo_daemon, "DELETE", route)
    assert call(demo_daemon, "GET", route)["shm"] is None
    assert call(demo_daemon, "GET", "/v1/health")["frames"] > 0
