"""The OpenAPI document: served, valid in shape, and listing exactly the routes the app serves."""

import aiohttp

from bridge.core.errors import ValidationError
from bridge.core.params import FIELDS, Limits, parse_changes
from bridge.frontends.http.openapi import document
from conftest import null_factory


def served_routes(app) -> set[tuple[str, str]]:
    routes = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        routes.add((route.method.lower(), route.resource.canonical))
    return routes


async def test_document_lists_exactly_the_served_routes(config, daemon_factory):
    async with daemon_factory(config, renderer_factory=null_factory) as daemon:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            async with session.get("/v1/openapi.json") as r:
                doc = await r.json()
        documented = {(method, path) for path, item in doc["paths"].items() for method in item}
        assert documented == served_routes(daemon.app)
    assert doc["openapi"].startswith("3.0") and "security" not in doc  # no token: no security scheme
    body = doc["paths"]["/v1/params"]["patch"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["additionalProperties"] is False
    assert body["properties"]["width"]["maximum"] == config.max_size == 256  # follows --max-size


def test_params_schema_matches_what_parsing_accepts():
    schema = document(Limits(512), token=False)["paths"]["/v1/params"]["patch"]["requestBody"]["content"][
        "application/json"]["schema"]["properties"]
    assert set(schema) == set(FIELDS)
    for field, spec in schema.items():
        if "maximum" in spec and spec.get("type") == "integer":
            parse_changes({field: spec["maximum"]}, Limits(512))
            assert _refused({field: spec["maximum"] + spec.get("multipleOf", 1)})
            assert _refused({field: spec["minimum"] - spec.get("multipleOf", 1)})
    assert _refused({"prompt": "x" * (schema["prompt"]["anyOf"][0]["maxLength"] + 1)})
    parse_changes({"seed": "18446744073709551615"})  # the string form the schema documents


def _refused(change) -> bool:
    try:
        parse_changes(change, Limits(512))
    except ValidationError:
        return True
    return False


def test_a_token_adds_the_security_schemes():
    doc = document(Limits(), token=True)
    assert doc["security"] == [{"bearer": []}]
    assert doc["paths"]["/"]["get"]["security"] == [] and "401" not in doc["paths"]["/"]["get"]["responses"]
    assert {"query": []} in doc["paths"]["/v1/ws"]["get"]["security"]
    assert "401" in doc["paths"]["/v1/params"]["patch"]["responses"]
