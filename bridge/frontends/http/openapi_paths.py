"""The OpenAPI descriptions of the route groups that ``openapi.document`` is made of, beside its own:
the error answers, the frame long-polls, the image slots' PUT (input, control, style) and their
routes, recording, and the copy of every per-stream route under ``/v1/channels/{channel}``.
"""

from __future__ import annotations

import copy

from .rest import CHANNEL_PREFIX

ERROR = {"$ref": "#/components/schemas/Error"}
JSON_ERROR = {"application/json": {"schema": ERROR}}
FRAME_HEADERS = {name: {"schema": {"type": "integer" if name != "X-Render-Ms" else "number"}}
                 for name in ("X-Frame-Seq", "X-Params-Version", "X-Render-Ms", "X-Seed", "X-Width", "X-Height")}


def error_answer(description: str) -> dict:
    return {"description": description, "content": JSON_ERROR}


def _number_query(name: str, low: float, high: float, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": "number", "minimum": low, "maximum": high}}


def frame_route(media: str, summary: str) -> dict:
    return {"get": {
        "summary": summary,
        "parameters": [
            {"name": "after", "in": "query", "required": False,
             "description": "a frame whose seq is above this (default -1: the current one)",
             "schema": {"type": "integer", "minimum": -1, "maximum": 2**63 - 1}},
            _number_query("timeout", 0, 60, "seconds to wait (default 10)"),
        ],
        "responses": {
            "200": {"description": "the frame", "headers": FRAME_HEADERS,
                    "content": {media: {"schema": {"type": "string", "format": "binary"}}}},
            "204": {"description": "no newer frame within the timeout",
                    "headers": {"X-Frame-Seq": FRAME_HEADERS["X-Frame-Seq"]}},
            "400": error_answer("a bad query value"),
            "503": error_answer("the daemon is stopping"),
        },
    }}


CHANNEL_PARAMETER = {"name": "channel", "in": "path", "required": True, "description": "a channel name",
                     "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,31}$"}}


def channel_routes(paths: dict, per_channel: frozenset[str]) -> dict:
    """``/v1/channels`` and a copy of every per-stream route under ``/v1/channels/{channel}``."""
    summary = {"200": {"description": "channels", "content": {"application/json": {"schema": {"type": "object"}}}}}
    out = {
        "/v1/channels": {"get": {"summary": "the channels with version, frame counts, device and segment",
                                 "responses": summary}},
        CHANNEL_PREFIX: {
            "get": {"summary": "one channel", "parameters": [CHANNEL_PARAMETER],
                    "responses": {**summary, "404": error_answer("no such channel")}},
            "delete": {"summary": "remove a channel (not main): segment unlinked, clients told and closed",
                       "parameters": [CHANNEL_PARAMETER],
                       "responses": {**summary, "400": error_answer("main cannot be deleted"),
                                     "404": error_answer("no such channel")}},
        },
    }
    for path in sorted(per_channel & set(paths)):
        item = copy.deepcopy(paths[path])
        for method, operation in item.items():
            operation["parameters"] = [CHANNEL_PARAMETER, *operation.get("parameters", [])]
            if path == "/v1/ws":  # connects to a channel not created yet: its first params message creates it
                operation["summary"] += "; a params message creates the channel, as PATCH does"
            else:
                operation["responses"].setdefault("404", error_answer("no such channel"))
            if method == "patch":
                operation["summary"] += "; creates the channel first (from the initial parameters)"
                operation["responses"]["409"] = error_answer("creating it would pass --max-channels")
            if path in ("/v1/frame.png", "/v1/frame.rgba"):
                operation["responses"]["410"] = error_answer("the channel was deleted while waiting")
        out[CHANNEL_PREFIX + path[len("/v1"):]] = item
    return out


