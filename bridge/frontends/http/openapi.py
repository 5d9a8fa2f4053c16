"""``GET /v1/openapi.json``: a hand-written OpenAPI 3.0 document of the HTTP routes.

Parameters come from ``params.schema`` (so ranges follow ``--max-size``; ``openapi_params.py``), the
route groups that several paths share from ``openapi_paths.py``; the rest mirrors ``rest`` and ``live``.
``tests/frontends/http/test_openapi.py`` checks it lists exactly the routes the app serves;
schemathesis fuzzes the daemon from it (docs/reliability.md).
"""

from __future__ import annotations

from aiohttp import web

from ...core.params import Limits
from ..security import ACCESS
from .openapi_params import params_schema
from .openapi_paths import (
    channel_routes,
    control_routes,
    error_answer,
    frame_route,
    image_put,
    record_route,
    style_route,
)
from .rest import CHANNEL_PATHS, SCHEDULER


def document(limits: Limits, token: bool, per_channel: frozenset[str] = frozenset()) -> dict:
    """The OpenAPI document for a daemon with these limits (``token``: routes under /v1 need one).

    ``per_channel``: the /v1 paths that also exist under ``/v1/channels/{channel}``.
    """
    params = params_schema(limits)
    format_query = {"name": "format", "in": "query", "required": False,
                    "schema": {"type": "string", "enum": ["jpeg", "png", "rgba"]}}
    quality_query = {"name": "quality", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 100}}
    doc = {
        "openapi": "3.0.3",
        "info": {"title": "turbo-bridge", "version": "1",
                 "description": "SDXL-Turbo frames for creative tools; OSC and shared memory: docs/reference/osc.md "
                                "and docs/reference/shared-memory.md."},
        "paths": {
            "/": {"get": {"summary": "the live page", "security": [],
                          "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}}}},
            "/static/{name}": {"get": {
                "summary": "the live page's script and style", "security": [],
                "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the file"}, "403": error_answer("outside the folder"),
                              "404": error_answer("no such file")}}},
            "/v1/health": {"get": {"summary": "status and counters; model, family (sdxl, sd2, sd15), scheduler, "
                                              "device; startup_s: seconds per start-up phase; with --cluster ray: "
                                              "cluster, workers (id, node, device, pid, state, channels) and each "
                                              "channel's worker", "responses": {
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
                        "400": error_answer("rejected: the state is unchanged"),
                        "408": error_answer("the body stalled (no data for 10 s); the connection is closed"),
                        "413": error_answer("body over 64 KiB"),
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
            "/v1/frame.png": frame_route("image/png", "long-poll for a frame, as PNG"),
            "/v1/frame.rgba": frame_route("application/octet-stream", "long-poll for a frame, raw RGBA8"),
            "/v1/input": {
                "put": image_put("the input image for image-to-image", "the input as the daemon holds it"),
                "get": {"summary": "the current input (source, size, content digest)", "responses": {
                    "200": {"description": "input", "content": {"application/json": {"schema": {"type": "object"}}}}}},
                "delete": {"summary": "no input: back to text-to-image", "responses": {
                    "200": {"description": "cleared",
                            "content": {"application/json": {"schema": {"type": "object"}}}}}},
            },
            "/v1/record": record_route(),
            **control_routes(),
            "/v1/style": style_route(),
            "/v1/schema": {"get": {"summary": "parameters, OSC addresses and endpoints", "responses": {
                "200": {"description": "schema", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/v1/openapi.json": {"get": {"summary": "this document", "responses": {
                "200": {"description": "OpenAPI 3.0",
                        "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/v1/ws": {"get": {
                "summary": "WebSocket (upgrade): JSON messages in, frames out; see docs/reference/http.md",
                "parameters": [format_query, quality_query],
                "responses": {"101": {"description": "switching protocols"},
                              "400": error_answer("not a WebSocket upgrade, or a bad format/quality"),
                              "403": error_answer("opened by a page from another origin")}}},
            "/v1/stream.mjpeg": {"get": {
                "summary": "multipart/x-mixed-replace JPEG, one part per new frame (does not end)",
                "parameters": [quality_query],
                "responses": {"200": {"description": "the stream",
                                      "content": {"multipart/x-mixed-replace": {}}},
                              "400": error_answer("a bad quality")}}},
        },
        "components": {"schemas": {"Error": {
            "type": "object", "required": ["error"],
            "properties": {"error": {"type": "object", "required": ["field", "message"], "properties": {
                "field": {"type": "string", "nullable": True}, "message": {"type": "string"}}}}}}},
    }
    doc["paths"].update(channel_routes(doc["paths"], per_channel))
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
    for item in doc["paths"].values():
        for operation in item.values():
            if token and operation.get("security") != []:
                operation["responses"]["401"] = error_answer("missing or wrong token")
            operation["responses"]["403"] = operation["responses"].get("403") or error_answer("Host header not allowed")
    return doc


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document(request.app[SCHEDULER].limits, request.app[ACCESS].token is not None,
                                      frozenset(request.app.get(CHANNEL_PATHS, ()))))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/openapi.json", openapi)
