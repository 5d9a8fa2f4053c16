"""OSC over real UDP on loopback: python-osc, our client encoder, and liblo's oscsend."""

import asyncio
import json
import shutil
import socket
import subprocess

import aiohttp
import pytest
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.udp_client import SimpleUDPClient

from bridge.client import osc_bundle, osc_message, parse_osc_message
from conftest import null_factory
from osc_messages import message
from waiting import settle
from warning_renderer import WarningRenderer


@pytest.fixture
async def osc(config, daemon_factory):
    async with daemon_factory(config, renderer_factory=null_factory) as daemon:
        client = SimpleUDPClient("127.0.0.1", daemon.osc_port)
        yield client, daemon


async def test_each_address_changes_its_field(osc):
    client, daemon = osc
    client.send_message("/bridge/prompt", "a cat on a windowsill")
    client.send_message("/bridge/seed", 42)
    client.send_message("/bridge/guidance", 1.5)
    client.send_message("/bridge/steps", 2)
    client.send_message("/bridge/size", [128, 96])
    await settle(lambda: daemon.scheduler.params.width == 128)
    p = daemon.scheduler.params
    assert (p.prompt, p.seed, p.guidance, p.steps, p.width, p.height) == ("a cat on a windowsill", 42, 1.5, 2, 128, 96)


async def test_params_json_and_big_seed_as_string(osc):
    client, daemon = osc
    client.send_message("/bridge/params", json.dumps({"prompt": "x", "seed": 2**64 - 1}))
    await settle(lambda: daemon.scheduler.params.prompt == "x")
    assert daemon.scheduler.params.seed == 2**64 - 1
    client.send_message("/bridge/seed", "12345678901234567890")
    await settle(lambda: daemon.scheduler.params.seed == 12345678901234567890)


async def test_bundle_is_one_atomic_change(osc):
    client, daemon = osc
    before = daemon.scheduler.version
    bundle = OscBundleBuilder(IMMEDIATELY)
    bundle.add_content(message("/bridge/prompt", "a lion"))
    bundle.add_content(message("/bridge/seed", 9))
    bundle.add_content(message("/bridge/size", 72, 80))
    client.send(bundle.build())
    await settle(lambda: daemon.scheduler.version > before)
    assert daemon.scheduler.version == before + 1  # one change, one version
    p = daemon.scheduler.params
    assert (p.prompt, p.seed, p.width, p.height) == ("a lion", 9, 72, 80)


async def test_bad_bundle_is_rejected_whole(osc):
    client, daemon = osc
    before = (daemon.scheduler.params, daemon.scheduler.version)
    bundle = OscBundleBuilder(IMMEDIATELY)
    bundle.add_content(message("/bridge/prompt", "should not apply"))
    bundle.add_content(message("/bridge/steps", 99))
    client.send(bundle.build())
    await settle(lambda: daemon.osc.stats.rejected == 1)
    assert (daemon.scheduler.params, daemon.scheduler.version) == before


async def test_malformed_and_unknown_are_counted_not_fatal(osc):
    client, daemon = osc
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.sendto(b"\x00\x01garbage", ("127.0.0.1", daemon.osc_port))
    sock.sendto(b"/bridge/prompt\x00\x00,s\x00\x00\xff\xfe\x00\x00", ("127.0.0.1", daemon.osc_port))  # not UTF-8
    client.send_message("/bridge/colour", 3)
    client.send_message("/bridge/seed", -5)
    client.send_message("/bridge/size", 64)
    client.send_message("/bridge/prompt", "still alive")
    await settle(lambda: daemon.scheduler.params.prompt == "still alive")
    osc_health = daemon.health()["osc"]
    assert osc_health["malformed"] == 2 and osc_health["unknown"] == 1 and osc_health["rejected"] == 2
    assert osc_health["applied"] == 1


async def test_subscribe_gets_frame_and_error_feedback(osc):
    client, daemon = osc
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(3)
    port = listener.getsockname()[1]
    await daemon.scheduler.next_frame(0, 5)  # the initial frame is out before we subscribe
    client.send_message("/bridge/subscribe", port)
    await settle(lambda: len(daemon.osc.subscribers) == 1)
    client.send_message("/bridge/seed", 77)
    loop = asyncio.get_running_loop()
    address, args = parse_osc_message(await loop.run_in_executor(None, listener.recv, 65536))
    assert address == "/bridge/frame" and args[1] == daemon.scheduler.version and args[2] >= 0
    client.send_message("/bridge/steps", 0)
    address, args = parse_osc_message(await loop.run_in_executor(None, listener.recv, 65536))
    assert address == "/bridge/error" and "steps must be an integer from 1 to 8" in args[0]
    listener.close()


