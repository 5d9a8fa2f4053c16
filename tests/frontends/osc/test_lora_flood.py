"""A flood of OSC ``/bridge/lora`` changes naming unknown LoRAs, against a real daemon process.

Issue 24 items 2 and 3: each datagram started a task and a loader job that rescanned
``--lora-dir``; the backlog drained at 36 a second, memory grew by 390 MB, a valid change sent
afterwards was not applied within 120 s, and SIGTERM waited for the whole backlog. Now one change
per channel waits (the newest), unknown names are refused from the last scan, and the folder is
listed at most once a second: the assertions are on those counters, not on wall time.
"""

import signal
import threading

import pytest

from bridge.client import osc_message
from conftest import unique_shm_name
from daemon_process import LoggedDaemon

FLOOD = 5000


class LoraDaemon(LoggedDaemon):
    """``python -m bridge serve --model demo`` (its demo LoRAs demo-a and demo-b), log in a file."""

    def __init__(self, cache_dir, tmp_path):
        (tmp_path / "loras").mkdir()
        super().__init__(tmp_path, cache_dir, unique_shm_name(), "--lora-dir", str(tmp_path / "loras"),
                         model="demo", ready_s=120, http_timeout=20)

    def send(self, address: str, *args) -> None:
        self.sock.sendto(osc_message(address, *args), ("127.0.0.1", self.osc))

    def flood(self, count: int) -> None:
        for i in range(count):
            self.send("/bridge/lora", f"no-such-lora-{i}", 1.0)

    def rss_kb(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            return int(next(line for line in f if line.startswith("VmRSS")).split()[1])

    def until(self, predicate, what: str, timeout: float = 60):
        return super().until(predicate, what, timeout, poll_s=0.05)


@pytest.fixture
def daemon(cache_dir, tmp_path):
    d = LoraDaemon(cache_dir, tmp_path)
    yield d
    d.sock.close()
    if d.proc.poll() is None:
        d.proc.kill()
        d.proc.wait()


def test_a_flood_of_unknown_loras_stays_bounded_and_a_valid_change_applies_after_it(daemon):
    rss = daemon.rss_kb()
    daemon.flood(FLOOD)
    daemon.send("/bridge/lora", "demo-a", 0.7)
    daemon.until(lambda: daemon.get("/v1/health")["osc"]["datagrams"] == FLOOD + 1, "every datagram received")
    daemon.until(lambda: daemon.get("/v1/params")["loras"] == {"demo-a": 0.7}, "the valid change", timeout=20)
    health = daemon.get("/v1/health")
    osc, loader = health["osc"], health["devices"][0]["lora_loader"]
    # Every datagram was settled: applied, refused, or replaced while it waited by a newer one.
    assert osc["applied"] + osc["rejected"] + osc["superseded"] == FLOOD + 1, osc
    assert osc["applied"] == 1 and osc["waiting"] == 0, osc
    uptime = health["uptime_s"]
    # The folder was listed at most once a second (and once at start), never once per datagram.
    assert loader["scans"] <= uptime + 2, (loader, uptime)
    assert loader["loads"] == 1 and loader["loading"] == 0, loader  # demo-a, once
    assert daemon.rss_kb() - rss < 50_000, (rss, daemon.rss_kb())
    log = daemon.log_path.read_text()
    assert log.count("rejected: loras: unknown LoRA") <= 2, log[-3000:]  # once per sender a minute


def test_sigterm_during_a_flood_exits_promptly(daemon):
    stop = threading.Event()

    def flood():
        i = 0
        while not stop.is_set():
            daemon.send("/bridge/lora", f"no-such-lora-{i}", 1.0)
            i += 1

    sender = threading.Thread(target=flood)
    sender.start()
    try:
        daemon.until(lambda: daemon.get("/v1/health")["osc"]["datagrams"] > 2000, "the flood arriving")
        daemon.proc.send_signal(signal.SIGTERM)
        code = daemon.proc.wait(timeout=20)  # was: no exit within 60 s
    finally:
        stop.set()
        sender.join()
    assert code == 0, daemon.log_path.read_text()[-3000:]
