"""What issue 12's probe sent over OSC, sent again to a real daemon process over loopback UDP.

The daemon runs as its own process (``--model null``), so a datagram that hangs its event loop
fails these tests by their deadlines instead of hanging the suite. After each kind: HTTP health
answers, a later valid OSC change applies, the datagrams were counted, and the log stayed small.
"""

import json
import socket
import subprocess
import time
import urllib.request

import pytest

from bridge.client import osc_bundle, osc_message, parse_osc_message
from bridge.frontends.osc.subscriptions import PER_HOST
from conftest import unique_shm_name
from daemon_process import LoggedDaemon
from test_osc_wire import FREEZER, nested

BUNDLE_HEAD = b"#bundle\x00" + b"\x00" * 7 + b"\x01"
COPIES = 200  # of each hostile datagram
MAX_LOG_BYTES_PER_KIND = 2000  # one line per kind and sender per minute, truncated


class Daemon(LoggedDaemon):
    def __init__(self, tmp_path):
        super().__init__(tmp_path, tmp_path, unique_shm_name())

    def send(self, data: bytes, sock: socket.socket | None = None) -> None:
        (sock or self.sock).sendto(data, ("127.0.0.1", self.osc))

    def stop(self) -> None:
        self.sock.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("the daemon ignored SIGTERM") from None


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("hostile"))
    yield d
    d.stop()


def keeps_serving(daemon: Daemon, seed: int) -> None:
    """Health answers over HTTP and a later valid OSC change applies."""
    assert daemon.get("/v1/health")["status"] == "ok"
    daemon.send(osc_message("/bridge/seed", seed))
    daemon.until(lambda: daemon.get("/v1/params")["seed"] == seed, "a valid change after the attack")


