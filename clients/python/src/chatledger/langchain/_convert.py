"""Lossless mapping between LangChain messages and chatledger entries.

An entry keeps what any reader understands: ``role`` and ``content``. Everything
LangChain-specific (the message type, ids, names, tool calls, tool call chunks, usage,
response metadata, additional kwargs, artifacts, and any field a later LangChain version
adds) goes into ``metadata["langchain"]``::

    {"v": 1, "type": "ai", "data": {...every field but content and type...},
     "fixups": [["content" | "data", [path...], "int" | "float", "<text>"], ...]}

``data`` is the message's ``model_dump()`` without the fields that are at their default value
(they come back as that default; entries that list them are read the same). chatledger stores I-JSON: numbers beyond
±(2^53-1), infinities, NaN and -0.0 cannot travel as JSON numbers, so they are sent as
strings and listed in ``fixups``, which restores them exactly. Anything that is not JSON (a
datetime, bytes, an arbitrary object in ``artifact``, a non-string dict key) is refused with
:class:`MessageEncodingError` before anything is sent: a serializer that quietly drops or
mangles data is precisely the failure this project exists to prevent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    messages_from_dict,
)

from pydantic_core import PydanticUndefined

from .._errors import ChatLedgerError
from .._models import Entry

__all__ = [
    "METADATA_KEY",
    "MessageEncodingError",
    "entry_to_message",
    "message_of_entry",
    "message_to_entry",
]

METADATA_KEY = "langchain"
_FORMAT_VERSION = 1
_MAX_SAFE_INT = 2**53 - 1

# LangChain message type -> chatledger role. Types not listed (chat messages with a custom
# role, future types) are mapped by _role_of.
_ROLE_BY_TYPE = {
    "human": "user",
    "HumanMessageChunk": "user",
    "ai": "assistant",
    "AIMessageChunk": "assistant",
    "system": "system",
    "SystemMessageChunk": "system",
    "tool": "tool",
    "ToolMessageChunk": "tool",
    "function": "tool",
    "FunctionMessageChunk": "tool",
    "remove": "system",
}
_ROLE_ALIASES = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "model": "assistant",
    "system": "system",
    "developer": "system",
    "tool": "tool",
    "function": "tool",
}


class MessageEncodingError(ChatLedgerError, TypeError):
    """A message holds something chatledger cannot store losslessly (not JSON)."""


def _role_of(message: BaseMessage) -> str:
    role = _ROLE_BY_TYPE.get(message.type)
    if role is not None:
        return role
    custom = getattr(message, "role", None)
    if isinstance(custom, str):
        # ChatMessage with an arbitrary role: the original role is kept in metadata.
        return _ROLE_ALIASES.get(custom.lower(), "user")
    return "user"


def _encode(value: Any, path: list[Any], fixups: list[list[Any]], root: str) -> Any:
    """A JSON value chatledger accepts, recording in ``fixups`` what had to become a string."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT:
            return value
        fixups.append([root, list(path), "int", str(value)])
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and abs(value) <= _MAX_SAFE_INT and not (
            value == 0.0 and math.copysign(1.0, value) < 0
        ):
            return value
        fixups.append([root, list(path), "float", repr(value)])
        return repr(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise MessageEncodingError(
                    f"cannot store a {type(key).__name__} dict key at {_where(root, path)}: "
                    "JSON object keys are strings"
                )
            out[key] = _encode(item, [*path, key], fixups, root)
        return out
    if isinstance(value, (list, tuple)):
        return [_encode(item, [*path, i], fixups, root) for i, item in enumerate(value)]
    raise MessageEncodingError(
        f"cannot store a {type(value).__name__} at {_where(root, path)}: chatledger stores "
        "JSON (convert it to a JSON value first)"
    )


def _where(root: str, path: list[Any]) -> str:
    return root + "".join(f"[{p!r}]" for p in path)


_DEFAULTS: dict[type, dict[str, Any]] = {}


def _defaults_of(cls: type) -> dict[str, Any]:
    """The fields of a message class that have a plain default, with that default."""
    found = _DEFAULTS.get(cls)
    if found is None:
        found = {}
        for name, info in getattr(cls, "model_fields", {}).items():
            if info.default_factory is not None:
                try:
                    found[name] = info.default_factory()  # type: ignore[call-arg]
                except TypeError:
                    continue  # a factory that needs the other fields: always stored
            elif info.default is not PydanticUndefined:
                found[name] = info.default
        _DEFAULTS[cls] = found
    return found


def message_to_entry(
    message: BaseMessage, extra_metadata: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The chatledger message (``role``, ``content``, ``metadata``) for a LangChain message."""
    if not isinstance(message, BaseMessage):
        raise MessageEncodingError(
            f"expected a LangChain BaseMessage, got {type(message).__name__}"
        )
    dumped = message.model_dump()
    content = dumped.pop("content")
    message_type = dumped.pop("type")
    # Fields at their default come back as that default: leave them out (smaller entries,
    # quicker to read back). Same value and same type only: 0 is not False.
    defaults = _defaults_of(type(message))
    for name in [k for k, v in dumped.items() if k in defaults]:
        default = defaults[name]
        value = dumped[name]
        if type(value) is type(default) and value == default:
            del dumped[name]
    fixups: list[list[Any]] = []
    wire_content = _encode(content, [], fixups, "content")
    if not isinstance(wire_content, (str, list)):
        raise MessageEncodingError(
            f"message content must be a string or a list, not {type(content).__name__}"
        )
    data = _encode(dumped, [], fixups, "data")
    langchain_part: dict[str, Any] = {"v": _FORMAT_VERSION, "type": message_type, "data": data}
    if fixups:
        langchain_part["fixups"] = fixups
    metadata: dict[str, Any] = {}
    if extra_metadata:
        # Sent as given: the server refuses (loudly) what is not I-JSON.
        metadata.update(extra_metadata)
    metadata[METADATA_KEY] = langchain_part
    return {"role": _role_of(message), "content": wire_content, "metadata": metadata}


def _restore(container: Any, path: list[Any], kind: str, text: str) -> Any:
    value: Any = int(text) if kind == "int" else float(text)
    if not path:
        return value
    target = container
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return container


def _message_classes() -> dict[str, type[BaseMessage]]:
    # What langchain_core.messages.messages_from_dict maps, without its per-call dispatch.
    from langchain_core import messages as m

    names = {
        "human": "HumanMessage",
        "ai": "AIMessage",
        "system": "SystemMessage",
        "chat": "ChatMessage",
        "function": "FunctionMessage",
        "tool": "ToolMessage",
        "remove": "RemoveMessage",
        "AIMessageChunk": "AIMessageChunk",
        "HumanMessageChunk": "HumanMessageChunk",
        "FunctionMessageChunk": "FunctionMessageChunk",
        "ToolMessageChunk": "ToolMessageChunk",
        "SystemMessageChunk": "SystemMessageChunk",
        "ChatMessageChunk": "ChatMessageChunk",
    }
    return {t: getattr(m, n) for t, n in names.items() if hasattr(m, n)}


_CLASSES = _message_classes()


def message_of_entry(entry: dict[str, Any], *, copy_parts: bool = False) -> BaseMessage:
    """The LangChain message of an entry given as its JSON object (what the API returns,
    in either view). Builds the message from the parsed JSON directly: the parts are
    owned by the caller and used as they are, unless ``copy_parts`` (or fixups to apply)."""
    if entry.get("kind", "message") != "message":
        raise ValueError(f"entry {entry.get('seq')} is a {entry.get('kind')}, not a message")
    metadata = entry.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    content: Any = entry.get("content")
    if content is None:
        content = ""
    part = metadata.get(METADATA_KEY)
    if isinstance(part, dict):
        message_type = part.get("type")
        data = part.get("data")
        if isinstance(message_type, str) and isinstance(data, dict):
            fixups = part.get("fixups")
            if copy_parts or fixups:
                import copy

                data = copy.deepcopy(data)
                content = copy.deepcopy(content)
            else:
                data = dict(data)
            for root, path, kind, text in fixups or ():
                if root == "content":
                    content = _restore(content, path, kind, text)
                else:
                    data = _restore(data, path, kind, text)
            data["content"] = content
            cls = _CLASSES.get(message_type)
            try:
                if cls is not None:
                    return cls(**data)
                return messages_from_dict([{"type": message_type, "data": data}])[0]
            except Exception as exc:
                raise ValueError(
                    f"entry {entry.get('seq')} has langchain metadata this version cannot read "
                    f"(type {message_type!r}): {exc}"
                ) from exc
    extra: dict[str, Any] = {}
    if metadata:
        extra["chatledger_metadata"] = metadata
    if entry.get("erased"):
        extra["chatledger_erased"] = True
    role = entry.get("role")
    if role == "user":
        return HumanMessage(content=content, response_metadata=extra)
    if role == "assistant":
        return AIMessage(content=content, response_metadata=extra)
    if role == "system":
        return SystemMessage(content=content, response_metadata=extra)
    if role == "tool":
        tool_call_id = metadata.get("tool_call_id")
        return ToolMessage(
            content=content,
            tool_call_id=tool_call_id if isinstance(tool_call_id, str) else "",
            response_metadata=extra,
        )
    raise ValueError(f"entry {entry.get('seq')} has an unknown role {role!r}")


def entry_to_message(entry: Entry) -> BaseMessage:
    """The LangChain message an entry stands for.

    Entries written through this module come back exactly as they were given. Entries
    written by other clients (no ``metadata["langchain"]``) become the message of their role
    (``user`` -> ``HumanMessage``, ``assistant`` -> ``AIMessage``, ``system`` ->
    ``SystemMessage``, ``tool`` -> ``ToolMessage`` with ``metadata["tool_call_id"]``), with
    the entry's metadata in ``response_metadata["chatledger_metadata"]`` (and
    ``response_metadata["chatledger_erased"]`` for an erased entry). The entry is not
    changed, nor shared with the message.
    """
    if entry.kind != "message":
        raise ValueError(f"entry {entry.seq} is a {entry.kind}, not a message")
    return message_of_entry(
        {
            "seq": entry.seq,
            "kind": entry.kind,
            "role": entry.role,
            "content": entry.content,
            "metadata": entry.metadata,
            "erased": entry.erased,
        },
        copy_parts=True,
    )
