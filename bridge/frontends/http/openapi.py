"""``GET /v1/openapi.json``: a hand-written OpenAPI 3.0 document of the HTTP routes.

Parameters come from ``params.schema`` (so ranges follow ``--max-size``); the rest mirrors
``rest`` and ``live``. ``tests/frontends/http/test_openapi.py`` checks it lists exactly the routes the app
serves; schemathesis fuzzes the daemon from it (docs/reliability.md).
"""

from __future__ import annotations

from aiohttp import web

import copy

from ...core.params import PROMPT_FIELDS, SEED_LIMIT, Limits, schema
from .rest import CHANNEL_PATHS, CHANNEL_PREFIX, SCHEDULER
from ..security import ACCESS

ERROR = {"$ref": "#/components/schemas/Error"}
JSON_ERROR = {"application/json": {"schema": ERROR}}
FRAME_HEADERS = {name: {"schema": {"type": "integer" if name != "X-Render-Ms" else "number"}}
                 for name in ("X-Frame-Seq", "X-Params-Version", "X-Render-Ms", "X-Seed", "X-Width", "X-Height")}


def at_most(n: int) -> str:
    """A pattern for decimal strings of 0..n (leading zeros and surrounding whitespace allowed)."""
    digits = str(n)
    alternatives = [f"[0-9]{{1,{len(digits) - 1}}}"] if len(digits) > 1 else []
    for i, digit in enumerate(digits):  # N's first i digits, a smaller digit, then any digits
        if digit != "0":
            rest = len(digits) - i - 1
            smaller = "0" if digit == "1" else f"[0-{int(digit) - 1}]"
            alternatives.append(digits[:i] + smaller + (f"[0-9]{{{rest}}}" if rest else ""))
    return "^\\s*0*(" + "|".join([*alternatives, digits]) + ")\\s*$"


def _error(description: str) -> dict:
    return {"description": description, "content": JSON_ERROR}


def _number_query(name: str, low: float, high: float, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": "number", "minimum": low, "maximum": high}}


def _params_schema(limits: Limits) -> dict:
    """Each field as JSON Schema (what ``parse_changes`` accepts), no other keys."""
    properties = {}
    for name, spec in schema(limits).items():
        prop = {k: v for k, v in spec.items() if k not in ("note", "default")}
        if "note" in spec:
            prop["description"] = spec["note"]
        properties[name] = prop
    # A prompt is a string, or a blend: a list of [text, weight] pairs (OpenAPI 3.0 has no type lists).
    for name in PROMPT_FIELDS:
        prompt = properties[name]
        text = {"type": "string", "maxLength": prompt["maxLength"], "pattern": "^[^\\u0000]*$"}  # NUL is refused
        blend = {"type": "array", "minItems": 1, "maxItems": prompt["maxItems"],
                 "items": {"type": "array", "minItems": 2, "maxItems": 2, "items": {}}}
        properties[name] = {"anyOf": [text, blend], **{k: v for k, v in prompt.items() if k == "description"}}
    # Seeds reach 2**64-1; OSC and some JSON tools need them as decimal strings.
    for name in ("seed", "seed2"):
        properties[name] = {"anyOf": [properties[name], {"type": "string", "pattern": at_most(SEED_LIMIT - 1)}]}
    # controls: NAME -> a scale, or an object of its fields (only the loaded names).
    controls = properties["controls"]
    fields = {"type": "object", "properties": controls.pop("fields"), "additionalProperties": False}
    scale = fields["properties"]["scale"]
    one = {"anyOf": [{"type": "number", "minimum": scale["minimum"], "maximum": scale["maximum"]}, fields]}
    properties["controls"] = {"type": "object", "properties": {name: one for name in controls["properties"]},
                              "additionalProperties": False, "description": controls["description"]}
    return {"type": "object", "properties": properties, "additionalProperties": False}


def _frame_route(media: str, summary: str) -> dict:
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
            "400": _error("a bad query value"),
            "503": _error("the daemon is stopping"),
        },
    }}


CHANNEL_PARAMETER = {"name": "channel", "in": "path", "required": True, "description": "a channel name",
                     "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,31}$"}}


