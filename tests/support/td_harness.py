"""Shared by the TouchDesigner tests: a real demo daemon, the stand-in TD with the network the
setup script builds, and helpers that run TD frames until a condition holds.

TouchDesigner has no Linux build, so ``td_standin`` plays TD; the daemon is a real
``python -m bridge serve`` process: frames cross real shared memory, control and feedback cross
real UDP, remote frames real HTTP. The fixtures (``demo_daemon``, ``td``, ``net``) are in
conftest.py; these are the helpers the test modules share.
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import numpy as np

PLUGIN_DIR = Path(__file__).resolve().parents[2] / "plugins" / "touchdesigner"
SETUP_SCRIPT = (PLUGIN_DIR / "setup_network.py").read_text()
if str(PLUGIN_DIR) not in sys.path:
    sys.path.insert(0, str(PLUGIN_DIR))
from turbo_bridge_td import session as tb_session  # noqa: E402

CHEAP = {"steps": 1, "guidance": 0.0, "width": 64, "height": 64}  # ~15 ms a frame on CPU


def idle(daemon, timeout: float = 120.0) -> None:
    """Cheap params, their frame rendered: an idle daemon for the next test."""
    daemon.client.frame_of_version(daemon.client.patch(CHEAP)["version"], timeout)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_until(td, predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        td.run_frame()
        value = predicate()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError(f"{what} not met within {timeout} s")


def status(comp, key: str) -> str | None:
    cell = comp.op("status")[key, 1]
    return None if cell is None else cell.val


def shown_frame(top) -> np.ndarray:
    """The TOP's image as TouchDesigner holds it (rows bottom-first), back to uint8."""
    return np.round(top.numpyArray() * 255).astype(np.uint8)


def changes_sent(out) -> list[bytes]:
    """What the OSC Out DAT sent, less the periodic /bridge/subscribe."""
    return [d for d in out.sent if not d.startswith(b"/bridge/subscribe")]


def shown_seq(comp, version: int | None = None) -> int:
    """The seq of the frame the TOP shows once it is the newest taken (of ``version``), else 0."""
    latest = tb_session.session_for(comp).latest
    copied = status(comp, "copied seq")
    if latest is None or copied is None or int(copied) != latest.seq:
        return 0
    return latest.seq if version is None or latest.version == version else 0


def wait_for_version(td, daemon, version: int) -> dict:
    return run_until(td, lambda: (p := daemon.client.params())["version"] >= version and p,
                     what=f"params version {version}")
