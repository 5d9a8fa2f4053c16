"""Recording controls: ``POST /v1/record`` {"action": "start"|"stop"}, ``GET /v1/record``, OSC ``/bridge/record i``.

The recorder itself is ``bridge.outputs.record``; this module validates and answers.
Refusals (no ``--output-dir``, start twice, stop without start, the folder gone) are 409 with
``{"error": {"field": "action", "message": ...}}``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ...core.errors import ValidationError
from ...outputs.record import Recorder, RecordingError, state_fields
from .rest import error_response, read_json

log = logging.getLogger(__name__)

RECORDER = web.AppKey("recorder", Recorder)
ACTIONS = ("start", "stop")
OSC_ADDRESS = "/bridge/record"

SCHEMA = {
    "record": {
        "POST /v1/record": 'JSON {"action": "start"} or {"action": "stop"}: record the published frames into '
                           "H.264 MP4 files in --output-dir (variable frame rate: each frame at its publication "
                           "time; a size change starts a new file, up to 16 a recording, then frames are scaled into "
                           "the last; fragmented MP4: a crash keeps what was written). 409 without --output-dir, when "
                           "already recording (start) or not recording (stop). Stop answers once the file is finished",
        "GET /v1/record": state_fields(),
    },
}


def parse_action(body: Any) -> str:
    if not isinstance(body, dict) or set(body) != {"action"} or body["action"] not in ACTIONS:
        raise ValidationError("action", f'expected {{"action": "start"}} or {{"action": "stop"}}, got '
                                        f"{str(body)[:100]!r}")
    return body["action"]


async def act(recorder: Recorder, action: str) -> dict:
    """Start, or stop and wait (off the event loop) until the file is finished; raises ``RecordingError``."""
    if action == "start":
        return recorder.start_recording()
    worker = recorder.stop_recording()
    await asyncio.get_running_loop().run_in_executor(None, worker.join)
    return recorder.state()


async def post_record(request: web.Request) -> web.Response:
    body = await read_json(request)
    if isinstance(body, web.Response):
        return body
    action = parse_action(body)
    try:
        return web.json_response(await act(request.app[RECORDER], action))
    except RecordingError as exc:
        return error_response(409, "action", str(exc))


async def get_record(request: web.Request) -> web.Response:
    return web.json_response(request.app[RECORDER].state())


@dataclass(frozen=True)
class RecordCommand:
    """``/bridge/record i`` read: a ``bridge.engine.changes.Command``, run only with a valid change."""

    recorder: Recorder
    start: bool

    def run(self) -> None:
        try:
            # stop: the worker finishes the file
            self.recorder.start_recording() if self.start else self.recorder.stop_recording()
        except RecordingError as exc:
            raise ValidationError("action", str(exc)) from None


def osc_record(recorder: Recorder, args: list[Any]) -> RecordCommand:
    """``/bridge/record i``: 1 starts, 0 stops."""
    if len(args) != 1 or isinstance(args[0], bool) or args[0] not in (0, 1):
        raise ValidationError("action", f"{OSC_ADDRESS} takes one integer: 1 starts, 0 stops; got {args!r}")
    return RecordCommand(recorder, bool(args[0]))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/record", get_record)
    app.router.add_post("/v1/record", post_record)