HOSTILE = {
    "negative element size (python-osc 1.10.2 loops forever)": (FREEZER, "malformed"),
    "400 nested bundles (RecursionError in python-osc)": (nested(400), "malformed"),
    "60 KB of unknown type tags (a warning a character in python-osc)":
        (b"/bridge/seed\x00\x00\x00\x00" + (b"," + b"x" * 60000).ljust(60004, b"\x00"), "malformed"),
    "element size past the end": (BUNDLE_HEAD + b"\x00\x01\x00\x00" + osc_message("/bridge/seed", 1), "malformed"),
    "element size not a multiple of 4": (BUNDLE_HEAD + b"\x00\x00\x00\x06" + osc_message("/a"), "malformed"),
    "blob of size -4": (b"/bridge/prompt\x00\x00,b\x00\x00\xff\xff\xff\xfc", "malformed"),
    "unknown address of 60,000 characters": (osc_message("/bridge/" + "x" * 60000, 1), "unknown"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_datagrams_are_counted_logged_once_and_the_daemon_keeps_serving(daemon, name):
    data, counter = HOSTILE[name]
    before = daemon.get("/v1/health")["osc"][counter]
    log_before = daemon.log_path.stat().st_size
    for sent in range(20, COPIES + 1, 20):  # in steps, so 60 KB datagrams never overflow the socket buffer
        for _ in range(20):
            daemon.send(data)
        daemon.until(lambda: daemon.get("/v1/health")["osc"][counter] >= before + sent, f"{sent} {counter}")
    keeps_serving(daemon, seed=1000 + list(HOSTILE).index(name))
    logged = daemon.log_path.read_text()[log_before:]
    assert daemon.log_path.stat().st_size - log_before < MAX_LOG_BYTES_PER_KIND, logged
    assert "Traceback" not in logged and "Unhandled parameter type" not in logged


def test_one_sender_cannot_turn_a_message_into_64_feedback_datagrams(daemon):
    noisy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    targets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(64)]
    real_listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for target in targets + [real_listener]:
            target.bind(("127.0.0.1", 0))
            target.setblocking(False)
        ports = [t.getsockname()[1] for t in targets]
        before = daemon.get("/v1/health")["osc"]
        for port in ports:  # one sender names 64 ports it does not own
            daemon.send(osc_message("/bridge/subscribe", port), noisy)
        daemon.until(lambda: daemon.get("/v1/health")["osc"]["rejected"] >= before["rejected"] + 60, "60 refusals")
        assert daemon.get("/v1/health")["osc"]["subscribers"] == before["subscribers"] + 4
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as real:  # a real subscriber still gets in
            daemon.send(osc_message("/bridge/subscribe", real_listener.getsockname()[1]), real)
            daemon.until(lambda: daemon.get("/v1/health")["osc"]["subscribers"] == before["subscribers"] + 5,
                         "the real subscriber")
        real_listener.setblocking(True)
        real_listener.settimeout(10)
        daemon.send(osc_message("/bridge/seed", 4242))
        while True:  # the real subscriber gets the new frame
            address, args = parse_osc_message(real_listener.recv(65536))
            if address == "/bridge/frame" and args[1] == daemon.get("/v1/params")["version"]:
                break
        fed = [t for t in targets if _drain(t)]
        assert len(fed) == 4  # of 64 ports named, 4 got anything (the frame, the refusals), not 64
        for port in ports:  # and the sender can give them back
            daemon.send(osc_message("/bridge/unsubscribe", port), noisy)
        daemon.until(lambda: daemon.get("/v1/health")["osc"]["subscribers"] == before["subscribers"] + 1,
                     "unsubscribed")
        keeps_serving(daemon, seed=4343)
    finally:
        for s in targets + [noisy, real_listener]:
            s.close()


def _drain(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            sock.recv(65536)
        except BlockingIOError:
            return count
        count += 1


def test_a_bundle_of_subscriptions_is_refused_whole_after_four(daemon):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        before = daemon.get("/v1/health")["osc"]
        daemon.send(osc_bundle(*[osc_message("/bridge/subscribe", 20000 + i) for i in range(50)]), sender)
        daemon.until(lambda: daemon.get("/v1/health")["osc"]["rejected"] == before["rejected"] + 1, "refused")
        assert daemon.get("/v1/health")["osc"]["subscribers"] <= before["subscribers"] + 4
        for i in range(50):
            daemon.send(osc_message("/bridge/unsubscribe", 20000 + i), sender)
        daemon.until(lambda: daemon.get("/v1/health")["osc"]["subscribers"] == before["subscribers"], "given back")
    keeps_serving(daemon, seed=4444)


def _http(daemon: Daemon, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{daemon.http}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_one_host_cannot_amplify_a_bundle_over_its_ports_and_channels(daemon):
    """Issue 24: 4 slots per source port let 30 sockets fill every slot, and 4 channels x 64 slots turned
    one 150-byte bundle into 256 datagrams. Now one host holds at most PER_HOST slots over every channel."""
    channels = ["a", "b", "c"]
    for name in channels:
        _http(daemon, "PATCH", f"/v1/channels/{name}/params", {"seed": 1})
    prefixes = ["/bridge"] + [f"/bridge/ch/{name}" for name in channels]
    senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(30)]
    victims = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(30 * 4)]
    try:
        for victim in victims:
            victim.bind(("127.0.0.1", 0))
            victim.setblocking(False)
        for i, sender in enumerate(senders):  # each: 4 ports in each of the 4 channels, in one bundle
            ports = [v.getsockname()[1] for v in victims[i * 4:i * 4 + 4]]
            daemon.send(osc_bundle(*[osc_message(f"{prefix}/subscribe", port) for prefix in prefixes
                                     for port in ports]), sender)
        health = lambda: daemon.get("/v1/health")["osc"]  # noqa: E731
        daemon.until(lambda: health()["subscribers"] + health()["channel_subscribers"] >= PER_HOST, "subscriptions")
        time.sleep(0.3)  # the last bundles are in
        assert health()["subscribers"] + health()["channel_subscribers"] == PER_HOST  # not 4 x 64
        time.sleep(0.5)
        for victim in victims:
            _drain(victim)
        frames = lambda name: _http(daemon, "GET", f"/v1/channels/{name}")["frames"]  # noqa: E731
        before = {name: frames(name) for name in ["main", *channels]}
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as trigger:  # one bundle, every channel
            bundle = osc_bundle(*[osc_message(f"{prefix}/seed", 777) for prefix in prefixes])
            assert len(bundle) < 200
            daemon.send(bundle, trigger)
        daemon.until(lambda: all(frames(name) > count for name, count in before.items()), "a frame on every channel")
        time.sleep(0.5)  # the feedback is on its way
        received = sum(_drain(victim) for victim in victims)
        assert 0 < received <= PER_HOST, received
    finally:
        for s in senders + victims:
            s.close()
        for name in channels:
            _http(daemon, "DELETE", f"/v1/channels/{name}")
    keeps_serving(daemon, seed=4545)
