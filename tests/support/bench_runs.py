"""``turbo-bridge bench`` and ``latency`` as a user runs them: real processes, with their own cache folder."""

import json
import os
import subprocess
import sys


def run(*args, cache_dir, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "TURBO_BRIDGE_CACHE": str(cache_dir)})


def demo_bench(*options, cache_dir, tmp_path, timeout=300) -> tuple[subprocess.CompletedProcess, dict]:
    """``bench --model demo --sizes 64 --vaes full --no-baseline`` and ``options``, which must pass:
    the run, its JSON."""
    figures = tmp_path / "bench.json"
    done = run("bench", "--model", "demo", "--sizes", "64", "--vaes", "full", "--no-baseline", *options,
               "--json", str(figures), cache_dir=cache_dir, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done, json.loads(figures.read_text())
