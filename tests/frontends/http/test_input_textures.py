"""Another program's Spout sender or Syphon server as the live input image (and as a control or
style image): ``PUT /v1/input`` ``{"spout": "SENDER"}`` / ``{"syphon": "SERVER"}`` through a real
daemon.

The sending program (TouchDesigner's Syphon Spout Out TOP, Resolume...) is played by a thread of
the test that uses the stand-in library the way such a program does (``tests/support/
spout_standin.py``, ``syphon_standin.py``: Spout's per-thread OpenGL context, Syphon's run loop
that answers discovery). Neither library runs on Linux; without a stand-in the request is 409.
"""

import asyncio
import queue
import threading
from dataclasses import replace

import aiohttp
import numpy as np
import pytest

import spout_standin
import syphon_standin
from bridge.core.controls import ControlNetSpec
from bridge.core.scene import InputImage
from bridge.frontends.http.input_api import INPUTS
from renderers import RowsRenderer, rows_pattern
from waiting import settle

NAMES = {"spout": "Spout sender", "syphon": "Syphon server"}


class Program:
    """A sending program on a thread of its own (its graphics context lives there); between
    calls it runs its run loop (Syphon: how other programs discover its server)."""

    def __init__(self, kind: str, name: str):
        self.kind, self.name = kind, name
        self._calls: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"program-{name}", daemon=True)
        self._thread.start()
        self.call(self._open)

    def call(self, fn, *args):
        done = queue.Queue()
        self._calls.put((fn, args, done))
        ok, value = done.get(timeout=10)
        if not ok:
            raise value
        return value

    def _run(self):
        import objc
        import syphon

        directory = syphon.SyphonServerDirectory() if self.kind == "syphon" else None
        if directory is not None:
            directory.run_loop_interval = 0.001
        while True:
            try:
                fn, args, done = self._calls.get(timeout=0.005)
            except queue.Empty:
                if directory is not None:
                    with objc.autorelease_pool():
                        directory.update_run_loop()
                continue
            if fn is None:
                return
            try:
                with objc.autorelease_pool():
                    done.put((True, fn(*args)))
            except BaseException as exc:
                done.put((False, exc))

    def _open(self):
        if self.kind == "spout":
            import SpoutGL

            self.sender = SpoutGL.SpoutSender()
            assert self.sender.createOpenGL()
            self.sender.setSenderName(self.name)
        else:
            import syphon

            self.server = syphon.SyphonMetalServer(self.name)

    def send(self, pixels: np.ndarray) -> None:
        self.call(self._send, pixels)

    def _send(self, pixels):
        height, width = pixels.shape[:2]
        if self.kind == "spout":
            import SpoutGL

            assert self.sender.sendImage(pixels, width, height, SpoutGL.enums.GL_RGBA, False, 0)
        else:
            from syphon.utils.numpy import copy_image_to_mtl_texture
            from syphon.utils.raw import create_mtl_texture

            texture = create_mtl_texture(self.server.device, width, height)
            copy_image_to_mtl_texture(pixels, texture)
            self.server.publish_frame_texture(texture)

    def close(self) -> None:
        self.call(self._close)
        self._calls.put((None, (), None))
        self._thread.join(10)

    def _close(self):
        if self.kind == "spout":
            self.sender.releaseSender()
            assert self.sender.closeOpenGL()
        else:
            self.server.stop()


@pytest.fixture
def worlds(monkeypatch):
    # The Program's thread imports syphon for its run loop: both stand-ins, whichever is tested.
    worlds = {"spout": spout_standin.install(monkeypatch), "syphon": syphon_standin.install(monkeypatch)}
    yield worlds
    assert not worlds["syphon"].unpooled, "autoreleased Metal/Cocoa objects outside a pool (a growing leak)"


@pytest.fixture
async def api(worlds, config, daemon_factory):
    renderer = RowsRenderer()
    config = replace(config, controlnets=(ControlNetSpec("depth", "demo"),), ip_adapter="demo", spout="tb",
                     syphon="tb")
    async with daemon_factory(config, renderer_factory=renderer.factory) as daemon:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            yield session, daemon, renderer


@pytest.fixture
def programs():
    started = []

    def start(kind, name):
        started.append(Program(kind, name))
        return started[-1]

    yield start
    for program in started:
        if program._thread.is_alive():
            program.close()


