"""Faults: failed renders and out-of-memory, signals, killed processes, vanishing clients, taken ports."""

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request

import aiohttp
import pytest

from bridge.client import ShmReader, osc_message
from bridge.core.errors import is_out_of_memory
from bridge.core.params import Params
from bridge.core.renderer import NullRenderer
from bridge.core.scene import Scene
from bridge.frontends.http import live
from conftest import null_factory, unique_shm_name
from daemon_process import segment_exists, start_daemon, unlink_segment, wait_ready

# -- render failures ----------------------------------------------------------------------

class MemoryHungryRenderer(NullRenderer):
    """Raises torch's OutOfMemoryError above ``limit`` pixels, as a GPU would; else a flat frame.

    With ``cpu=True`` it makes torch's CPU allocator really fail instead (an allocation of 2**60 bytes).
    """

    def __init__(self, limit=128 * 128, error=None, cpu=False):
        super().__init__()
        self.limit = limit
        self.error = error
        self.cpu = cpu
        self.started: list[Params] = []
        self.gate = threading.Event()
        self.gate.set()

    def render(self, params, scene=Scene()):
        self.started.append(params)
        self.gate.wait(10)
        if params.width * params.height > self.limit:
            import torch

            if self.cpu:
                torch.empty(1 << 60, dtype=torch.uint8)
            raise self.error or torch.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.11 GiB")
        return super().render(params, scene)


async def until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def test_out_of_memory_is_recognised_without_importing_torch_in_the_bridge():
    import torch

    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB"))
    assert is_out_of_memory(MemoryError()) and is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    with pytest.raises(RuntimeError) as cpu:  # a real allocation failure of torch's CPU allocator
        torch.empty(1 << 60, dtype=torch.uint8)
    assert is_out_of_memory(cpu.value)
    assert not is_out_of_memory(RuntimeError("shape mismatch")) and not is_out_of_memory(ValueError("x"))


@pytest.mark.parametrize("cpu", [False, True], ids=["cuda-error", "real-cpu-allocation"])
async def test_out_of_memory_rolls_back_to_the_last_rendered_size(running, cpu):
    sched = running(MemoryHungryRenderer(cpu=cpu))
    errors = []
    sched.on_error(errors.append)
    good = await sched.next_frame(0, 5)
    applied = sched.apply({"width": 512, "height": 512, "prompt": "too big"})
    await until(lambda: errors)
    assert ("RuntimeError: [enforce fail" if cpu else "OutOfMemoryError: CUDA out of memory") in errors[0]
    assert f"v{applied.version} (512x512)" in errors[0]
    assert "back to the last rendered parameters (64x64)" in errors[0]
    # The state is the last good one again, as a new version, and a frame of it follows.
    assert sched.params == good.params and sched.version == applied.version + 1
    frame = await sched.next_frame(good.seq, 5)
    assert frame.params == good.params and frame.version == sched.version
    assert sched.stats.render_errors == 1 and sched.stats.last_error == errors[0]
    sched.apply({"seed": 9})  # and it keeps serving
    assert (await sched.next_frame(frame.seq, 5)).params.seed == 9


async def test_out_of_memory_keeps_a_newer_pending_change(running):
    renderer = MemoryHungryRenderer()
    sched = running(renderer)
    errors = []
    sched.on_error(errors.append)
    good = await sched.next_frame(0, 5)
    renderer.gate.clear()  # hold the next render while a newer change arrives
    sched.apply({"width": 512, "height": 512})
    await until(lambda: renderer.started[-1].width == 512)  # that render is under way
    sched.apply({"width": 96, "height": 96, "seed": 4})  # the user already went back down
    renderer.gate.set()
    frame = await sched.next_frame(good.seq, 5)
    assert "back to" not in errors[0] and (frame.params.width, frame.params.seed) == (96, 4)