async def test_a_blend_whose_weights_overflow_is_refused_with_one_line(osc):
    """Issue 24: each weight finite, their sum inf; refused at the edge, reported to the subscriber."""
    client, daemon = osc
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(3)
    client.send_message("/bridge/subscribe", listener.getsockname()[1])
    await settle(lambda: len(daemon.osc.subscribers) == 1)
    before = (daemon.scheduler.params, daemon.scheduler.version)
    client.send_message("/bridge/params", json.dumps({"prompt": [["a cat", 1e308], ["a dog", 1e308]]}))
    loop = asyncio.get_running_loop()
    while True:
        address, args = parse_osc_message(await loop.run_in_executor(None, listener.recv, 65536))
        if address == "/bridge/error":
            break
    assert "add up past the largest number" in args[0] and "\n" not in args[0]
    assert daemon.osc.stats.rejected == 1
    assert (daemon.scheduler.params, daemon.scheduler.version) == before
    listener.close()


async def test_client_encoder_roundtrips_through_the_daemon(osc):
    _, daemon = osc
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.sendto(osc_bundle(osc_message("/bridge/prompt", "über"), osc_message("/bridge/seed", 2**40),
                           osc_message("/bridge/guidance", 0.5)), ("127.0.0.1", daemon.osc_port))
    await settle(lambda: daemon.scheduler.params.prompt == "über")
    assert daemon.scheduler.params.seed == 2**40 and daemon.scheduler.params.guidance == 0.5


@pytest.mark.skipif(shutil.which("oscsend") is None, reason="liblo-tools (oscsend) not installed")
async def test_oscsend_from_liblo(osc):
    _, daemon = osc
    await asyncio.to_thread(subprocess.run, ["oscsend", "localhost", str(daemon.osc_port), "/bridge/prompt", "s",
                                             "a cat on a windowsill"], check=True)
    await asyncio.to_thread(subprocess.run, ["oscsend", "localhost", str(daemon.osc_port), "/bridge/seed", "h",
                                             "9000000000"], check=True)
    await settle(lambda: daemon.scheduler.params.seed == 9000000000)
    assert daemon.scheduler.params.prompt == "a cat on a windowsill"


async def test_floats_read_back_as_sent(osc):
    """OSC 'f' is float32: 1.2 arrives as 1.2000000476837158. The daemon keeps the decimal the sender
    typed (the shortest that round-trips through float32); a double ('d') keeps every digit it has."""
    client, daemon = osc
    client.send_message("/bridge/guidance", 1.2)  # python-osc sends a Python float as 'f'
    client.send_message("/bridge/seed_mix", 0.3)
    await settle(lambda: daemon.scheduler.params.seed_mix > 0)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
        async with session.get("/v1/params") as r:
            text = await r.text()
    assert '"guidance": 1.2,' in text and '"seed_mix": 0.3,' in text, text
    builder = OscMessageBuilder("/bridge/guidance")
    builder.add_arg(1.2000000476837158, OscMessageBuilder.ARG_TYPE_DOUBLE)
    client.send(builder.build())
    await settle(lambda: daemon.scheduler.params.guidance != 1.2)
    assert daemon.scheduler.params.guidance == 1.2000000476837158


@pytest.mark.skipif(shutil.which("oscsend") is None, reason="liblo-tools (oscsend) not installed")
async def test_floats_from_oscsend_read_back_as_sent(osc):
    _, daemon = osc
    await asyncio.to_thread(subprocess.run, ["oscsend", "localhost", str(daemon.osc_port), "/bridge/guidance", "f",
                                             "2.7"], check=True)
    await settle(lambda: daemon.scheduler.params.guidance != 0)
    assert daemon.scheduler.params.guidance == 2.7


async def test_an_osc_change_never_tokenizes_its_prompt_for_warnings_no_reply_carries(config, daemon_factory):
    """OSC has no reply for prompt warnings, so the door does not find them: finding them tokenizes the
    prompt on the event loop before the frame starts. REST's reply still carries them."""
    renderer = WarningRenderer()
    async with daemon_factory(config, renderer_factory=lambda config: (renderer, {"model": "null"})) as daemon:
        SimpleUDPClient("127.0.0.1", daemon.osc_port).send_message("/bridge/prompt", "a castle on a hill " * 20)
        await settle(lambda: daemon.scheduler.params.prompt.startswith("a castle"))
        assert renderer.asked == []
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            async with session.patch("/v1/params", json={"prompt": "a lighthouse"}) as r:
                body = await r.json()
        assert r.status == 200 and body["warnings"] == ["cut: a lighthouse"] and renderer.asked == ["a lighthouse"]