async def put(session, body, path="/v1/input"):
    async with session.put(path, json=body) as r:
        return r.status, await r.json()


async def get(session, path="/v1/input"):
    async with session.get(path) as r:
        assert r.status == 200
        return await r.json()


def digest(pixels: np.ndarray) -> str:
    return InputImage.from_pixels(pixels).digest


@pytest.mark.parametrize("kind", ["spout", "syphon"])
async def test_a_programs_frames_become_the_live_input_upright_and_reach_the_renderer(api, programs, worlds, kind):
    session, daemon, renderer = api
    sched = daemon.scheduler
    program = programs(kind, "td-out")
    first = rows_pattern(40, 56, 201)  # red = row, blue = column: a flipped or swapped picture shows
    program.send(first)
    status, body = await put(session, {kind: "td-out"})
    assert status == 200 and body["texture"]["kind"] == kind and body["texture"]["name"] == "td-out", body
    await settle(lambda: sched.input is not None and sched.input.digest == digest(first), 10)
    assert np.array_equal(sched.input.pixels, first) and sched.input.source == kind
    await settle(lambda: any(s.input is not None and s.input.digest == digest(first) for s in renderer.scenes), 10)

    second = rows_pattern(72, 24, 33)  # another size: the receiver follows
    program.send(second)
    await settle(lambda: sched.input.digest == digest(second), 10)
    health = await get(session)
    assert health["source"] == kind and health["texture"]["received"] >= 2 and health["texture"]["error"] is None

    async with session.delete("/v1/input") as r:
        assert r.status == 200
    assert (await get(session))["texture"] is None and sched.input is None
    if kind == "spout":  # the receiver let go of its OpenGL context, on its own thread
        assert len(worlds["spout"].contexts) == 2  # the program's and the daemon's sender's


async def test_control_and_style_images_take_the_same_sources(api, programs):
    session, daemon, renderer = api
    sched = daemon.scheduler
    depth, look = programs("spout", "depth-cam"), programs("syphon", "look")
    depth.send(rows_pattern(32, 32, 1))
    look.send(rows_pattern(24, 16, 2))
    assert (await put(session, {"spout": "depth-cam"}, "/v1/control/depth"))[0] == 200
    assert (await put(session, {"syphon": "look"}, "/v1/style"))[0] == 200
    await settle(lambda: sched.control("depth") is not None and sched.style is not None, 10)
    assert np.array_equal(sched.control("depth").pixels, rows_pattern(32, 32, 1))
    assert np.array_equal(sched.style.pixels, rows_pattern(24, 16, 2))
    assert (await get(session, "/v1/control/depth"))["texture"]["name"] == "depth-cam"
    assert (await get(session, "/v1/style"))["texture"]["kind"] == "syphon"


def discovered(kind: str, world, names: set[str]):
    """What a receiver of this process will list: Spout's registered senders; the Syphon servers the
    process's shared directory has heard from (asked once, then kept, as Syphon's directory does)."""
    if kind == "spout":
        return names <= set(world.senders)
    import objc
    import syphon

    directory = syphon.SyphonServerDirectory()
    directory.run_loop_interval = 0.05
    with objc.autorelease_pool():
        return names <= {server.name for server in directory.servers}


@pytest.mark.parametrize("kind", ["spout", "syphon"])
async def test_a_missing_sender_is_refused_naming_those_there_are(api, programs, worlds, kind):
    session, daemon, _ = api
    programs(kind, "b").send(rows_pattern(8, 8, 0))
    programs(kind, "a").send(rows_pattern(8, 8, 0))
    await settle(lambda: discovered(kind, worlds[kind], {"a", "b", "tb"}), 10)  # tb: the daemon's own
    status, body = await put(session, {kind: "c"})
    assert status == 400 and body["error"]["field"] == kind, body
    assert body["error"]["message"] == f"no {NAMES[kind]} named 'c'; {NAMES[kind].split()[1]}s now: 'a', 'b', 'tb'"
    assert (await get(session))["texture"] is None


def texture_error(daemon):
    return daemon.app[INPUTS].health()["texture"]["error"]