def _channel_routes(paths: dict, per_channel: frozenset[str]) -> dict:
    """``/v1/channels`` and a copy of every per-stream route under ``/v1/channels/{channel}``."""
    summary = {"200": {"description": "channels", "content": {"application/json": {"schema": {"type": "object"}}}}}
    out = {
        "/v1/channels": {"get": {"summary": "the channels with version, frame counts, device and segment",
                                 "responses": summary}},
        CHANNEL_PREFIX: {
            "get": {"summary": "one channel", "parameters": [CHANNEL_PARAMETER],
                    "responses": {**summary, "404": _error("no such channel")}},
            "delete": {"summary": "remove a channel (not main): segment unlinked, clients told and closed",
                       "parameters": [CHANNEL_PARAMETER],
                       "responses": {**summary, "400": _error("main cannot be deleted"),
                                     "404": _error("no such channel")}},
        },
    }
    for path in sorted(per_channel & set(paths)):
        item = copy.deepcopy(paths[path])
        for method, operation in item.items():
            operation["parameters"] = [CHANNEL_PARAMETER, *operation.get("parameters", [])]
            if path == "/v1/ws":  # connects to a channel not created yet: its first params message creates it
                operation["summary"] += "; a params message creates the channel, as PATCH does"
            else:
                operation["responses"].setdefault("404", _error("no such channel"))
            if method == "patch":
                operation["summary"] += "; creates the channel first (from the initial parameters)"
                operation["responses"]["409"] = _error("creating it would pass --max-channels")
            if path in ("/v1/frame.png", "/v1/frame.rgba"):
                operation["responses"]["410"] = _error("the channel was deleted while waiting")
        out[CHANNEL_PREFIX + path[len("/v1"):]] = item
    return out


def _image_put(what: str, answer: str, more: dict | None = None) -> dict:
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
                      "400": _error("not an image, a bad size, or a bad segment or sender name (no such "
                                    "sender: the message lists the ones there are)"),
                      "408": _error("the body stalled (no data for 10 s); the connection is closed"),
                      "409": _error("Spout or Syphon cannot run on the daemon's machine (the message names the "
                                    "platform and the extra to install)"),
                      "413": _error("too large"),
                      "415": _error("an unsupported Content-Type"),
                      "503": _error("too many large uploads at once (over 1 MiB or of unknown "
                                    "length); retry after Retry-After seconds"),
                      **(more or {})}}


def _style_route() -> dict:
    """/v1/style: the IP-Adapter's style image, taken like the input image (409 without --ip-adapter)."""
    json_object = {"application/json": {"schema": {"type": "object"}}}
    return {
        "put": _image_put("the style image (IP-Adapter; steers while style_scale > 0)",
                          "the style image as the daemon holds it",
                          {"409": _error("no IP-Adapter: start the daemon with --ip-adapter SOURCE; or Spout or "
                                         "Syphon cannot run on the daemon's machine")}),
        "get": {"summary": "the style image's state (enabled, present, active, digest, size, source, scale)",
                "responses": {"200": {"description": "state", "content": json_object}}},
        "delete": {"summary": "drop the style image", "responses": {
            "200": {"description": "cleared", "content": json_object}}},
    }


def _control_routes() -> dict:
    """/v1/control/{name}: the input image's routes, per ControlNet name (404 for an unknown one)."""
    json_object = {"application/json": {"schema": {"type": "object"}}}
    name = {"name": "name", "in": "path", "required": True, "description": "a --controlnet NAME (a ControlNet or a T2I-Adapter)",
            "schema": {"type": "string"}}
    unknown = _error("no ControlNet of that name")
    return {
        "/v1/control": {"get": {"summary": "every loaded ControlNet's control image state", "responses": {
            "200": {"description": "by name", "content": json_object}}}},
        "/v1/control/{name}": {
            "put": {**_image_put("the control image of ControlNet or T2I-Adapter NAME", "the control image as the daemon holds it",
                                 {"404": unknown}), "parameters": [name]},
            "get": {"summary": "its control image's state", "parameters": [name], "responses": {
                "200": {"description": "state", "content": json_object}, "404": unknown}},
            "delete": {"summary": "drop its control image", "parameters": [name], "responses": {
                "200": {"description": "cleared", "content": json_object}, "404": unknown}},
        },
    }


def _record_route() -> dict:
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
                 "responses": {"200": state, "400": _error("not {\"action\": \"start\"|\"stop\"}"),
                               "409": _error("no --output-dir, already recording, not recording, or the folder "
                                             "is gone"),
                               "413": _error("body over 64 KiB")}},
    }


