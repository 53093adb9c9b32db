"""Frames checked against docs/asyncapi.yaml, so that the reference cannot drift from the code.

The test client calls `check_server_frame` on every frame it reads from a real server and
`check_client_frame` on every frame it sends through its well-formed path (`Client.send`
with a dict). The rule for what the tests send:

- A dict handed to `Client.send` is meant to be a valid frame and is checked: a test that
  sends an ill-formed one by mistake, or a schema that refuses a frame the server serves,
  fails at once.
- A frame a test means to be refused (bad JSON, a missing field, an unknown type, too long
  a content) goes out raw, as a str (`Client.send(json.dumps(frame))`) or through the
  socket itself, and is not checked: those frames exist to break the contract. That the
  schemas refuse them too is asserted once, in tests/test_docs.py.

Frames are matched to their schema by `type`: client frames among the messages of the
`receive` operations (what the server receives), server frames among those of the `send`
operations. A server frame without `type` is matched to the one untyped message (the
history entries that `/` sends after `room_history`). A failure raises AssertionError
naming the message, the field and the frame.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator
from referencing import Registry
from referencing.jsonschema import DRAFT7

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"
# The base URI the document's own `#/components/...` references resolve against.
DOCUMENT_URI = "urn:chat:asyncapi"


@functools.cache
def document() -> dict[str, Any]:
    """docs/asyncapi.yaml, parsed once per test process."""
    return yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))


def resolve(pointer: str) -> Any:
    """What a local reference (`#/a/b`) of the document points at, following `$ref`s."""
    node: Any = document()
    for part in pointer.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    if isinstance(node, dict) and set(node) == {"$ref"}:
        return resolve(node["$ref"])
    return node


@functools.cache
def _validators(action: str) -> dict[str | None, tuple[str, Draft7Validator]]:
    """Frame type (None: untyped) -> (message name, validator) for the messages of every
    operation with this action ("receive": client frames, "send": server frames)."""
    registry = Registry().with_resource(DOCUMENT_URI, DRAFT7.create_resource(document()))
    found: dict[str, tuple[str, Draft7Validator]] = {}
    for operation in document()["operations"].values():
        if operation["action"] != action:
            continue
        for reference in operation["messages"]:
            message = resolve(reference["$ref"])
            payload_ref = message["payload"]["$ref"]
            frame_type = resolve(payload_ref)["properties"].get("type", {}).get("const")
            validator = Draft7Validator({"$ref": DOCUMENT_URI + payload_ref}, registry=registry)
            found.setdefault(frame_type, (reference["$ref"].rsplit("/", 1)[-1], validator))
    return found


def client_frame_types() -> set[str]:
    return set(_validators("receive")) - {None}


def server_frame_types() -> set[str]:
    return set(_validators("send")) - {None}


def _check(frame: Any, action: str, side: str) -> Any:
    untyped = isinstance(frame, dict) and "type" not in frame and None in _validators(action)
    if not untyped and (not isinstance(frame, dict) or not isinstance(frame.get("type"), str)):
        raise AssertionError(f"{side} frame without a string `type` (docs/asyncapi.yaml has none such): {frame!r}")
    entry = _validators(action).get(None if untyped else frame["type"])
    if entry is None:
        raise AssertionError(f"{side} frame of a type docs/asyncapi.yaml does not describe: {_shown(frame)}")
    name, validator = entry
    errors = sorted(validator.iter_errors(frame), key=lambda e: list(e.absolute_path))
    if errors:
        where = ["/".join(map(str, error.absolute_path)) or "(frame)" for error in errors]
        problems = "; ".join(f"{at}: {_cut(error.message)}" for at, error in zip(where, errors[:3], strict=False))
        raise AssertionError(f"{side} frame does not match asyncapi.yaml {name}: {problems}; frame: {_shown(frame)}")
    return frame


def check_server_frame(frame: Any) -> Any:
    """Assert that a frame the server sent matches its schema; return it."""
    return _check(frame, "send", "server")


def check_client_frame(frame: Any) -> Any:
    """Assert that a frame meant to be valid matches its schema; return it."""
    return _check(frame, "receive", "client")


def refused(frame: Any, side: str = "client") -> bool:
    """Whether the schemas refuse a frame (for checking that they catch bad ones)."""
    try:
        _check(frame, "receive" if side == "client" else "send", side)
    except AssertionError:
        return True
    return False


def _shown(frame: Any) -> str:
    return _cut(json.dumps(frame, ensure_ascii=False))


def _cut(text: str, most: int = 300) -> str:
    return text if len(text) <= most else text[:most] + "…"
