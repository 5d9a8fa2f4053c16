"""The style image of the IP-Adapter: ``PUT/GET/DELETE /v1/style``, WebSocket style messages
(TBS1) and a client's shared-memory segment, all feeding ``Scheduler.set_style``. The same ingest
as the input image (``image_feed.ImageFeed``): PNG, JPEG, raw RGBA; decoded off the event loop; an
unchanged image changes nothing (the image encoder runs only for new content).

A daemon started without ``--ip-adapter`` answers PUT with 409 and says how to start it.
"""

from __future__ import annotations

from concurrent.futures import Executor

from aiohttp import web

from ...core.params import NO_IP_ADAPTER
from ...core.scene import InputImage
from ...engine.scheduler import Scheduler
from .image_feed import POLL_SECONDS, ImageFeed
from .image_put import put_image
from .rest import add_channel_route, error_response, scheduler_of, service_of

SCHEMA = {
    "style": {
        "PUT /v1/style": "the style image of the IP-Adapter (--ip-adapter SOURCE): like PUT /v1/input (image/png, "
                         "image/jpeg, raw RGBA with X-Width/X-Height, {\"shm\": NAME} to poll a client's segment, "
                         "{\"spout\": SENDER} or {\"syphon\": SERVER} to receive another program's frames); "
                         "steers the frames while style_scale > 0. Encoded once per content. 409 without --ip-adapter",
        "GET /v1/style": "its state: enabled (an IP-Adapter is loaded), present, "
                         "active (an image and style_scale > 0), digest, size, source, scale",
        "DELETE /v1/style": "drop the style image (and detach its segment or sender)",
        "channels": "per channel too: /v1/channels/CHANNEL/style; a WebSocket's TBS1 message sets its own channel's",
        "websocket": "a binary TBS1 message: the input message's 20-byte header with magic TBS1, then the image; "
                     "reply type style",
    },
}


class StyleFeed(ImageFeed):
    """The style image of one channel."""

    def __init__(self, scheduler: Scheduler, executor: Executor, poll_s: float = POLL_SECONDS,
                 own_shm_name: str | None = None, enabled: bool = True, own_senders: dict[str, str] | None = None):
        super().__init__(scheduler, executor, poll_s, own_shm_name, field="style", own_senders=own_senders)
        self.enabled = enabled

    def _apply(self, image: InputImage) -> dict:
        changed = self._scheduler.set_style(image)
        return {"digest": image.digest, "width": image.width, "height": image.height, "changed": changed,
                "active": self._scheduler.style_active, "version": self._scheduler.version}

    async def ws_message(self, message: bytes) -> dict:
        if not self.enabled:
            self._scheduler.stats.rejected += 1
            return {"type": "error", "error": {"field": "style", "message": NO_IP_ADAPTER}}
        return await super().ws_message(message)

    def health(self) -> dict:
        sched = self._scheduler
        image = sched.style
        return {"enabled": self.enabled, "present": image is not None, "active": sched.style_active,
                "scale": sched.params.style_scale, "digest": image.digest if image else None,
                "width": image.width if image else None, "height": image.height if image else None,
                "source": image.source if image else None, "accepted": sched.stats.styles,
                "unchanged": sched.stats.styles_unchanged, **self.source_health()}


STYLES = web.AppKey("styles", StyleFeed)


async def put_style(request: web.Request) -> web.Response:
    feed = service_of(request, STYLES)
    if not feed.enabled:
        scheduler_of(request).stats.rejected += 1
        return error_response(409, "style", NO_IP_ADAPTER)
    return await put_image(request, feed)


async def get_style(request: web.Request) -> web.Response:
    return web.json_response(service_of(request, STYLES).health())


async def delete_style(request: web.Request) -> web.Response:
    feed, sched = service_of(request, STYLES), scheduler_of(request)
    await feed.detach()
    return web.json_response({"cleared": sched.clear_style(), "version": sched.version})


def add_routes(app: web.Application) -> None:
    """Register the style routes; STYLES is set by the wiring."""
    add_channel_route(app, "PUT", "/v1/style", put_style)
    add_channel_route(app, "GET", "/v1/style", get_style)
    add_channel_route(app, "DELETE", "/v1/style", delete_style)