def image_put(what: str, answer: str, more: dict | None = None) -> dict:
    """A PUT of an image slot (the input image, a control image): the same bodies and answers."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {
        "summary": f"{what}: PNG, JPEG, raw RGBA (X-Width/X-Height headers), or JSON {{\"shm\": NAME}} to poll "
                   "a client's segment, {\"spout\": SENDER} / {\"syphon\": SERVER} to receive another program's "
                   "frames",
        "requestBody": {"required": True, "content": {
            "image/png": binary, "image/jpeg": binary, "application/octet-stream": binary,
            "application/json": {"schema": {"oneOf": [
                {"type": "object", "required": [key], "additionalProperties": False,
                 "properties": {key: {"type": "string"}}} for key in ("shm", "spout", "syphon")]}}}},
        "responses": {"200": {"description": answer, "content": {"application/json": {"schema": {"type": "object"}}}},
                      "400": error_answer("not an image, a bad size, or a bad segment or sender name (no such "
                                    "sender: the message lists the ones there are)"),
                      "408": error_answer("the body stalled (no data for 10 s); the connection is closed"),
                      "409": error_answer("Spout or Syphon cannot run on the daemon's machine (the message names the "
                                    "platform and the extra to install)"),
                      "413": error_answer("too large"),
                      "415": error_answer("an unsupported Content-Type"),
                      "503": error_answer("too many large uploads at once (over 1 MiB or of unknown "
                                    "length); retry after Retry-After seconds"),
                      **(more or {})}}


def style_route() -> dict:
    """/v1/style: the IP-Adapter's style image, taken like the input image (409 without --ip-adapter)."""
    json_object = {"application/json": {"schema": {"type": "object"}}}
    return {
        "put": image_put("the style image (IP-Adapter; steers while style_scale > 0)",
                          "the style image as the daemon holds it",
                          {"409": error_answer("no IP-Adapter: start the daemon with --ip-adapter SOURCE; or Spout or "
                                         "Syphon cannot run on the daemon's machine")}),
        "get": {"summary": "the style image's state (enabled, present, active, digest, size, source, scale)",
                "responses": {"200": {"description": "state", "content": json_object}}},
        "delete": {"summary": "drop the style image", "responses": {
            "200": {"description": "cleared", "content": json_object}}},
    }


def control_routes() -> dict:
    """/v1/control/{name}: the input image's routes, per ControlNet name (404 for an unknown one)."""
    json_object = {"application/json": {"schema": {"type": "object"}}}
    name = {"name": "name", "in": "path", "required": True,
            "description": "a --controlnet NAME (a ControlNet or a T2I-Adapter)", "schema": {"type": "string"}}
    unknown = error_answer("no ControlNet of that name")
    return {
        "/v1/control": {"get": {"summary": "every loaded ControlNet's control image state", "responses": {
            "200": {"description": "by name", "content": json_object}}}},
        "/v1/control/{name}": {
            "put": {**image_put("the control image of ControlNet or T2I-Adapter NAME",
                                 "the control image as the daemon holds it", {"404": unknown}),
                    "parameters": [name]},
            "get": {"summary": "its control image's state", "parameters": [name], "responses": {
                "200": {"description": "state", "content": json_object}, "404": unknown}},
            "delete": {"summary": "drop its control image", "parameters": [name], "responses": {
                "200": {"description": "cleared", "content": json_object}, "404": unknown}},
        },
    }


def record_route() -> dict:
    state = {"description": "the recorder's state", "content": {"application/json": {"schema": {
        "type": "object", "required": ["available", "recording", "files", "error"],
        "properties": {"available": {"type": "boolean"}, "recording": {"type": "boolean"},
                       "files": {"type": "array", "items": {"type": "string"}},
                       "error": {"type": "string", "nullable": True}}}}}}
    action = {"type": "object", "required": ["action"], "additionalProperties": False,
              "properties": {"action": {"type": "string", "enum": ["start", "stop"]}}}
    return {
        "get": {"summary": "recording state: files written, frames, dropped, the last error",
                "responses": {"200": state}},
        "post": {"summary": "start or stop recording the frames into H.264 MP4 files in --output-dir",
                 "requestBody": {"required": True, "content": {"application/json": {"schema": action}}},
                 "responses": {"200": state, "400": error_answer("not {\"action\": \"start\"|\"stop\"}"),
                               "409": error_answer("no --output-dir, already recording, not recording, or the folder "
                                             "is gone"),
                               "413": error_answer("body over 64 KiB")}},
    }
