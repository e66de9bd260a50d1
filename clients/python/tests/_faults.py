"""A fault-injecting TCP proxy in front of the real server, for the transport and retry tests.

Each request that reaches the proxy takes the next action of its script (then ``forward``):

- ``"forward"``: relay the request to the server and its answer back.
- ``"drop"``: relay the request to the server, read its whole answer, and close the client's
  connection without sending it (a connection that breaks after the commit).
- ``"reset"``: close the client's connection without forwarding anything.
- ``"stall"``: forward nothing and answer nothing until the client gives up.
- ``("answer", status, headers, body)``: answer in the server's stead, as a load balancer or
  proxy in front of chatledger would (a 503 with ``Retry-After``, an HTML 502 page).
- ``("cut", n)``: relay the request, then only the first ``n`` bytes of the answer.

Every request is recorded (method, target, headers, body). One request per connection: the
proxy asks the server to close after each answer.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


def _read_request(conn: socket.socket) -> tuple[bytes, Seen] | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        rest += chunk
    kept = [line for line in lines[1:] if not line.lower().startswith("connection:")]
    raw = ("\r\n".join([lines[0], *kept, "Connection: close"]) + "\r\n\r\n").encode("latin-1") + rest
    return raw, Seen(method, target, headers, rest)


@dataclass
class FaultProxy:
    upstream: str
    script: list[Any] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        parts = urlsplit(self.upstream)
        self._upstream = (parts.hostname, parts.port)
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def keys(self) -> list[str | None]:
        return [s.headers.get("idempotency-key") for s in self.seen]

    def _next_action(self) -> Any:
        with self._lock:
            return self.script.pop(0) if self.script else "forward"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _relay(self, raw: bytes) -> bytes:
        with socket.create_connection(self._upstream, timeout=30) as up:
            up.sendall(raw)
            answer = b""
            while True:
                chunk = up.recv(65536)
                if not chunk:
                    return answer
                answer += chunk

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            request = _read_request(conn)
            if request is None:
                return
            raw, seen = request
            with self._lock:
                self.seen.append(seen)
            action = self._next_action()
            if action == "forward":
                conn.sendall(self._relay(raw))
            elif action == "drop":
                self._relay(raw)
            elif action == "reset":
                pass
            elif action == "stall":
                conn.settimeout(0.1)
                while not self._stop.is_set():
                    try:
                        if not conn.recv(1):
                            return  # the client gave up and closed
                    except socket.timeout:
                        continue
                    except OSError:
                        return
            elif action[0] == "answer":
                _, status, headers, body = action
                lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in headers.items()]
                lines += [f"Content-Length: {len(body)}", "Connection: close"]
                conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
            elif action[0] == "cut":
                conn.sendall(self._relay(raw)[: action[1]])
            else:  # pragma: no cover
                raise ValueError(f"unknown action {action!r}")

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(5)


def closed_port_url() -> str:
    """A loopback URL nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
