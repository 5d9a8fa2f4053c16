"""Rewrite the generated tables of docs/reference/*.md from the code, or check them (``--check``).

A generated table sits between ``<!-- generated: NAME -->`` and ``<!-- end: NAME -->``; the rest of
those files is written by hand. NAME is one of ``TABLES``: the command line (``bridge.cli``'s
parser), the parameters (``bridge.core.params.schema``), the OSC addresses and the HTTP routes (as
``GET /v1/schema`` and ``GET /v1/openapi.json`` serve them) and the fields of ``GET /v1/record``.
``tests/test_docs.py`` runs the check, so docs that disagree with the code fail the suite.

    python docs/generate.py            # rewrite the tables
    python docs/generate.py --check    # exit 1, naming each stale table, if any differs
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference"
MARKED = re.compile(r"(<!-- generated: (?P<name>[a-z-]+) -->\n)(?P<body>.*?)(<!-- end: (?P=name) -->)", re.S)


def osc_addresses() -> dict:
    """Address -> arguments and meaning, as the daemon serves them (the one place to repoint)."""
    from bridge.frontends.osc.addresses import schema

    return schema()


def cell(text) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def table(head: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]) + "\n"


# -- the command line ------------------------------------------------------------------------------
def _commands() -> dict[str, argparse.ArgumentParser]:
    from bridge.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # argparse has no public way
    return {"": parser, **sub.choices}


def _default(action: argparse.Action) -> str:
    if isinstance(action, argparse._StoreTrueAction):
        return "off"
    if action.default in (None, [], argparse.SUPPRESS):
        return "-"
    return f"`{action.default}`" if action.default != "" else '`""`'


def _option(action: argparse.Action) -> str:
    if not action.option_strings:  # latency's "-- SERVE OPTIONS"
        return "`-- SERVE-OPTIONS`"
    value = "" if action.nargs == 0 else " " + (action.metavar or (
        "{" + ",".join(action.choices) + "}" if action.choices else action.dest.upper()))
    return " / ".join(f"`{name}{value}`" for name in action.option_strings)


def options(command: str) -> str:
    parser = _commands()[command]
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) or action.help == argparse.SUPPRESS:
            continue  # a hidden option is kept only to answer an old script (bench --precision)
        meaning = action.help or ""
        rows.append([_option(action), _default(action), meaning.replace("%%", "%")])
    return table(["option", "default", "meaning"], rows)


# -- parameters ------------------------------------------------------------------------------------
def _range(spec: dict) -> str:
    parts = []
    if "enum" in spec:
        parts.append(" / ".join(f"`{v}`" for v in spec["enum"]))
    if "minimum" in spec or "maximum" in spec:
        parts.append(f"{spec.get('minimum', '')} to {spec.get('maximum', '')}")
    if "multipleOf" in spec:
        parts.append(f"multiples of {spec['multipleOf']}")
    if "maxLength" in spec:
        parts.append(f"up to {spec['maxLength']} characters")
    if "maxItems" in spec:
        parts.append(f"a blend of up to {spec['maxItems']} `[text, weight]` pairs")
    if "maxProperties" in spec:
        weight = spec.get("additionalProperties", {})
        parts.append(f"up to {spec['maxProperties']} names, weights {weight.get('minimum')} to {weight.get('maximum')}")
    if "fields" in spec:
        parts.append("NAME -> " + ", ".join(f"`{f}` {_range(s)}" for f, s in spec["fields"].items()))
    return "; ".join(parts)


def parameters() -> str:
    from bridge.core.params import Limits, schema

    rows = []
    for name, spec in schema(Limits(style=True)).items():  # style: style_scale's range with an IP-Adapter
        kind = spec.get("type", "string")
        kind = " or ".join(kind) if isinstance(kind, list) else kind
        rows.append([f"`{name}`", kind, _range(spec), f"`{json.dumps(spec['default'])}`", spec.get("note", "")])
    return table(["name", "type", "range", "default", "meaning"], rows)


# -- OSC and HTTP ----------------------------------------------------------------------------------
def osc() -> str:
    addresses = osc_addresses()
    rows = [[f"`{address}`", meaning] for address, meaning in addresses.items() if not isinstance(meaning, dict)]
    rows += [[f"feedback: `{name}`", text] for meaning in addresses.values() if isinstance(meaning, dict)
             for name, text in meaning.items()]  # what the daemon sends back: after what it takes
    return table(["address", "arguments and meaning"], rows)


def routes() -> str:
    from bridge.core.params import Limits
    from bridge.frontends.http.openapi import document

    rows = [[f"`{method.upper()} {path}`", operation.get("summary", "")]
            for path, item in document(Limits(), token=False)["paths"].items() for method, operation in item.items()]
    return table(["request", "answer"], rows)


def record_fields() -> str:
    from bridge.outputs.record import state_fields

    return table(["field", "meaning"], [[f"`{name}`", meaning] for name, meaning in state_fields().items()])


TABLES = {"global-options": lambda: options(""), "serve-options": lambda: options("serve"),
          "bench-options": lambda: options("bench"), "latency-options": lambda: options("latency"),
          "parameters": parameters, "osc-addresses": osc, "http-routes": routes,
          "record-fields": record_fields}


def rewrite(text: str, where: str, made: dict[str, str]) -> tuple[str, list[str]]:
    """``text`` with its generated tables made afresh, and the names of those that differed."""
    stale = []

    def fill(match: re.Match) -> str:
        name = match["name"]
        if name not in TABLES:
            raise SystemExit(f"{where}: unknown generated table {name!r} (known: {', '.join(TABLES)})")
        if name not in made:
            made[name] = TABLES[name]()
        if match["body"] != made[name]:
            stale.append(name)
        return match.group(1) + made[name] + match.group(4)

    return MARKED.sub(fill, text), stale


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table is stale")
    parser.add_argument("--docs", type=Path, default=REFERENCE, help="the folder of reference pages")
    args = parser.parse_args(argv)
    made: dict[str, str] = {}
    stale, used = [], set()
    for path in sorted(args.docs.glob("*.md")):
        text = path.read_text()
        used |= {m["name"] for m in MARKED.finditer(text)}
        fresh, names = rewrite(text, str(path), made)
        stale += [f"{path.relative_to(args.docs.parent)}: table {name}" for name in names]
        if names and not args.check:
            path.write_text(fresh)
    missing = sorted(set(TABLES) - used)
    if missing:
        print(f"no page of {args.docs} holds the generated table(s) {', '.join(missing)}", file=sys.stderr)
        return 1
    for where in stale:
        print(f"{where} {'differs from the code: run python docs/generate.py' if args.check else 'rewritten'}",
              file=sys.stderr)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # the bridge package of this checkout, wherever it runs from
    sys.exit(main(sys.argv[1:]))
