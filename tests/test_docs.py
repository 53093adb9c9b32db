"""The documentation checked against the code: frame schemas, examples, configuration, links."""

from __future__ import annotations

import ast
import json
import re
import subprocess
from pathlib import Path

import pytest
from jsonschema import Draft7Validator

from app import config, errors, protocol
from tests.support import asyncapi
from tests.support.frames import BAD_FRAMES

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


# --- the AsyncAPI document ---------------------------------------------------------------------


def test_asyncapi_document_is_asyncapi_3_shaped():
    doc = asyncapi.document()
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] and doc["info"]["version"]
    addresses = {channel["address"] for channel in doc["channels"].values()}
    assert addresses == {"/ws", "/"}, "the two WebSocket routes of app/websocket.py"
    for name, operation in doc["operations"].items():
        assert operation["action"] in ("send", "receive"), name
        channel_ref = operation["channel"]["$ref"]
        channel = asyncapi.resolve(channel_ref)
        assert channel in doc["channels"].values(), name
        for reference in operation["messages"]:
            # AsyncAPI 3: an operation's messages are messages of its own channel.
            assert reference["$ref"].startswith(channel_ref + "/messages/"), (name, reference)
            asyncapi.resolve(reference["$ref"])
    for name, message in doc["components"]["messages"].items():
        assert message["payload"]["$ref"].startswith("#/components/schemas/"), name
    for name, schema in doc["components"]["schemas"].items():
        Draft7Validator.check_schema(schema)  # raises on a malformed schema
        assert name


def test_both_endpoints_describe_the_same_frames_but_the_history_entries_of_root():
    """/ serves what /ws serves, and the untyped history entries of the earlier server."""
    doc = asyncapi.document()
    by_address = {channel["address"]: channel["messages"] for channel in doc["channels"].values()}
    assert by_address["/"] == {**by_address["/ws"], "server.history_entry": by_address["/"]["server.history_entry"]}
    for action in ("send", "receive"):
        by_channel = {
            op["channel"]["$ref"]: sorted(ref["$ref"].rsplit("/", 1)[-1] for ref in op["messages"])
            for op in doc["operations"].values()
            if op["action"] == action
        }
        root, ws = by_channel["#/channels/root"], by_channel["#/channels/ws"]
        assert sorted(set(root) - {"server.history_entry"}) == ws, action


def test_every_frame_type_the_server_parses_has_a_schema():
    parsed = set(protocol._PARSERS) | set(protocol.TYPE_ALIASES)
    assert asyncapi.client_frame_types() == parsed


def test_every_frame_type_the_server_sends_has_a_schema():
    """Server frames are built in app/protocol.py (and nowhere else, which is checked too)."""
    sent = set(re.findall(r'"type":\s*"(\w+)"', (ROOT / "app" / "protocol.py").read_text()))
    assert asyncapi.server_frame_types() == sent
    for module in (ROOT / "app").glob("*.py"):
        if module.name != "protocol.py":
            assert '{"type": "' not in module.read_text(), f"{module.name} builds a frame: build it in protocol.py"


def test_error_codes_are_the_servers():
    schema = asyncapi.document()["components"]["schemas"]["ErrorCode"]
    assert set(schema["enum"]) == _codes_of(errors.ChatError)


def _codes_of(error: type[errors.ChatError]) -> set[str]:
    """The wire codes of an error class and all its subclasses."""
    return {error.code}.union(*(_codes_of(sub) for sub in error.__subclasses__()))


def test_the_examples_in_the_asyncapi_document_match_their_schemas():
    doc = asyncapi.document()
    checked = 0
    for name, message in doc["components"]["messages"].items():
        for example in message.get("examples", ()):
            check = asyncapi.check_client_frame if name.startswith("client.") else asyncapi.check_server_frame
            check(example["payload"])
            checked += 1
    assert checked


def test_the_frames_shown_in_protocol_md_match_their_schemas():
    """Blocks fenced as ```json client / ```json server hold one frame per line."""
    text = (DOCS / "protocol.md").read_text()
    blocks = re.findall(r"```json (client|server)\n(.*?)```", text, re.S)
    assert len(blocks) >= 10
    for side, body in blocks:
        check = asyncapi.check_client_frame if side == "client" else asyncapi.check_server_frame
        for line in filter(None, (line.strip() for line in body.splitlines())):
            check(json.loads(line))


def test_the_schemas_refuse_the_frames_the_server_refuses_as_ill_formed():
    """The bad frames test_chat sends raw: each one the server calls ill-formed (not a
    matter of state, like not_joined) the schemas refuse too, so they are strict enough."""

    ill_formed = [frame for frame, code, _ in BAD_FRAMES if code in ("invalid", "too_large", "unknown_type")]
    assert len(ill_formed) > 15
    for frame in ill_formed:
        if isinstance(frame, str):
            try:
                frame = json.loads(frame)
            except ValueError:
                continue
        assert asyncapi.refused(frame), frame


def test_the_schemas_accept_what_the_server_accepts_in_other_spellings():
    for frame in (
        {"type": "join", "room": "a.b-c_d", "since": "42"},
        {"type": "dm", "to": "7", "content": "hi"},
        {"type": "direct_message", "to_user_id": 7, "content": "hi"},
        {"type": "room_history", "room": "x", "limit": 1e3},
        {"type": "dm_history", "with": 3, "before": 10, "after": 2},
    ):
        asyncapi.check_client_frame(frame)


# --- the configuration reference -----------------------------------------------------------------


def _documented_settings() -> dict[str, str]:
    """Variable -> its default cell, from the tables of docs/configuration.md."""
    found: dict[str, str] = {}
    for line in (DOCS / "configuration.md").read_text().splitlines():
        row = re.match(r"\| `([A-Z][A-Z0-9_]+)` \| ([^|]*) \|", line)
        if row:
            assert row.group(1) not in found, f"{row.group(1)} documented twice"
            found[row.group(1)] = row.group(2).strip()
    return found


def _gunicorn_settings() -> set[str]:
    """The variables gunicorn.conf.py reads (os.environ.get / os.environ[...])."""
    names = set()
    for node in ast.walk(ast.parse((ROOT / "gunicorn.conf.py").read_text())):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "os.environ.get":
            names.add(node.args[0].value)
    return names


def _shown_default(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str) and value.startswith(str(config.PROJECT_ROOT)):
        return str(Path(value).relative_to(config.PROJECT_ROOT))
    return str(value)


def test_the_configuration_reference_lists_every_setting_with_its_default():
    documented = _documented_settings()
    expected = set(config.DEFAULTS) | _gunicorn_settings()
    assert set(documented) == expected, {
        "undocumented": sorted(expected - set(documented)),
        "documented but unknown": sorted(set(documented) - expected),
    }
    for key, value in config.DEFAULTS.items():
        cell = documented[key]
        if value == "":
            assert cell.startswith("—"), (key, cell)
        else:
            shown = re.match(r"`([^`]*)`", cell)
            assert shown and shown.group(1) == _shown_default(value), (key, cell, _shown_default(value))


# --- links ---------------------------------------------------------------------------------------------


def _markdown_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / name for name in listed.stdout.split() if "node_modules" not in name]


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_markdown_link_points_outside_the_repository(path):
    """A clone has nothing beside it: a link to ../shared or to the web is dead or drifts."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith("#"):
            continue
        assert "://" not in target and not target.startswith(("/", "mailto:")), f"{target} is outside the repository"
        resolved = (path.parent / target.split("#")[0]).resolve()
        assert resolved.is_relative_to(ROOT), f"{target} is outside the repository"
        assert resolved.exists(), f"{target} does not exist"
