"""The Blender extension's link when the daemon is down, silent, or not an address at all.

Real Blender (the ``bpy`` wheel); the main thread must never wait on the network.
"""

from __future__ import annotations

import socket
import time

import pytest

try:
    import bpy
except ImportError as exc:  # not installed (Python other than 3.11), or a shared library missing
    pytest.skip(f"bpy cannot be imported ({exc}); the tests need Blender as a Python module: "
                "pip install bpy==5.0.1 on Python 3.11", allow_module_level=True)

from blender_harness import frame_current, harness, pump, settings  # noqa: E402


# -- daemon down ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_daemon_down_says_so_retries_with_backoff_and_recovers(ext, cache_dir):
    port = free_port()
    settings(f"127.0.0.1:{port}", seed=2)
    bpy.ops.turbo_bridge.connect()
    retries: list[str] = []

    def two_retries() -> bool:
        status = ext.live.current().status
        if "retrying" in status and status not in retries:
            retries.append(status)
        return len(retries) >= 2

    slowest = pump(ext.live, two_retries)
    assert "connection refused" in retries[0] and "retrying in 0.5 s" in retries[0]
    assert "retrying in 1 s" in retries[1]
    assert slowest < 0.5  # the timer never waits on the network

    daemon = harness.start_daemon(cache_dir, http_port=port)  # the daemon comes up: the link finds it
    try:
        pump(ext.live, lambda: frame_current(ext, daemon), timeout=60)
        assert ext.live.current().connected and ext.live.current().transport == "shared memory"
    finally:
        daemon.stop()
    pump(ext.live, lambda: not ext.live.current().connected, timeout=10)
    assert "unreachable" in ext.live.current().status


def test_silent_daemon_never_freezes_the_main_thread(ext):
    """A server that accepts connections and never answers: requests time out on the worker."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        settings(f"127.0.0.1:{silent.getsockname()[1]}")
        bpy.ops.turbo_bridge.connect()
        slowest = pump(ext.live, lambda: "timed out" in ext.live.current().status, timeout=20)
        assert slowest < 0.5 and not ext.live.current().connected

    with socket.socket() as silent:  # a fresh one: the first link's connections fill the other's backlog
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        silent.settimeout(30)
        settings(f"127.0.0.1:{silent.getsockname()[1]}")
        bpy.ops.turbo_bridge.connect()  # a request hangs right now; disconnecting does not wait for it
        session = ext.live.current()
        held, _ = silent.accept()  # the link's request is on the wire (was: a 0.2 s sleep)
        started = time.perf_counter()
        assert bpy.ops.turbo_bridge.disconnect() == {"FINISHED"}
        assert time.perf_counter() - started < 0.5 and ext.live.current() is None
        assert session.link.threads[0].is_alive()  # still in its request: it ends on its own
        held.close()
        session.link.threads[0].join(10)
        assert not session.link.threads[0].is_alive()


def test_bad_address_is_refused_with_a_reason(ext):
    settings("ftp://example.org")
    with pytest.raises(RuntimeError, match="http:// or https://"):
        bpy.ops.turbo_bridge.connect()
    assert ext.live.current() is None
    settings("http://192.0.2.1:8787")  # not this machine; bpy's online access is off in module mode
    assert not bpy.app.online_access
    with pytest.raises(RuntimeError, match="online access is off"):
        bpy.ops.turbo_bridge.connect()