def document(limits: Limits, token: bool, per_channel: frozenset[str] = frozenset()) -> dict:
    """The OpenAPI document for a daemon with these limits (``token``: routes under /v1 need one).

    ``per_channel``: the /v1 paths that also exist under ``/v1/channels/{channel}``.
    """
    params = _params_schema(limits)
    format_query = {"name": "format", "in": "query", "required": False,
                    "schema": {"type": "string", "enum": ["jpeg", "png", "rgba"]}}
    quality_query = {"name": "quality", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 100}}
    doc = {
        "openapi": "3.0.3",
        "info": {"title": "turbo-bridge", "version": "1",
                 "description": "SDXL-Turbo frames for creative tools; OSC and shared memory: docs/reference/osc.md and "
                                "docs/reference/shared-memory.md."},
        "paths": {
            "/": {"get": {"summary": "the live page", "security": [],
                          "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}}}},
            "/static/{name}": {"get": {
                "summary": "the live page's script and style", "security": [],
                "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the file"}, "403": _error("outside the folder"),
                              "404": _error("no such file")}}},
            "/v1/health": {"get": {"summary": "status and counters; model, family (sdxl, sd2, sd15), scheduler, device; startup_s: seconds per start-up phase; with --cluster ray: cluster, workers (id, node, device, pid, state, channels) and each channel's worker", "responses": {
                "200": {"description": "health", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/v1/params": {
                "get": {"summary": "the parameters and the state's version", "responses": {"200": {
                    "description": "params", "content": {"application/json": {"schema": {
                        "type": "object", "required": [*params["properties"], "version"],
                        "properties": {**{k: {} for k in params["properties"]}, "version": {"type": "integer"}}}}}}}},
                "patch": {
                    "summary": "a partial change, applied atomically",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": params}}},
                    "responses": {
                        "200": {"description": "applied", "content": {"application/json": {"schema": {
                            "type": "object", "required": ["version", "warnings"],
                            "properties": {"version": {"type": "integer"},
                                           "warnings": {"type": "array", "items": {"type": "string"}}}}}}},
                        "400": _error("rejected: the state is unchanged"),
                        "408": _error("the body stalled (no data for 10 s); the connection is closed"),
                        "413": _error("body over 64 KiB"),
                    }},
            },
            "/v1/loras": {"get": {
                "summary": "the LoRA files in --lora-dir (rescanned): name, targets (unet, text_encoder, "
                           "text_encoder_2), rank, size in bytes; and the active ones with their weights",
                "responses": {"200": {"description": "LoRAs", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["folder", "loras", "active"],
                    "properties": {
                        "folder": {"type": "string", "nullable": True},
                        "loras": {"type": "array", "items": {"type": "object", "required": [
                            "name", "targets", "rank", "size"], "properties": {
                            "name": {"type": "string"}, "targets": {"type": "array", "items": {"type": "string"}},
                            "rank": {"type": "integer"}, "size": {"type": "integer"},
                            "error": {"type": "string"}}}},
                        "active": {"type": "object", "additionalProperties": {"type": "number"}}}}}}}}}},
            "/v1/frame.png": _frame_route("image/png", "long-poll for a frame, as PNG"),
            "/v1/frame.rgba": _frame_route("application/octet-stream", "long-poll for a frame, raw RGBA8"),
            "/v1/input": {
                "put": _image_put("the input image for image-to-image", "the input as the daemon holds it"),
                "get": {"summary": "the current input (source, size, content digest)", "responses": {
                    "200": {"description": "input", "content": {"application/json": {"schema": {"type": "object"}}}}}},
                "delete": {"summary": "no input: back to text-to-image", "responses": {
                    "200": {"description": "cleared", "content": {"application/json": {"schema": {"type": "object"}}}}}},
            },
            "/v1/record": _record_route(),
            **_control_routes(),
            "/v1/style": _style_route(),
            "/v1/schema": {"get": {"summary": "parameters, OSC addresses and endpoints", "responses": {
                "200": {"description": "schema", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/v1/openapi.json": {"get": {"summary": "this document", "responses": {
                "200": {"description": "OpenAPI 3.0",
                        "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/v1/ws": {"get": {
                "summary": "WebSocket (upgrade): JSON messages in, frames out; see docs/reference/http.md",
                "parameters": [format_query, quality_query],
                "responses": {"101": {"description": "switching protocols"},
                              "400": _error("not a WebSocket upgrade, or a bad format/quality"),
                              "403": _error("opened by a page from another origin")}}},
            "/v1/stream.mjpeg": {"get": {
                "summary": "multipart/x-mixed-replace JPEG, one part per new frame (does not end)",
                "parameters": [quality_query],
                "responses": {"200": {"description": "the stream",
                                      "content": {"multipart/x-mixed-replace": {}}},
                              "400": _error("a bad quality")}}},
        },
        "components": {"schemas": {"Error": {
            "type": "object", "required": ["error"],
            "properties": {"error": {"type": "object", "required": ["field", "message"], "properties": {
                "field": {"type": "string", "nullable": True}, "message": {"type": "string"}}}}}}},
    }
    doc["paths"].update(_channel_routes(doc["paths"], per_channel))
    if token:
        doc["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "query": {"type": "apiKey", "in": "query", "name": "access_token",
                      "description": "/v1/ws and /v1/stream.mjpeg only (browsers cannot set their headers)"},
        }
        doc["security"] = [{"bearer": []}]
        for path in doc["paths"]:
            if path.endswith(("/ws", "/stream.mjpeg")):
                doc["paths"][path]["get"]["security"] = [{"bearer": []}, {"query": []}]
    for path, item in doc["paths"].items():
        for operation in item.values():
            if token and operation.get("security") != []:
                operation["responses"]["401"] = _error("missing or wrong token")
            operation["responses"]["403"] = operation["responses"].get("403") or _error("Host header not allowed")
    return doc


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document(request.app[SCHEDULER].limits, request.app[ACCESS].token is not None,
                                      frozenset(request.app.get(CHANNEL_PATHS, ()))))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/openapi.json", openapi)
