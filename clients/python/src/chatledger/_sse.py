"""Server-sent events, sans I/O: feed bytes, get complete events (for the live tail)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Event", "EventParser"]


@dataclass(frozen=True)
class Event:
    id: str | None
    event: str
    data: str


class EventParser:
    """The text/event-stream format (WHATWG): ``field: value`` lines, an empty line ends an
    event, lines starting with ``:`` are comments (keep-alives)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._id: str | None = None
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[Event]:
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        events = []
        for raw in lines:
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            if not line:
                if self._data or self._event:
                    events.append(Event(self._id, self._event or "message", "\n".join(self._data)))
                self._event, self._data = "", []
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "data":
                self._data.append(value)
            elif name == "event":
                self._event = value
            elif name == "id" and "\0" not in value:
                self._id = value
        return events
