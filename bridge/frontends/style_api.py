"""The style image of the IP-Adapter: ``PUT/GET/DELETE /v1/style``, WebSocket style messages
(TBS1) and a client's shared-memory segment, all feeding ``Scheduler.set_style``. The same ingest
as the input image (``input_api.ImageFeed``): PNG, JPEG, raw RGBA; decoded off the event loop; an
unchanged image changes nothing (the image encoder runs only for new content).

A daemon started without ``--ip-adapter`` answers PUT with 409 and says how to start it.
"""

from __future__ import annotations

from concurrent.futures import Executor

from aiohttp import web

from ..core.params import NO_IP_ADAPTER
from ..core.scene import InputImage
from ..engine.scheduler import Scheduler
from .input_api import POLL_SECONDS, ImageFeed, put_image
from .rest import SCHEDULER, error_response

SCHEMA = {
    "style": {
        "PUT /v1/style": "the style image of the IP-Adapter (--ip-adapter SOURCE): like PUT /v1/input (image/png, "
                         "image/jpeg, raw RGBA with X-Width/X-Height, or {\"shm\": NAME} to poll a client's segment); "
                         "steers the frames while style_scale > 0. Encoded once per content. 409 without --ip-adapter",
        "GET /v1/style": "its state: enabled (an IP-Adapter is loaded), present, active (an image and style_scale > 0), "
                         "digest, size, source, scale",
        "DELETE /v1/style": "drop the style image (and detach its segment)",
        "websocket": "a binary TBS1 message: the input message's 20-byte header with magic TBS1, then the image; "
                     "reply type style",
    },
}


class StyleFeed(ImageFeed):
    """The style image (one per daemon; one per channel once channels exist)."""

    def __init__(self, scheduler: Scheduler, executor: Executor, poll_s: float = POLL_SECONDS,
                 own_shm_name: str | None = None, enabled: bool = True):
        super().__init__(scheduler, executor, poll_s, own_shm_name, field="style")
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
                "unchanged": sched.stats.styles_unchanged, **self.shm_health()}


STYLES = web.AppKey("styles", StyleFeed)


async def put_style(request: web.Request) -> web.Response:
    feed = request.app[STYLES]
    if not feed.enabled:
        request.app[SCHEDULER].stats.rejected += 1
        return error_response(409, "style", NO_IP_ADAPTER)
    return await put_image(request, feed)


async def get_style(request: web.Request) -> web.Response:
    return web.json_response(request.app[STYLES].health())


async def delete_style(request: web.Request) -> web.Response:
    feed, sched = request.app[STYLES], request.app[SCHEDULER]
    await feed.detach()
    return web.json_response({"cleared": sched.clear_style(), "version": sched.version})


def add_routes(app: web.Application) -> None:
    """Register the style routes; STYLES is set by the wiring."""
    app.router.add_put("/v1/style", put_style)
    app.router.add_get("/v1/style", get_style)
    app.router.add_delete("/v1/style", delete_style)
