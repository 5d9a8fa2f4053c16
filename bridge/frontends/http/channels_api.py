"""Channel routes: ``GET /v1/channels``, ``GET/DELETE /v1/channels/NAME``.

Every per-stream route also exists under ``/v1/channels/NAME/...`` (``rest.add_channel_route``);
a PATCH to ``/v1/channels/NAME/params`` creates the channel (``rest.patch_params``).
"""

from __future__ import annotations

from aiohttp import web

from ...engine.channels import channel_summary
from .rest import CHANNELS, channel_of

SCHEMA = {
    "channels": {
        "GET /v1/channels": "the channels: name -> version, frames, frame_seq, device, shm_name; and max_channels",
        "GET /v1/channels/NAME": "one channel's summary (404 if there is none)",
        "PATCH /v1/channels/NAME/params": "a partial change; creates the channel from the daemon's initial "
                                          "parameters first (409 past --max-channels). Names: [a-z0-9][a-z0-9_-]{0,31}",
        "DELETE /v1/channels/NAME": "remove a channel (not main): its segment is unlinked, its WebSocket clients "
                                    "get {type: deleted} and are closed, MJPEG streams end, long-polls answer 410",
        "/v1/channels/NAME/...": "every per-stream route (params, frame.png, frame.rgba, input, ws, stream.mjpeg) "
                                 "for that channel; the unprefixed routes are channel main's",
        "shared_memory": "channel NAME publishes into segment {shm-name}.NAME (layout v1); main into {shm-name}",
    },
}


async def list_channels(request: web.Request) -> web.Response:
    registry = request.app[CHANNELS]
    return web.json_response({"channels": registry.health(), "max_channels": registry.max_channels})


async def get_channel(request: web.Request) -> web.Response:
    channel = channel_of(request)
    return web.json_response({"name": channel.name, **channel_summary(channel)})


async def delete_channel(request: web.Request) -> web.Response:
    registry = request.app[CHANNELS]
    name = channel_of(request).name  # 404 first
    await registry.delete(name)
    return web.json_response({"deleted": name, "channels": len(registry)})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/channels", list_channels)
    app.router.add_get("/v1/channels/{channel}", get_channel)
    app.router.add_delete("/v1/channels/{channel}", delete_channel)
