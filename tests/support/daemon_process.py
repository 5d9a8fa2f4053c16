"""A daemon as a separate process (the null model), and its shared-memory segments from outside."""

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from multiprocessing import shared_memory

from bridge.client import layout

READY = re.compile(r"ready: http://127\.0\.0\.1:(\d+)/v1/\s+OSC udp 127\.0\.0\.1:(\d+)")


def start_daemon(cache_dir, shm_name, *extra, new_session=False):
    env = {**os.environ, "TURBO_BRIDGE_CACHE": str(cache_dir), "PYTHONUNBUFFERED": "1"}
    env.pop("TURBO_BRIDGE_TOKEN", None)
    return subprocess.Popen([sys.executable, "-m", "bridge", "serve", "--model", "null", "--http-port", "0",
                             "--osc-port", "0", "--shm-name", shm_name, "--width", "64", "--height", "64", *extra],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
                            start_new_session=new_session)


class LoggedDaemon:
    """``python -m bridge serve`` on ports of its own choosing, its log in ``log_path``, a UDP socket
    to send OSC with; ``until`` polls a condition while checking that the daemon still runs."""

    def __init__(self, tmp_path, cache_dir, shm_name, *extra, model="null", ready_s=60, http_timeout=10):
        self.log_path = tmp_path / "daemon.log"
        self.http_timeout = http_timeout
        env = {**os.environ, "TURBO_BRIDGE_CACHE": str(cache_dir), "PYTHONUNBUFFERED": "1"}
        env.pop("TURBO_BRIDGE_TOKEN", None)
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bridge", "serve", "--model", model, "--http-port", "0", "--osc-port", "0",
                 "--shm-name", shm_name, "--width", "64", "--height", "64", *extra],
                stdout=subprocess.DEVNULL, stderr=log, env=env)
        deadline = time.monotonic() + ready_s
        while not (match := READY.search(self.log_path.read_text())):
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log_path.read_text()
            time.sleep(0.05)
        self.http, self.osc = int(match.group(1)), int(match.group(2))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}", timeout=self.http_timeout) as response:
            return json.load(response)

    def until(self, predicate, what: str, timeout: float = 20, poll_s: float = 0.02):
        """``predicate()``'s first truthy value, within ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not (value := predicate()):
            assert self.proc.poll() is None, "the daemon exited:\n" + self.log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
            time.sleep(poll_s)
        return value


def wait_ready(proc, timeout=60):
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        if match := READY.search(line):
            return int(match.group(1)), int(match.group(2)), lines
        if not line:
            break
    proc.kill()
    raise AssertionError("daemon not ready:\n" + "".join(lines))


def refused_in_one_line(proc):
    """A daemon that stopped at start with exit 2 and one ERROR line (returned), no traceback."""
    _, err = proc.communicate(timeout=60)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 2, err
    assert len(lines) == 1 and "ERROR" in lines[0] and "Traceback" not in err, err
    return lines[0]


def segment_exists(name):
    try:
        layout.attach_untracked(name).close()
    except FileNotFoundError:
        return False
    return True


def unlink_segment(name):
    if segment_exists(name):
        shm = shared_memory.SharedMemory(name)
        shm.close()
        shm.unlink()
