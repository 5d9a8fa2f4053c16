"""A daemon as a separate process (the null model), and its shared-memory segments from outside."""

import os
import re
import subprocess
import sys
import time
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