@pytest.mark.parametrize("kind", ["spout", "syphon"])
async def test_a_sender_that_goes_away_shows_in_health_and_is_taken_up_again(api, programs, kind):
    session, daemon, _ = api
    sched = daemon.scheduler
    program = programs(kind, "cam")
    program.send(rows_pattern(16, 16, 1))
    assert (await put(session, {kind: "cam"}))[0] == 200
    await settle(lambda: sched.input is not None and sched.input.digest == digest(rows_pattern(16, 16, 1)), 10)
    program.close()
    gone = f"{NAMES[kind]} 'cam' is gone; waiting for it to come back"
    await settle(lambda: texture_error(daemon) == gone, 10)
    assert (await get(session))["texture"]["error"] == gone
    assert sched.input.digest == digest(rows_pattern(16, 16, 1))  # the last picture stays the input

    again = programs(kind, "cam")  # the program restarts under the same name
    again.send(rows_pattern(16, 24, 2))
    await settle(lambda: sched.input.digest == digest(rows_pattern(16, 24, 2)), 10)
    assert texture_error(daemon) is None


async def test_a_frame_over_the_upload_limit_is_refused_until_a_fitting_one_comes(api, programs):
    session, daemon, _ = api
    program = programs("spout", "huge")
    program.send(rows_pattern(8, 8, 3))
    assert (await put(session, {"spout": "huge"}))[0] == 200
    await settle(lambda: daemon.scheduler.input is not None, 10)
    program.send(np.full((2, 4097, 4), 9, np.uint8))
    too_large = "spout 'huge' sends 4097x2; input images must be at most 4096 px a side (scale it down in the " \
                "sending program)"
    await settle(lambda: texture_error(daemon) == too_large, 10)
    assert daemon.scheduler.input.digest == digest(rows_pattern(8, 8, 3))  # kept
    program.send(rows_pattern(8, 16, 4))
    await settle(lambda: daemon.scheduler.input.digest == digest(rows_pattern(8, 16, 4)), 10)
    assert texture_error(daemon) is None


@pytest.mark.parametrize("body, field, message", [
    ({"spout": 3}, "spout", "a spout sender name is 1 to 200 printable characters, got '3'"),
    ({"syphon": ""}, "syphon", "a syphon sender name is 1 to 200 printable characters, got ''"),
    ({"spout": "a", "shm": "b"}, None, 'a JSON input request names one source: {"shm": NAME}'),
    ({"ndi": "x"}, None, 'a JSON input request names one source: {"shm": NAME}'),
    ({"spout": "tb"}, "spout", "'tb' is this daemon's own spout sender (--spout), not an input"),
    ({"syphon": "tb.left"}, "syphon", "'tb.left' is this daemon's own syphon sender (--syphon), not an input"),
])
async def test_bad_sources_are_refused_in_one_line(api, body, field, message):
    session, _, _ = api
    status, answer = await put(session, body)
    assert status == 400 and answer["error"]["field"] == field \
        and answer["error"]["message"].startswith(message), answer


@pytest.mark.parametrize("kind, platform", [("spout", "Windows"), ("syphon", "macOS")])
async def test_without_the_library_the_source_is_409_naming_the_platform(config, daemon_factory, kind, platform):
    renderer = RowsRenderer()
    async with daemon_factory(config, renderer_factory=renderer.factory) as daemon:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            status, body = await put(session, {kind: "td-out"})
    assert status == 409 and body["error"]["field"] == kind, body
    assert body["error"]["message"].startswith(f'{{"{kind}": ') and f"needs {platform}, and this is Linux" in \
        body["error"]["message"] and f"pip install 'turbo-bridge[{kind}]'" in body["error"]["message"], body


async def test_sources_attached_at_once_leave_one_receiver_running(api, programs, worlds):
    session, daemon, _ = api
    for name in ("a", "b", "c"):
        programs("spout", name).send(rows_pattern(8, 8, ord(name)))
    assert (await put(session, {"spout": "a"}))[0] == 200
    answers = await asyncio.gather(put(session, {"spout": "b"}), put(session, {"spout": "c"}))
    assert [status for status, _ in answers] == [200, 200]
    attached = daemon.app[INPUTS].health()["texture"]["name"]
    assert attached in ("b", "c")
    sched = daemon.scheduler
    await settle(lambda: sched.input is not None
                 and sched.input.digest == digest(rows_pattern(8, 8, ord(attached))), 10)
    # OpenGL contexts: three programs, the daemon's sender, and one receiver: the others let go.
    assert len(worlds["spout"].contexts) == 5