async def test_other_render_errors_keep_the_last_frame_and_the_new_state(running):
    sched = running(MemoryHungryRenderer(error=RuntimeError("NaN in latents")))
    errors = []
    sched.on_error(errors.append)
    good = await sched.next_frame(0, 5)
    sched.apply({"width": 512, "height": 512})
    await until(lambda: errors)
    assert "RuntimeError: NaN in latents" in errors[0] and "back to" not in errors[0]
    assert sched.latest is good and sched.params.width == 512  # nothing to roll back to by design


async def test_failed_render_is_reported_on_every_interface(config, daemon_factory):
    def factory(config):
        return MemoryHungryRenderer(), {"model": "hungry", "device": "cpu", "dtype": "none"}

    async with daemon_factory(config, renderer_factory=factory) as daemon:
        listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(5)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.sendto(osc_message("/bridge/subscribe", listener.getsockname()[1]), ("127.0.0.1", daemon.osc_port))
        await until(lambda: daemon.osc.subscribers)
        good = await daemon.scheduler.next_frame(0, 5)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            async with session.ws_connect("/v1/ws") as ws:
                sender.sendto(osc_message("/bridge/size", 256, 256), ("127.0.0.1", daemon.osc_port))
                loop = asyncio.get_running_loop()
                while True:
                    data = await loop.run_in_executor(None, listener.recv, 65536)
                    if b"/bridge/error" in data:
                        break
                assert b"out of memory" in data and b"back to the last rendered parameters (64x64)" in data
                async with session.get(f"/v1/frame.png?after={good.seq}&timeout=5") as r:
                    assert r.status == 200 and r.headers["X-Width"] == "64"  # the rolled-back state's frame
                async with session.get("/v1/health") as r:
                    health = await r.json()
                # The rolled-back frame rendered: healthy again, the error still visible.
                assert health["status"] == "ok" and health["render_errors"] == 1
                assert "OutOfMemoryError" in health["last_error"]
                # The WebSocket learns the restored state before its frame.
                while True:
                    msg = await asyncio.wait_for(ws.receive(), 5)
                    if msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data)["type"] == "params":
                        params = json.loads(msg.data)
                        if params["version"] == daemon.scheduler.version:
                            break
                assert params["params"]["width"] == 64
        listener.close()
        sender.close()


class FailsOnSeed(NullRenderer):
    """Raises for seed 13, renders every other seed."""

    def render(self, params, scene=None):
        if params.seed == 13:
            raise RuntimeError("NaN in latents")
        return super().render(params, scene)


async def test_health_is_degraded_while_renders_fail_and_recovers_after_a_good_frame(config, daemon_factory):
    factory = lambda config: (FailsOnSeed(), {"model": "fails", "device": "cpu", "dtype": "none"})  # noqa: E731
    async with daemon_factory(config, renderer_factory=factory) as daemon:
        sched = daemon.scheduler
        good = await sched.next_frame(0, 10)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            async def health():
                async with session.get("/v1/health") as r:
                    return await r.json()

            sched.apply({"seed": 13})
            await until(lambda: sched.stats.render_errors == 1)
            assert (await health())["status"] == "degraded"
            sched.apply({"seed": 14})
            assert (await sched.next_frame(good.seq, 10)).params.seed == 14
            after = await health()
            assert after["status"] == "ok" and after["render_errors"] == 1 and after["frames"] == 2
            assert "NaN in latents" in after["last_error"]  # the last error stays visible


# -- a real daemon process ----------------------------------------------------------------


