"""The parameters as OpenAPI 3.0 JSON Schema: ``params.schema`` with what OpenAPI 3.0 cannot say
otherwise (type lists, seeds as decimal strings, ControlNets as a scale or an object) spelled out.
"""

from __future__ import annotations

from ...core.params import PROMPT_FIELDS, SEED_LIMIT, Limits, schema


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


def params_schema(limits: Limits) -> dict:
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
