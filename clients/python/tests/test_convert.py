"""The message <-> entry mapping, without a server (through real JSON encoding)."""

from __future__ import annotations

import datetime
import json
import math

import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    HumanMessageChunk,
    SystemMessage,
    ToolMessage,
)

from chatledger import Entry
from chatledger.langchain import MessageEncodingError, entry_to_message, message_to_entry

from messages import every_message_type


def through_the_wire(message: BaseMessage, seq: int = 1) -> BaseMessage:
    wire = message_to_entry(message)
    # What the server stores and returns: strict JSON (it refuses NaN/Infinity and
    # numbers beyond 2^53-1, which the test checks are not sent).
    text = json.dumps(wire, allow_nan=False)
    decoded = json.loads(text)
    _assert_i_json(decoded)
    entry = Entry.from_json(
        {
            "seq": seq,
            "kind": "message",
            "created_at": "2026-11-21T10:15:30.123456Z",
            "idempotency_key": None,
            **decoded,
        }
    )
    return entry_to_message(entry)


def _assert_i_json(value: object) -> None:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, (int, float)):
        assert math.isfinite(value) and abs(value) <= 2**53 - 1, value
    elif isinstance(value, dict):
        for item in value.values():
            _assert_i_json(item)
    elif isinstance(value, list):
        for item in value:
            _assert_i_json(item)


@pytest.mark.parametrize("message", every_message_type(), ids=lambda m: type(m).__name__)
def test_every_message_type_round_trips_exactly(message: BaseMessage) -> None:
    back = through_the_wire(message)
    assert type(back) is type(message)
    assert back == message
    assert back.model_dump() == message.model_dump()


def test_roles() -> None:
    roles = {type(m).__name__ + getattr(m, "role", ""): message_to_entry(m)["role"] for m in [
        HumanMessage("a"), AIMessage("a"), AIMessageChunk(content="a"), SystemMessage("a"),
        ToolMessage("a", tool_call_id="c"), FunctionMessage(name="f", content="a"),
        ChatMessage(role="critic", content="a"), ChatMessage(role="assistant", content="a"),
        ChatMessage(role="developer", content="a"),
    ]}
    assert roles == {
        "HumanMessage": "user", "AIMessage": "assistant", "AIMessageChunk": "assistant",
        "SystemMessage": "system", "ToolMessage": "tool", "FunctionMessage": "tool",
        "ChatMessagecritic": "user", "ChatMessageassistant": "assistant",
        "ChatMessagedeveloper": "system",
    }


def test_numbers_outside_i_json_travel_as_strings_and_come_back() -> None:
    message = AIMessage(
        content=[{"type": "text", "text": "x", "n": 2**64, "neg": -(2**60)}, "bare"],
        additional_kwargs={"inf": math.inf, "ninf": -math.inf, "nan": math.nan,
                           "negzero": -0.0, "huge": 1e300, "ok": [1.5, 2**53 - 1, 0.0]},
        usage_metadata={"input_tokens": 2**62, "output_tokens": 1, "total_tokens": 2**62 + 1},
    )
    wire = message_to_entry(message)
    assert wire["content"][0]["n"] == str(2**64)
    back = through_the_wire(message)
    assert back.content == message.content
    kwargs = back.additional_kwargs
    assert math.isnan(kwargs["nan"]) and kwargs["inf"] == math.inf and kwargs["ninf"] == -math.inf
    assert math.copysign(1.0, kwargs["negzero"]) < 0 and kwargs["huge"] == 1e300
    assert kwargs["ok"] == [1.5, 2**53 - 1, 0.0] and isinstance(kwargs["ok"][1], int)
    assert back.usage_metadata == message.usage_metadata


@pytest.mark.parametrize(
    "message",
    [
        ToolMessage("r", tool_call_id="c", artifact=object()),
        AIMessage("x", additional_kwargs={"when": datetime.datetime(2026, 1, 1)}),
        AIMessage("x", additional_kwargs={"raw": b"bytes"}),
        AIMessage("x", additional_kwargs={"map": {1: "int key"}}),
    ],
    ids=["artifact-object", "datetime", "bytes", "int-key"],
)
def test_what_is_not_json_is_refused_loudly(message: BaseMessage) -> None:
    with pytest.raises(MessageEncodingError) as caught:
        message_to_entry(message)
    assert "cannot store" in str(caught.value)


def test_entries_of_other_clients_become_the_message_of_their_role() -> None:
    def entry(role: str, metadata: dict) -> Entry:
        return Entry.from_json({"seq": 3, "kind": "message", "role": role, "content": "c",
                                "metadata": metadata, "created_at": "2026-11-21T10:15:30.123456Z"})

    assert entry_to_message(entry("user", {})) == HumanMessage("c")
    assert entry_to_message(entry("assistant", {})) == AIMessage("c")
    assert entry_to_message(entry("system", {})) == SystemMessage("c")
    tool = entry_to_message(entry("tool", {"tool_call_id": "call-9", "x": 1}))
    assert isinstance(tool, ToolMessage) and tool.tool_call_id == "call-9"
    assert tool.response_metadata == {"chatledger_metadata": {"tool_call_id": "call-9", "x": 1}}


def test_extra_metadata_sits_beside_the_langchain_part() -> None:
    wire = message_to_entry(HumanMessageChunk(content="x"), {"bot": "support", "langchain": "no"})
    assert wire["metadata"]["bot"] == "support"
    assert wire["metadata"]["langchain"]["type"] == "HumanMessageChunk"