def refused(port, kind=socket.SOCK_STREAM):
    """True when nothing holds the port on loopback any more."""
    with socket.socket(socket.AF_INET, kind) as s:
        if kind == socket.SOCK_STREAM:
            return s.connect_ex(("127.0.0.1", port)) != 0
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1])
def test_signal_stops_within_5_s_with_clients_connected(tmp_path, sig):
    name = unique_shm_name()
    proc = start_daemon(tmp_path, name)
    http_port, osc_port, _ = wait_ready(proc)
    base = f"http://127.0.0.1:{http_port}"
    outcome = {}

    def long_poll():  # waits up to 60 s for a frame that will not come
        try:
            urllib.request.urlopen(f"{base}/v1/frame.png?after=99&timeout=60", timeout=30)
        except urllib.error.HTTPError as exc:
            outcome["status"], outcome["body"] = exc.code, json.load(exc)

    async def clients():
        poller = threading.Thread(target=long_poll)
        poller.start()
        async with aiohttp.ClientSession(base) as session:
            ws = await session.ws_connect("/v1/ws")
            await ws.receive()  # hello
            stream = await session.get("/v1/stream.mjpeg")
            await stream.content.readline()
            # The signal must find all three clients inside their handlers (busy): the long-poll's
            # thread may still be connecting when the stream answers. The 4th: this health request.
            while True:
                async with session.get("/v1/health") as r:
                    if (await r.json())["http"]["busy"] == 4:
                        break
                await asyncio.sleep(0.01)
            started = time.monotonic()
            proc.send_signal(sig)
            while (msg := await asyncio.wait_for(ws.receive(), 5)).type != aiohttp.WSMsgType.CLOSE:
                assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
            outcome["ws_code"] = msg.data  # the code the daemon sent (the client's reply may find it gone)
            await asyncio.wait_for(stream.content.read(), 5)  # the stream ends
            stream.close()
            err = await asyncio.to_thread(proc.communicate, timeout=10)
            outcome["seconds"] = time.monotonic() - started
            poller.join(5)
            return err[1]

    err = asyncio.run(clients())
    assert proc.returncode == 0 and outcome["seconds"] < 5, err
    assert outcome["ws_code"] == aiohttp.WSCloseCode.GOING_AWAY
    assert outcome["status"] == 503 and outcome["body"]["error"]["message"] == "daemon stopping"
    assert "unlinked" in err and not segment_exists(name) and "Traceback" not in err
    assert refused(http_port) and refused(osc_port, socket.SOCK_DGRAM)


@pytest.mark.parametrize("kill", ["process group", "daemon only"])
def test_segment_of_a_killed_daemon_is_reclaimed_at_the_next_start(tmp_path, kill):
    name = unique_shm_name()
    proc = start_daemon(tmp_path, name, new_session=True)
    try:
        wait_ready(proc)
        assert segment_exists(name)
        if kill == "process group":  # as a crash of the whole session (or a container) would
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # kill -9 of the daemon: Python's resource tracker, a separate process, survives it
            proc.kill()
        proc.wait(10)
        if kill == "process group":
            assert segment_exists(name)  # nobody was left to unlink it
        proc = start_daemon(tmp_path, name)
        _, osc_port, lines = wait_ready(proc)
        reclaimed = any("reclaiming stale shared memory" in line for line in lines)
        assert reclaimed or kill == "daemon only"  # there, the tracker may have unlinked it first
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(osc_message("/bridge/seed", 77), ("127.0.0.1", osc_port))
        with ShmReader(name) as reader:
            deadline = time.monotonic() + 10
            while (frame := reader.read(force=True)) is None or frame.seed != 77:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
        assert proc.returncode == 0 and not segment_exists(name)
    finally:
        if proc.poll() is None:
            proc.kill()
        unlink_segment(name)


READER = textwrap.dedent("""
    import sys
    from bridge.client import ShmReader
    reader = ShmReader(sys.argv[1])
    print("reading", flush=True)
    while True:
        reader.read(force=True)
""")


async def test_a_reader_killed_mid_read_does_not_disturb_the_daemon(config, daemon_factory):
    async with daemon_factory(config, renderer_factory=null_factory, max_size=512,
                              initial=Params(width=512, height=512)) as daemon:
        reader = subprocess.Popen([sys.executable, "-c", READER, config.shm_name], stdout=subprocess.PIPE, text=True)
        assert await asyncio.to_thread(reader.stdout.readline) == "reading\n"
        seq = 0
        for seed in range(1, 40):  # publish while it copies 1 MB frames in a tight loop
            daemon.scheduler.apply({"seed": seed})
            while (frame := await daemon.scheduler.next_frame(seq, 5)).params.seed != seed:
                seq = frame.seq
            seq = frame.seq
            if seed == 20:
                reader.kill()
        assert reader.wait(5) == -signal.SIGKILL
        assert daemon.health()["status"] == "ok" and daemon.scheduler.stats.frames >= 20
        with ShmReader(config.shm_name) as fresh:  # the segment is intact for the next reader
            assert fresh.read().seed == 39
    assert not segment_exists(config.shm_name)


