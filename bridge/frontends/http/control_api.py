"""Control images of the ControlNets: ``PUT/GET/DELETE /v1/control/NAME``, WebSocket control
messages (TBC1) and a client's shared-memory segment per name, all feeding
``Scheduler.set_control``. The same ingest as the input image (``image_feed.ImageFeed``): PNG,
JPEG, raw RGBA; decoded off the event loop; an unchanged image changes nothing.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor

from aiohttp import web

from ...core.errors import ValidationError
from ...core.scene import InputImage
from ...engine.scheduler import Scheduler
from . import inputs
from .image_feed import POLL_SECONDS, ImageFeed
from .image_put import put_image
from .rest import add_channel_route, error_response, scheduler_of, service_of

SCHEMA = {
    "control": {
        "PUT /v1/control/NAME": "the control image of ControlNet or T2I-Adapter NAME (--controlnet NAME=SOURCE): like "
                                "PUT /v1/input (image/png, image/jpeg, raw RGBA with X-Width/X-Height, {\"shm\": NAME} "
                                "to poll a client's segment, {\"spout\": SENDER} or {\"syphon\": SERVER} to receive "
                                "another program's frames); scaled to the frame, preprocessed per "
                                "controls.NAME.preprocess. 404 for an unknown NAME",
        "GET /v1/control/NAME": "its state: present, active (an image and a scale above 0), digest, size, source",
        "GET /v1/control": "every loaded ControlNet's and T2I-Adapter's state",
        "DELETE /v1/control/NAME": "drop its image (and detach its segment or sender)",
        "channels": "per channel too: /v1/channels/CHANNEL/control/NAME; a WebSocket's TBC1 message sets its own "
                    "channel's",
        "websocket": "a binary TBC1 message: the input message's header with magic TBC1 and header size 52, the "
                     "ControlNet's name NUL-padded to 32 bytes, then the image; reply type control",
    },
}


class ControlFeed(ImageFeed):
    """The control image of one ControlNet."""

    def __init__(self, name: str, scheduler: Scheduler, executor: Executor, poll_s: float = POLL_SECONDS,
                 own_shm_name: str | None = None, own_senders: dict[str, str] | None = None):
        super().__init__(scheduler, executor, poll_s, own_shm_name, field="control", own_senders=own_senders)
        self.name = name

    def _apply(self, image: InputImage) -> dict:
        changed = self._scheduler.set_control(self.name, image)
        return {"name": self.name, "digest": image.digest, "width": image.width, "height": image.height,
                "changed": changed, "active": self._scheduler.control_active(self.name),
                "version": self._scheduler.version}

    def health(self) -> dict:
        sched = self._scheduler
        image = sched.control(self.name)
        settings = dict(sched.params.controls).get(self.name)
        return {"name": self.name, "present": image is not None, "active": sched.control_active(self.name),
                "scale": settings.scale if settings else 0.0,
                "digest": image.digest if image else None, "width": image.width if image else None,
                "height": image.height if image else None, "source": image.source if image else None,
                **self.source_health()}


class ControlService:
    """One ``ControlFeed`` per loaded ControlNet name."""

    def __init__(self, scheduler: Scheduler, executor: Executor, poll_s: float = POLL_SECONDS,
                 own_shm_name: str | None = None, own_senders: dict[str, str] | None = None):
        self._scheduler = scheduler
        self.feeds = {name: ControlFeed(name, scheduler, executor, poll_s, own_shm_name, own_senders)
                      for name in scheduler.limits.controls}

    async def ws_message(self, message: bytes) -> dict:
        """A binary TBC1 message in, its reply out (``control`` or ``error``)."""
        name = message[inputs.WS_INPUT.size:inputs.WS_INPUT.size + inputs.WS_CONTROL_NAME].rstrip(b"\0")
        feed = self.feeds.get(name.decode("utf-8", "replace"))
        if feed is None:
            self._scheduler.stats.rejected += 1
            return {"type": "error", **ValidationError("control", _unknown(name.decode("utf-8", "replace"),
                                                                          self.feeds)).to_json()}
        return await feed.ws_message(message)

    async def detach(self) -> None:
        await asyncio.gather(*(feed.detach() for feed in self.feeds.values()))

    def health(self) -> dict:
        return {name: feed.health() for name, feed in self.feeds.items()}


CONTROLS = web.AppKey("controls", ControlService)


def _unknown(name: str, feeds: dict) -> str:
    loaded = ", ".join(feeds) or "none (start the daemon with --controlnet NAME=SOURCE)"
    return f"no ControlNet named {name[:64]!r}; loaded: {loaded}"


def _feed(request: web.Request) -> ControlFeed | web.Response:
    feeds = service_of(request, CONTROLS).feeds
    name = request.match_info["name"]
    return feeds.get(name) or error_response(404, "control", _unknown(name, feeds))


async def put_control(request: web.Request) -> web.Response:
    feed = _feed(request)
    return feed if isinstance(feed, web.Response) else await put_image(request, feed)


async def get_control(request: web.Request) -> web.Response:
    feed = _feed(request)
    return feed if isinstance(feed, web.Response) else web.json_response(feed.health())


async def list_controls(request: web.Request) -> web.Response:
    return web.json_response(service_of(request, CONTROLS).health())


async def delete_control(request: web.Request) -> web.Response:
    feed = _feed(request)
    if isinstance(feed, web.Response):
        return feed
    await feed.detach()
    sched = scheduler_of(request)
    return web.json_response({"cleared": sched.clear_control(feed.name), "version": sched.version})


def add_routes(app: web.Application) -> None:
    """Register the control routes; CONTROLS is set by the wiring."""
    add_channel_route(app, "GET", "/v1/control", list_controls)
    add_channel_route(app, "PUT", "/v1/control/{name}", put_control)
    add_channel_route(app, "GET", "/v1/control/{name}", get_control)
    add_channel_route(app, "DELETE", "/v1/control/{name}", delete_control)
