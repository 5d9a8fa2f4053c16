"""Live input for image-to-image: ``PUT/GET/DELETE /v1/input``, WebSocket input messages, and a
client's shared-memory input segment or another program's Spout sender or Syphon server, all
feeding ``Scheduler.set_input`` through ``InputService``, an ``ImageFeed`` (``image_feed.py``: decoding
off the event loop, the attached source) whose PUT is ``image_put.put_image``.
"""

from __future__ import annotations

from aiohttp import web

from ...core.scene import InputImage
from . import inputs
from .image_feed import ImageFeed
from .image_put import put_image
from .rest import add_channel_route, scheduler_of, service_of

SCHEMA = {
    "input": {
        "PUT /v1/input": "the input image for image-to-image: image/png, image/jpeg, or application/octet-stream "
                         "(raw RGBA8, rows top-first, with X-Width and X-Height headers), at most "
                         f"{inputs.MAX_INPUT_SIDE} px a side; or application/json {{\"shm\": NAME}} to poll a "
                         "client's input segment (layout v1), {\"spout\": SENDER} (Windows) or {\"syphon\": SERVER} "
                         "(macOS) to receive another program's frames. Answers digest, width, height, changed, "
                         "active, version",
        "GET /v1/input": "the input's state: present, active, digest, size, source, counters, attached segment "
                         "or texture sender",
        "DELETE /v1/input": "drop the input (and detach the segment or sender): back to text-to-image",
        "websocket": "a binary message is an input image: header <4sHBBIII magic TBI1, header size 20, format "
                     "(0 rgba, 1 png, 2 jpeg), reserved, width, height (rgba only), payload bytes; reply type input",
    },
}



class InputService(ImageFeed):
    """The input image for image-to-image."""

    def _apply(self, image: InputImage) -> dict:
        changed = self._scheduler.set_input(image)
        return {"digest": image.digest, "width": image.width, "height": image.height, "changed": changed,
                "active": self._scheduler.input_active, "version": self._scheduler.version}

    def health(self) -> dict:
        sched = self._scheduler
        image = sched.input
        return {"present": image is not None, "active": sched.input_active,
                "digest": image.digest if image else None, "width": image.width if image else None,
                "height": image.height if image else None, "source": image.source if image else None,
                "accepted": sched.stats.inputs, "unchanged": sched.stats.inputs_unchanged, **self.source_health()}


INPUTS = web.AppKey("inputs", InputService)


async def put_input(request: web.Request) -> web.Response:
    return await put_image(request, service_of(request, INPUTS))


async def get_input(request: web.Request) -> web.Response:
    return web.json_response(service_of(request, INPUTS).health())


async def delete_input(request: web.Request) -> web.Response:
    service, sched = service_of(request, INPUTS), scheduler_of(request)
    await service.detach()
    cleared = sched.clear_input()
    return web.json_response({"cleared": cleared, "version": sched.version})


def add_routes(app: web.Application) -> None:
    """Register the input routes; INPUTS is set by the wiring."""
    add_channel_route(app, "PUT", "/v1/input", put_input)
    add_channel_route(app, "GET", "/v1/input", get_input)
    add_channel_route(app, "DELETE", "/v1/input", delete_input)
