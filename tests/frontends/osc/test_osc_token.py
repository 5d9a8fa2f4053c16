"""What OSC may do when the daemon has a --token (issue 24): OSC cannot carry the token, so a
sender that only loopback admits may change render parameters, not what reads or writes files
(LoRAs, recording); a sender named by --osc-allow may. Real daemons (demo model, its demo LoRAs),
real UDP sockets on loopback; each refusal is checked to have read no file and started nothing.
"""

import asyncio
import json
import socket

import aiohttp
import pytest
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder

from bridge.client import parse_osc_message
from bridge.core.access import Access
from osc_messages import message
from waiting import settle

TOKEN = "correct-horse-battery-staple"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SENTINEL = "/bridge/colour"  # an unknown address: its error reply marks the end of what came before


def bundle(*messages) -> bytes:
    builder = OscBundleBuilder(IMMEDIATELY)
    for m in messages:
        builder.add_content(m)
    return builder.build().dgram


async def daemon_with(config, daemon_factory, tmp_path, **access):
    return daemon_factory(config, output_dir=tmp_path / "out", access=Access.from_options(TOKEN, **access))


class Sender:
    """A loopback OSC sender subscribed to channel main's feedback on its own socket."""

    def __init__(self, daemon):
        self.daemon = daemon
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)

    def send(self, data) -> None:
        self.sock.sendto(data if isinstance(data, bytes) else data.dgram, ("127.0.0.1", self.daemon.osc_port))

    async def errors(self) -> list[str]:
        """Every ``/bridge/error`` before the reply to an unknown address sent now (frames skipped)."""
        self.send(message(SENTINEL, 1))
        errors = []
        while True:
            data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, 65536), 10)
            address, args = parse_osc_message(data)
            if address == "/bridge/error":
                if SENTINEL in args[0]:
                    return errors
                errors.append(args[0])


@pytest.fixture
async def loopback_only(config, daemon_factory, tmp_path):
    """--token, no --osc-allow: loopback senders may change render parameters only."""
    async with await daemon_with(config, daemon_factory, tmp_path) as daemon:
        sender = Sender(daemon)
        sender.send(message("/bridge/subscribe"))
        await settle(lambda: len(daemon.osc.subscribers) == 1)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}", headers=AUTH) as session:
            yield daemon, sender, session
        sender.sock.close()


RESTRICTED = [
    (message("/bridge/record", 1), "/bridge/record refused"),
    (message("/bridge/lora", "demo-a", 0.8), "/bridge/lora refused"),
    (message("/bridge/ch/main/lora", "demo-a", 0.8), "/bridge/ch/main/lora refused"),
    (message("/bridge/params", json.dumps({"seed": 4, "loras": {"demo-a": 1.0}})), "/bridge/params with loras refused"),
    (message("/bridge/lora", "no-such-file", 1.0), "/bridge/lora refused"),  # not even a rescan of the folder
]


async def test_loopback_changes_render_parameters_but_not_loras_or_recording(loopback_only):
    daemon, sender, session = loopback_only
    sender.send(message("/bridge/prompt", "a lighthouse"))
    sender.send(message("/bridge/seed", 7))
    sender.send(message("/bridge/params", json.dumps({"guidance": 0.5, "prompt": [["a", 1.0], ["b", 1.0]]})))
    assert await sender.errors() == []
    params = daemon.scheduler.params
    assert (params.seed, params.guidance) == (7, 0.5)
    before = (daemon.scheduler.params, daemon.scheduler.version)
    gate = daemon.scheduler.loras
    for sent, refusal in RESTRICTED:
        sender.send(sent)
        errors = await sender.errors()
        assert len(errors) == 1 and errors[0].startswith(refusal), errors
        assert "--osc-allow 127.0.0.1" in errors[0] and "\n" not in errors[0]  # what to pass, in one line
    assert daemon.osc.stats.not_allowed == len(RESTRICTED) and daemon.osc.stats.rejected == 0
    assert (daemon.scheduler.params, daemon.scheduler.version) == before
    assert gate.stats.scans == gate.stats.loads == 0 and not gate._catalog.reads  # no file was read
    async with session.get("/v1/record") as r:
        assert (await r.json())["recording"] is False
    async with session.get("/v1/health") as r:
        assert (await r.json())["osc"]["not_allowed"] == len(RESTRICTED)


async def test_a_bundle_with_a_restricted_message_is_refused_whole(loopback_only):
    daemon, sender, session = loopback_only
    before = (daemon.scheduler.params, daemon.scheduler.version)
    sender.send(bundle(message("/bridge/seed", 99), message("/bridge/record", 1)))
    sender.send(bundle(message("/bridge/lora", "demo-b", 0.5), message("/bridge/prompt", "not applied")))
    errors = await sender.errors()
    assert len(errors) == 2 and "/bridge/record refused" in errors[0] and "/bridge/lora refused" in errors[1]
    assert (daemon.scheduler.params, daemon.scheduler.version) == before
    assert daemon.osc.stats.not_allowed == 2 and daemon.osc.stats.applied == 0
    async with session.get("/v1/record") as r:
        assert (await r.json())["recording"] is False
    # The same render parameters alone still apply: only the restricted message was refused.
    sender.send(bundle(message("/bridge/seed", 99), message("/bridge/prompt", "applied")))
    assert await sender.errors() == []
    assert (daemon.scheduler.params.seed, daemon.scheduler.params.prompt) == (99, "applied")


@pytest.mark.parametrize("access", [{"osc_allow": ["127.0.0.1"]}, None], ids=["token-and-osc-allow", "no-token"])
async def test_a_sender_named_by_osc_allow_or_any_without_a_token_may_record_and_load_loras(
        config, daemon_factory, tmp_path, access):
    made = Access.from_options(TOKEN, **access) if access is not None else Access()
    async with daemon_factory(config, output_dir=tmp_path / "out", access=made) as daemon:
        sender = Sender(daemon)
        sender.send(message("/bridge/subscribe"))
        await settle(lambda: len(daemon.osc.subscribers) == 1)
        sender.send(bundle(message("/bridge/lora", "demo-a", 0.8), message("/bridge/record", 1)))
        await settle(lambda: daemon.osc.stats.applied == 1, timeout=30)  # the LoRA loads first
        assert await sender.errors() == []
        assert dict(daemon.scheduler.params.loras) == {"demo-a": 0.8} and daemon.osc.stats.not_allowed == 0
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}", headers=AUTH) as session:
            async with session.get("/v1/record") as r:
                assert (await r.json())["recording"] is True
            sender.send(message("/bridge/record", 0))
            assert await sender.errors() == []
            async with session.get("/v1/record") as r:
                assert (await r.json())["recording"] is False
        sender.sock.close()
