"""Driving the extension outside Blender's UI: a demo daemon process, the extension installed
into the ``bpy`` module from its zip. Used by the tests, the benchmark and the README render.

Not part of the extension (build.py does not ship it).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@dataclass
class DaemonProcess:
    """``python -m bridge serve`` running in its own process."""

    proc: subprocess.Popen
    url: str
    shm_name: str
    log: list[str] = field(default_factory=list)

    def stop(self) -> None:
        """SIGTERM (the daemon unlinks its segment), then wait."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_daemon(cache_dir: Path | str, size: int = 64, http_port: int = 0, max_size: int = 256,
                 timeout: float = 120, extra: tuple[str, ...] = ()) -> DaemonProcess:
    """Start the daemon with the demo model and wait for its ``ready:`` line."""
    shm_name = f"tb-blender-{uuid.uuid4().hex[:12]}"
    env = {**os.environ, "TURBO_BRIDGE_CACHE": str(cache_dir), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [daemon_python(), "-m", "bridge", "serve", "--model", "demo", "--http-port", str(http_port),
         "--osc-port", "0", "--shm-name", shm_name, "--width", str(size), "--height", str(size),
         "--max-size", str(max(size, max_size)), *extra],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    match = None
    while match is None and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(r"ready: (http://127\.0\.0\.1:\d+)/v1/", line)
    if match is None:
        proc.kill()
        proc.wait()
        raise RuntimeError("the daemon did not start:\n" + "".join(lines))
    # Keep reading its log so a full pipe never stalls it.
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
    return DaemonProcess(proc, match.group(1), shm_name, lines)


def daemon_python() -> str:
    """The interpreter for the daemon's side (torch, diffusers): ``$TURBO_BRIDGE_DAEMON_PYTHON``, else
    this one. A venv made for another bpy version (4.2, 4.5 LTS) holds only what the bpy side needs."""
    return os.environ.get("TURBO_BRIDGE_DAEMON_PYTHON") or sys.executable


def build_zip(out_dir: Path | str) -> Path:
    """The documented build command, run as a user runs it."""
    done = subprocess.run([sys.executable, str(HERE / "build.py"), "--out", str(out_dir)], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return Path(done.stdout.strip())


def install_extension(zip_path: Path | str, repo_dir: Path | str, repo_module: str):
    """Install the zip into a new local repository (as Install from Disk does) and enable it.

    Returns the repository; removing it (``preferences.extensions.repos.remove``) disables the
    add-on. Preferences are not saved, so the user's Blender is left as it was."""
    import bpy

    prefs = bpy.context.preferences
    prefs.use_preferences_save = False
    repo = prefs.extensions.repos.new(name=repo_module, module=repo_module, custom_directory=str(repo_dir))
    result = bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo=repo_module,
                                                      enable_on_install=True)
    if result != {"FINISHED"} or f"bl_ext.{repo_module}.turbo_bridge" not in prefs.addons:
        raise RuntimeError(f"installing {zip_path} failed: {result}")
    return repo


@contextlib.contextmanager
def demo_session(size: int, repo_module: str):
    """A demo daemon (frames of ``size``) and the extension installed from a fresh zip.

    Yields ``(daemon, live)``, ``live`` being the add-on's ``live`` module; afterwards the
    add-on is removed and the daemon stopped. The demo model is cached in
    ``$TURBO_BRIDGE_CACHE`` when set, else in a temporary folder."""
    import bpy

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        daemon = start_daemon(os.environ.get("TURBO_BRIDGE_CACHE") or workdir / "cache", size=size)
        try:
            repo = install_extension(build_zip(workdir), workdir / "extensions", repo_module)
            try:
                yield daemon, sys.modules[f"bl_ext.{repo_module}.turbo_bridge.live"]
            finally:
                bpy.context.preferences.extensions.repos.remove(repo)
        finally:
            daemon.stop()


def leave(code: int = 0) -> None:
    """End a process that registered the add-on. bpy before 5.0 fails at interpreter exit once an
    add-on was registered (4.2.23: a segfault after ``update=`` callbacks; 4.5.15: a hang while an
    operator is registered; both module-mode only, after the work is done): flush and leave
    without the interpreter's teardown there. On 5.0 and later, a normal exit."""
    if exit_crashes():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def exit_crashes() -> bool:
    """True for the bpy versions whose interpreter exit fails after an add-on ran (before 5.0)."""
    import bpy

    return bpy.app.version < (5, 0, 0)


def pump(live, until, timeout: float = 30.0, pause: float = 0.005) -> float:
    """Call the timer function as Blender's main loop would until ``until()``; returns the slowest call (s)."""
    slowest = 0.0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        started = time.perf_counter()
        live.drain()
        slowest = max(slowest, time.perf_counter() - started)
        if until():
            return slowest
        time.sleep(pause)
    session = live.current()
    raise TimeoutError(f"timed out after {timeout} s; status: {session.status if session else 'no session'}")
