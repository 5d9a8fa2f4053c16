"""Daemons on Ray clusters, as processes: ``serve --cluster ray`` and plain Ray heads to join, on loopback.

Everything here stops by itself: a daemon gets SIGTERM (then SIGKILL past its bound), a head ends
when its standard input closes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import psutil

READY = re.compile(r"ready: http://127\.0\.0\.1:(\d+)/v1/\s+OSC udp 127\.0\.0\.1:(\d+)")
HEAD = """
import os, sys, ray
ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
print("ADDRESS", ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # until the test closes it
ray.shutdown()
"""


def until(check, what: str, timeout: float = 60.0, every: float = 0.05):
    """Poll ``check()`` until it returns something true (returned); fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(every)


def ray_env(**changes) -> dict:
    """This environment without a cluster to join, loopback-bound Ray, plus ``changes`` (None: removed)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(PYTHONUNBUFFERED="1", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


class ClusterDaemon:
    """``python -m bridge serve ... --cluster ray ...`` and a few HTTP calls to it."""

    def __init__(self, cache_dir, shm_name: str, *args: str, env: dict | None = None, timeout: float = 240):
        env = {**(env or ray_env()), "TURBO_BRIDGE_CACHE": str(cache_dir)}
        env.pop("TURBO_BRIDGE_TOKEN", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "bridge", "serve", "--http-port", "0", "--osc-port", "0",
                                      "--shm-name", shm_name, "--width", "64", "--height", "64", "--max-size", "256",
                                      *args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
        self.log: list[str] = []
        deadline, match = time.monotonic() + timeout, None
        while match is None and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            match = READY.search(line)
        if match is None:
            self.kill()
            raise AssertionError("daemon not ready:\n" + "".join(self.log[-40:]))
        self.url = f"http://127.0.0.1:{match.group(1)}"
        self.osc_port = int(match.group(2))
        threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True).start()

    # -- HTTP ---------------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: dict | bytes | None = None, timeout: float = 30, headers=None):
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers=headers or {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.headers, response.read()

    def health(self) -> dict:
        return json.loads(self._call("GET", "/v1/health")[1])

    def change(self, channel: str, body: dict) -> dict:
        """A change to ``channel`` (created if missing); the reply (version, warnings)."""
        return json.loads(self._call("PATCH", f"/v1/channels/{channel}/params", body)[1])

    def patch(self, channel: str, body: dict) -> int:
        return self.change(channel, body)["version"]

    def put_input(self, channel: str, pixels: np.ndarray) -> None:
        """``channel``'s input image (raw RGBA8): its frames become image-to-image."""
        height, width = pixels.shape[:2]
        self._call("PUT", f"/v1/channels/{channel}/input", pixels.tobytes(),
                   headers={"Content-Type": "application/octet-stream", "X-Width": str(width), "X-Height": str(height)})

    def frame(self, channel: str, after: int = -1, timeout: float = 10):
        """The first frame of ``channel`` after seq ``after`` (long-poll): (seq, version, RGBA pixels);
        None if none came."""
        headers, body = self._call("GET", f"/v1/channels/{channel}/frame.rgba?after={after}&timeout={timeout:g}",
                                   timeout=timeout + 10)
        if int(headers["X-Frame-Seq"]) <= after:
            return None
        shape = (int(headers["X-Height"]), int(headers["X-Width"]), 4)
        return (int(headers["X-Frame-Seq"]), int(headers["X-Params-Version"]),
                np.frombuffer(body, np.uint8).reshape(shape))

    def frame_of(self, channel: str, version: int, timeout: float = 30):
        """The first frame of ``channel`` rendered from ``version`` or later."""
        deadline, after = time.monotonic() + timeout, -1
        while time.monotonic() < deadline:
            got = self.frame(channel, after, max(0.1, min(10, deadline - time.monotonic())))
            if got is not None:
                if got[1] >= version:
                    return got
                after = got[0]
        raise AssertionError(f"no frame of {channel!r} at v{version} within {timeout:g} s")

    # -- processes ------------------------------------------------------------------------------
    def processes(self) -> list[psutil.Process]:
        """The daemon and every process under it (a local cluster's Ray processes among them)."""
        me = psutil.Process(self.proc.pid)
        return [me, *me.children(recursive=True)]

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, as an operator stops it; its exit status (SIGKILL and a failure past ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the daemon did not stop within {timeout:g} s of SIGTERM:\n"
                                 + "".join(self.log[-30:])) from None

    def kill(self) -> None:
        for process in reversed(self.processes() if self.proc.poll() is None else []):
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        self.proc.wait()


def alive(processes: list[psutil.Process]) -> list[str]:
    """Those still running (zombies, which a parent will reap, count as gone)."""
    out = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{process.pid} {process.name()}")
        except psutil.NoSuchProcess:
            pass
    return out


def listening(processes: list[psutil.Process]) -> list[str]:
    """Every TCP address these processes listen on (``ip:port``)."""
    out = []
    for process in processes:
        try:
            out += [f"{c.laddr.ip}:{c.laddr.port}" for c in process.net_connections(kind="tcp")
                    if c.status == psutil.CONN_LISTEN]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


class RayHead:
    """A Ray cluster of its own (a head on loopback) to join, with Ray's token authentication on or off."""

    def __init__(self, auth: str = "token"):
        self.proc = subprocess.Popen([sys.executable, "-c", HEAD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env=ray_env(RAY_AUTH_MODE=auth))
        line = self.proc.stdout.readline()  # its address, or nothing when it failed to start
        assert line.startswith("ADDRESS "), f"the Ray head did not start: {line!r}"
        self.address = line.split()[1]

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            for process in reversed([psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(True)]):
                process.kill()
            self.proc.wait()