# -- clients that vanish ------------------------------------------------------------------

async def test_client_vanishing_mid_long_poll_is_let_go_at_once(config, daemon_factory, caplog):
    caplog.set_level(logging.INFO, logger="bridge")
    async with daemon_factory(config, renderer_factory=null_factory) as daemon:
        await daemon.scheduler.next_frame(0, 5)
        reader, writer = await asyncio.open_connection("127.0.0.1", daemon.http_port)
        writer.write(b"GET /v1/frame.png?after=99&timeout=60 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        await until(lambda: len(daemon.scheduler._new_frame._waiters) == 1)  # the long-poll waits
        writer.transport.abort()  # gone without a word
        await until(lambda: "ended: the client went away" in caplog.text, 3)
        assert not daemon.scheduler._new_frame._waiters  # nothing left waiting for it
        async with aiohttp.ClientSession() as session:  # and others are served as before
            async with session.get(f"http://127.0.0.1:{daemon.http_port}/v1/frame.png?after=0") as r:
                assert r.status == 200


@pytest.mark.parametrize("path", ["/v1/ws", "/v1/stream.mjpeg"])
async def test_client_vanishing_mid_stream_is_let_go(config, daemon_factory, caplog, path):
    caplog.set_level(logging.INFO, logger="bridge")
    async with daemon_factory(config, renderer_factory=null_factory) as daemon:
        hub = daemon.app[live.HUB]
        async with aiohttp.ClientSession() as session:
            if path == "/v1/ws":
                ws = await session.ws_connect(f"http://127.0.0.1:{daemon.http_port}{path}")
                await ws.receive()
                transport = ws._response.connection.transport
            else:
                response = await session.get(f"http://127.0.0.1:{daemon.http_port}{path}")
                await response.content.readline()
                transport = response.connection.transport
            await until(lambda: len(hub.subscriptions) == 1)
            transport.abort()  # no close frame, no FIN handshake: a reset
            await until(lambda: not hub.subscriptions, 3)
            client = "websocket client" if path == "/v1/ws" else "MJPEG client"
            await until(lambda: f"{client} 127.0.0.1 went away" in caplog.text, 3)
            daemon.scheduler.apply({"seed": 3})  # frames go on for everyone else
            await until(lambda: daemon.scheduler.latest.params.seed == 3)


# -- ports already in use -----------------------------------------------------------------

@pytest.mark.parametrize("kind", ["HTTP", "OSC"])
def test_port_in_use_is_one_line_before_the_model_loads(tmp_path, kind):
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM if kind == "HTTP" else socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    if kind == "HTTP":
        taken.listen()
    port = taken.getsockname()[1]
    option = "--http-port" if kind == "HTTP" else "--osc-port"
    cache = tmp_path / "cache"  # the demo model would be built here if loading started
    env = {**os.environ, "TURBO_BRIDGE_CACHE": str(cache)}
    args = ["--http-port", "0", "--osc-port", "0"]
    args[args.index(option) + 1] = str(port)
    try:
        done = subprocess.run([sys.executable, "-m", "bridge", "serve", "--model", "demo", "--shm-name", "", *args],
                              capture_output=True, text=True, timeout=60, env=env)
    finally:
        taken.close()
    errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
    assert done.returncode == 1 and len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"{kind} port {port} on 127.0.0.1 is already in use" in errors[0] and option in errors[0]
    assert not cache.exists() or not any(cache.iterdir())  # refused before any loading
