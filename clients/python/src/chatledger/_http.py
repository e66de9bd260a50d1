"""A lean HTTP/1.1 client for one server: what chatledger's API needs and nothing more.

One sans-I/O response parser (generators that ask for "a line", "exactly n bytes" or "some
bytes" and are fed the answer) is driven by two thin transports: :class:`SyncTransport` on
blocking sockets (thread-safe, one pool of keep-alive connections) and
:class:`AsyncTransport` on non-blocking sockets through the running event loop (one pool per
event loop, so a client can be shared by every loop of a process). TLS is supported on both.
What it does not do (proxies, HTTP/2, redirects, cookies, compression) chatledger does not
need; pass an ``httpx`` client as ``http_client=`` for a proxy or a custom transport
(:class:`HttpxTransport`, :class:`AsyncHttpxTransport`).

Per request this costs a fraction of a general-purpose client's CPU: the constant headers
are rendered once, the request goes out in one ``sendall``, the answer is read with C-level
line and block reads.

Failures are reported as :class:`TransportError` with the :class:`~chatledger._retry.Outcome`
the retry engine needs (``CONNECT_FAILED``: nothing was sent; ``TIMEOUT`` /
``CONNECTION_LOST``: the request may have been received). A pooled connection that the server
closed while it was idle (keep-alive timeout) is replaced transparently, once, when it fails
before the first byte of an answer. A request that must not reach the server twice
(``fresh=True``: the calls the retry engine resends only when nothing was sent) goes out on a
new connection instead, so that no such resend can happen.
"""

from __future__ import annotations

import asyncio
import collections
import os
import select
import socket
import ssl
import sys
import time
import weakref
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import Any
from urllib.parse import urlsplit

from ._errors import NetworkError, UnexpectedResponse
from ._retry import Outcome

__all__ = [
    "AsyncHttpxTransport",
    "AsyncTransport",
    "HttpxTransport",
    "Response",
    "SyncTransport",
    "TransportError",
]

_LINE, _EXACT, _SOME, _DATA = 0, 1, 2, 3
_MAX_LINE = 65536
_MAX_HEADERS = 128
_CHUNK = 65536
_MAX_IDLE = 64


class TransportError(Exception):
    """One attempt failed below HTTP. ``outcome`` says how far it got."""

    def __init__(self, outcome: Outcome, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.__cause__ = cause
        self.__suppress_context__ = True


class _EOF(Exception):
    """The peer closed the connection where the protocol needs more bytes."""


class _Reused(Exception):
    """The connection failed before the first byte of an answer (``cause`` says how)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Response:
    """An answer: ``status``, ``headers`` (lower-case names) and ``body``; for a streamed
    2xx answer ``body`` is ``None`` and :meth:`iter_chunks` / :meth:`aiter_chunks` yield it."""

    __slots__ = ("status", "headers", "body", "_chunks", "_close")

    def __init__(
        self,
        status: int,
        headers: dict[str, str],
        body: bytes | None,
        chunks: Any = None,
        close: Callable[[], Any] | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self._chunks = chunks
        self._close = close

    def iter_chunks(self) -> Iterator[bytes]:
        assert self._chunks is not None, "not a streamed response"
        return self._chunks  # type: ignore[no-any-return]

    def aiter_chunks(self) -> AsyncIterator[bytes]:
        assert self._chunks is not None, "not a streamed response"
        return self._chunks  # type: ignore[no-any-return]

    def close(self) -> Any:
        """Releases a streamed response (its connection is dropped unless fully read)."""
        if self._close is not None:
            close, self._close = self._close, None
            return close()
        return None


# -- sans-I/O parsing ------------------------------------------------------------------------


def _parse_head() -> Generator[tuple[int, int], bytes, tuple[int, dict[str, str], bool]]:
    """Reads a response head; returns ``(status, headers, http11)``. Skips 1xx answers."""
    while True:
        line = yield (_LINE, 0)
        if not line.endswith(b"\n") or not line.startswith(b"HTTP/1.") or len(line) < 12:
            raise UnexpectedResponse(f"not an HTTP/1.x status line: {line[:80]!r}")
        try:
            status = int(line[9:12])
        except ValueError:
            raise UnexpectedResponse(f"bad HTTP status line: {line[:80]!r}") from None
        http11 = line[5:8] == b"1.1"
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS):
            line = yield (_LINE, 0)
            if line == b"\r\n" or line == b"\n":
                break
            if not line.endswith(b"\n"):
                raise UnexpectedResponse("an HTTP header line is too long")
            name, sep, value = line.partition(b":")
            if not sep:
                raise UnexpectedResponse(f"bad HTTP header line: {line[:80]!r}")
            key = name.strip().lower().decode("latin-1")
            text = value.strip().decode("latin-1")
            headers[key] = headers[key] + ", " + text if key in headers else text
        else:
            raise UnexpectedResponse("too many HTTP header lines")
        if 100 <= status < 200:
            continue
        return status, headers, http11


def _framing(method: str, status: int, headers: dict[str, str]) -> tuple[str, int]:
    if method == "HEAD" or status in (204, 304):
        return "none", 0
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return "chunked", 0
    length = headers.get("content-length")
    if length is not None:
        try:
            n = int(length)
        except ValueError:
            raise UnexpectedResponse(f"bad Content-Length {length!r}") from None
        if n < 0:
            raise UnexpectedResponse(f"bad Content-Length {length!r}")
        return "length", n
    return "close", 0


def _body(framing: tuple[str, int], stream: bool) -> Generator[tuple[int, Any], bytes, bytes]:
    """Reads a body. Not streaming: returns it. Streaming: yields ``(_DATA, chunk)`` for each
    piece and returns ``b""``."""
    kind, length = framing
    parts: list[bytes] = []
    if kind == "length":
        if stream:
            left = length
            while left:
                data = yield (_SOME, min(left, _CHUNK))
                if not data:
                    raise _EOF()
                left -= len(data)
                yield (_DATA, data)
            return b""
        return (yield (_EXACT, length)) if length else b""
    if kind == "chunked":
        while True:
            line = yield (_LINE, 0)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise UnexpectedResponse(f"bad chunk size line {line[:40]!r}") from None
            if size == 0:
                while (yield (_LINE, 0)) not in (b"\r\n", b"\n"):
                    pass  # trailers
                return b"".join(parts)
            data = yield (_EXACT, size + 2)
            if stream:
                yield (_DATA, data[:-2])
            else:
                parts.append(data[:-2])
    if kind == "close":
        while True:
            data = yield (_SOME, _CHUNK)
            if not data:
                return b"".join(parts)
            if stream:
                yield (_DATA, data)
            else:
                parts.append(data)
    return b""


def _reusable(http11: bool, headers: dict[str, str], framing: tuple[str, int]) -> bool:
    return http11 and framing[0] != "close" and "close" not in headers.get("connection", "").lower()


class _Target:
    """The server's address and the constant part of every request head."""

    def __init__(self, base_url: str, fixed_headers: dict[str, str]) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.prefix = parts.path.rstrip("/")
        default_port = 443 if self.tls else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        host_header = host if self.port == default_port else f"{host}:{self.port}"
        lines = [f"Host: {host_header}"] + [f"{k}: {v}" for k, v in fixed_headers.items()]
        self.fixed = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        self._ssl: ssl.SSLContext | None = None

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def head(self, method: str, path: str, headers: dict[str, str] | None, body: bytes | None) -> bytes:
        out = [f"{method} {self.prefix}{path} HTTP/1.1\r\n".encode("latin-1"), self.fixed]
        if headers:
            out.append("".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("latin-1"))
        if body is not None:
            out.append(b"Content-Length: %d\r\n\r\n" % len(body))
            out.append(body)
        else:
            out.append(b"\r\n")
        return b"".join(out)


# -- blocking sockets ------------------------------------------------------------------------

_sync_transports: weakref.WeakSet[SyncTransport] = weakref.WeakSet()
_async_transports: weakref.WeakSet[AsyncTransport] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # Connections inherited from the parent belong to the parent: a child that used them
    # would read the parent's answers. Drop them (closing only the child's descriptors).
    for transport in list(_sync_transports):
        transport._forget_connections()
    for transport in list(_async_transports):
        transport._forget_connections()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _SyncConn:
    __slots__ = ("sock", "rfile", "timeout")

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self.sock = sock
        self.rfile = sock.makefile("rb", buffering=_CHUNK)
        self.timeout = timeout

    def set_timeout(self, timeout: float) -> None:
        if timeout != self.timeout:
            self.sock.settimeout(timeout)
            self.timeout = timeout

    def stale(self) -> bool:
        # Readable while idle means the server closed it (or sent something unasked).
        try:
            return bool(select.select([self.sock], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def close(self) -> None:
        try:
            self.rfile.close()
        finally:
            self.sock.close()

    def run(self, gen: Generator[tuple[int, Any], bytes, Any], deadline: float | None = None) -> Any:
        """Drives ``gen``; with a ``deadline`` (``time.monotonic()``), each read waits only for
        what is left of it, so a trickling peer cannot stretch an attempt read after read."""
        rfile = self.rfile
        try:
            op, arg = next(gen)
            while True:
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise socket.timeout("timed out")
                    self.sock.settimeout(left)
                    self.timeout = left
                if op == _LINE:
                    value = rfile.readline(_MAX_LINE)
                    if not value:
                        raise _EOF()
                elif op == _EXACT:
                    value = rfile.read(arg)
                    if len(value) < arg:
                        raise _EOF()
                else:
                    value = rfile.read1(arg)
                op, arg = gen.send(value)
        except StopIteration as stop:
            return stop.value

    def stream(self, gen: Generator[tuple[int, Any], bytes, Any]) -> Iterator[bytes]:
        rfile = self.rfile
        try:
            op, arg = next(gen)
            while True:
                if op == _DATA:
                    yield arg
                    value = b""
                elif op == _LINE:
                    value = rfile.readline(_MAX_LINE)
                    if not value:
                        raise _EOF()
                elif op == _EXACT:
                    value = rfile.read(arg)
                    if len(value) < arg:
                        raise _EOF()
                else:
                    value = rfile.read1(arg)
                op, arg = gen.send(value)
        except StopIteration:
            return


def _lost(exc: BaseException) -> TransportError:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return TransportError(Outcome.TIMEOUT, f"timed out waiting for the answer: {exc}", exc)
    if isinstance(exc, _EOF):
        return TransportError(Outcome.CONNECTION_LOST, "the server closed the connection before answering", exc)
    return TransportError(Outcome.CONNECTION_LOST, f"{type(exc).__name__}: {exc}", exc)


class SyncTransport:
    """HTTP/1.1 over blocking sockets with a keep-alive pool; thread-safe."""

    def __init__(self, base_url: str, fixed_headers: dict[str, str], *, max_idle: int = _MAX_IDLE) -> None:
        self.target = _Target(base_url, fixed_headers)
        self._idle: collections.deque[_SyncConn] = collections.deque()
        self._max_idle = max_idle
        self._closed = False
        _sync_transports.add(self)

    def _connect(self, timeout: float) -> _SyncConn:
        t = self.target
        try:
            sock = socket.create_connection((t.host, t.port), timeout=timeout)
        except OSError as exc:
            raise TransportError(
                Outcome.CONNECT_FAILED, f"cannot connect to {t.host}:{t.port}: {exc}", exc
            )
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if t.tls:
                sock = t.ssl_context().wrap_socket(sock, server_hostname=t.host)
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            raise NetworkError(f"TLS certificate of {t.host} not accepted: {exc}") from exc
        except OSError as exc:
            sock.close()
            raise TransportError(Outcome.CONNECT_FAILED, f"TLS handshake with {t.host} failed: {exc}", exc)
        return _SyncConn(sock, timeout)

    def _checkout(self, timeout: float) -> tuple[_SyncConn, bool]:
        if self._closed:
            raise RuntimeError("the client is closed")
        while True:
            try:
                conn = self._idle.pop()
            except IndexError:
                return self._connect(timeout), False
            if conn.stale():
                conn.close()
                continue
            try:
                conn.set_timeout(timeout)
            except OSError:
                conn.close()
                continue
            return conn, True

    def _checkin(self, conn: _SyncConn) -> None:
        if self._closed or len(self._idle) >= self._max_idle:
            conn.close()
        else:
            self._idle.append(conn)

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None,
        body: bytes | None,
        timeout: float,
        stream: bool = False,
        fresh: bool = False,
    ) -> Response:
        data = self.target.head(method, path, headers, body)
        # One deadline for the answer's head and, unless streamed, its body.
        deadline = time.monotonic() + timeout
        while True:
            if fresh:
                if self._closed:
                    raise RuntimeError("the client is closed")
                conn, reused = self._connect(timeout), False
            else:
                conn, reused = self._checkout(timeout)
            cut_short = False
            try:
                try:
                    conn.sock.sendall(data)
                except (BrokenPipeError, ConnectionResetError):
                    # The server may have answered before taking the whole body (a 413) and
                    # closed: its answer is what the caller needs, if it is there to read.
                    cut_short = True
                status, rheaders, http11 = conn.run(_parse_head(), deadline)
            except (_EOF, ConnectionError) as exc:
                conn.close()
                if reused:
                    continue  # an idle connection the server had closed: once more, fresh
                raise _lost(exc)
            except OSError as exc:
                conn.close()
                raise _lost(exc)
            except BaseException:
                conn.close()
                raise
            break
        framing = _framing(method, status, rheaders)
        if stream and 200 <= status < 300:
            conn.set_timeout(timeout)  # a stream waits up to the timeout for each chunk
            return self._streamed(conn, status, rheaders, framing, _reusable(http11, rheaders, framing))
        try:
            payload = conn.run(_body(framing, False), deadline)
        except (_EOF, OSError) as exc:
            conn.close()
            raise _lost(exc)
        except BaseException:
            conn.close()
            raise
        if _reusable(http11, rheaders, framing) and not cut_short:
            self._checkin(conn)
        else:
            conn.close()
        return Response(status, rheaders, payload)

    def _streamed(
        self, conn: _SyncConn, status: int, headers: dict[str, str], framing: tuple[str, int], reusable: bool
    ) -> Response:
        state = {"done": False, "open": True}

        def chunks() -> Iterator[bytes]:
            try:
                yield from conn.stream(_body(framing, True))
            except (_EOF, OSError) as exc:
                release()
                raise _lost(exc)
            state["done"] = True
            release()

        def release() -> None:
            if state["open"]:
                state["open"] = False
                if state["done"] and reusable:
                    self._checkin(conn)
                else:
                    conn.close()

        return Response(status, headers, None, chunks(), release)

    def _forget_connections(self) -> None:
        while self._idle:
            try:
                self._idle.pop().close()
            except (IndexError, OSError):
                pass

    def close(self) -> None:
        self._closed = True
        self._forget_connections()


# -- asyncio ---------------------------------------------------------------------------------

if sys.version_info >= (3, 11):

    async def _within(awaitable: Any, timeout: float) -> Any:
        async with asyncio.timeout(timeout):
            return await awaitable

else:  # pragma: no cover - Python 3.10

    async def _within(awaitable: Any, timeout: float) -> Any:
        return await asyncio.wait_for(awaitable, timeout)


class _AsyncConn(asyncio.Protocol):
    """One connection as an asyncio protocol: the transport keeps the socket registered with
    the loop, ``data_received`` fills a buffer, and reads wait on a future only when the
    buffer is short (no per-read registration with the selector)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.error: BaseException | None = None

    # -- protocol callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self.error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- reading and writing
    async def _more(self) -> None:
        if self.closed:
            if self.error is not None:
                raise self.error
            raise _EOF()
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    def send(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            raise _EOF()
        self.transport.write(data)

    async def readline(self) -> bytes:
        buf = self.buf
        start = 0
        while True:
            i = buf.find(b"\n", start)
            if i >= 0:
                line = bytes(buf[: i + 1])
                del buf[: i + 1]
                return line
            if len(buf) > _MAX_LINE:
                line = bytes(buf)
                buf.clear()
                return line
            start = len(buf)
            await self._more()

    async def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            await self._more()
        buf = self.buf
        if len(buf) == n:
            out = bytes(buf)
            buf.clear()
            return out
        out = bytes(buf[:n])
        del buf[:n]
        return out

    async def read_some(self, n: int) -> bytes:
        if not self.buf:
            if self.closed:
                return b""
            try:
                await self._more()
            except _EOF:
                return b""
            if not self.buf:
                return b""
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def step(self, op: int, arg: Any) -> bytes:
        if op == _LINE:
            return await self.readline()
        if op == _EXACT:
            return await self.read_exact(arg)
        return await self.read_some(arg)

    async def run(self, gen: Generator[tuple[int, Any], bytes, Any]) -> Any:
        try:
            op, arg = next(gen)
            while True:
                op, arg = gen.send(await self.step(op, arg))
        except StopIteration as stop:
            return stop.value

    def stale(self) -> bool:
        return self.closed or bool(self.buf)

    def close(self) -> None:
        self.closed = True
        transport = self.transport
        if transport is not None:
            try:
                transport.close()
            except RuntimeError:  # its loop is closed already
                pass


def _close_all(idle: collections.deque[_AsyncConn]) -> None:
    while idle:
        try:
            idle.pop().close()
        except (IndexError, OSError):
            pass


async def _close_at_loop_shutdown(idle: collections.deque[_AsyncConn]) -> AsyncIterator[None]:
    # An async generator left suspended in the loop: asyncio.run (and any loop that calls
    # shutdown_asyncgens) closes it before the loop closes, and with it the idle connections,
    # cleanly and while the loop can still run their close callbacks.
    try:
        yield
    finally:
        _close_all(idle)


class _LoopPool:
    __slots__ = ("idle", "closer")

    def __init__(self) -> None:
        self.idle: collections.deque[_AsyncConn] = collections.deque()
        self.closer: Any = None


class AsyncTransport:
    """HTTP/1.1 through the running loop's transports; one keep-alive pool per event loop,
    closed when that loop shuts down."""

    def __init__(self, base_url: str, fixed_headers: dict[str, str], *, max_idle: int = _MAX_IDLE) -> None:
        self.target = _Target(base_url, fixed_headers)
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopPool] = weakref.WeakKeyDictionary()
        self._max_idle = max_idle
        self._closed = False
        _async_transports.add(self)

    async def _pool(self, loop: asyncio.AbstractEventLoop) -> _LoopPool:
        pool = self._pools.get(loop)
        if pool is None:
            pool = _LoopPool()
            self._pools[loop] = pool
            closer = _close_at_loop_shutdown(pool.idle)
            await closer.__anext__()
            pool.closer = closer
        return pool

    async def _connect(self, loop: asyncio.AbstractEventLoop, timeout: float) -> _AsyncConn:
        t = self.target
        try:
            _, conn = await _within(
                loop.create_connection(
                    _AsyncConn,
                    t.host,
                    t.port,
                    ssl=t.ssl_context() if t.tls else None,
                    server_hostname=t.host if t.tls else None,
                ),
                timeout,
            )
        except ssl.SSLCertVerificationError as exc:
            raise NetworkError(f"TLS certificate of {t.host} not accepted: {exc}") from exc
        except (OSError, asyncio.TimeoutError) as exc:
            raise TransportError(
                Outcome.CONNECT_FAILED, f"cannot connect to {t.host}:{t.port}: {exc!r}", exc
            )
        return conn

    async def _checkout(self, loop: asyncio.AbstractEventLoop, timeout: float) -> tuple[_AsyncConn, bool]:
        if self._closed:
            raise RuntimeError("the client is closed")
        idle = (await self._pool(loop)).idle
        while idle:
            conn = idle.pop()
            if conn.stale():
                conn.close()
                continue
            return conn, True
        return await self._connect(loop, timeout), False

    def _checkin(self, conn: _AsyncConn) -> None:
        try:
            pool = self._pools.get(asyncio.get_running_loop())
        except RuntimeError:
            pool = None
        if self._closed or pool is None or len(pool.idle) >= self._max_idle or conn.stale():
            conn.close()
        else:
            pool.idle.append(conn)

    async def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None,
        body: bytes | None,
        timeout: float,
        stream: bool = False,
        fresh: bool = False,
    ) -> Response:
        loop = asyncio.get_running_loop()
        data = self.target.head(method, path, headers, body)
        while True:
            if fresh:
                if self._closed:
                    raise RuntimeError("the client is closed")
                conn, reused = await self._connect(loop, timeout), False
            else:
                conn, reused = await self._checkout(loop, timeout)
            try:
                # One deadline for the whole exchange (head and, unless streamed, body).
                status, rheaders, http11, framing, payload = await _within(
                    self._exchange(conn, method, data, stream), timeout
                )
            except _Reused as wrapped:
                conn.close()
                if reused:
                    continue
                raise _lost(wrapped.cause)
            except (_EOF, OSError, asyncio.TimeoutError) as exc:
                conn.close()
                raise _lost(exc)
            except BaseException:
                conn.close()
                raise
            break
        if payload is None:
            return self._streamed(conn, status, rheaders, framing, _reusable(http11, rheaders, framing), timeout)
        if _reusable(http11, rheaders, framing):
            self._checkin(conn)
        else:
            conn.close()
        return Response(status, rheaders, payload)

    async def _exchange(
        self, conn: _AsyncConn, method: str, data: bytes, stream: bool
    ) -> tuple[int, dict[str, str], bool, tuple[str, int], bytes | None]:
        try:
            conn.send(data)
            status, rheaders, http11 = await conn.run(_parse_head())
        except (_EOF, ConnectionError) as exc:
            raise _Reused(exc) from None  # before any answer: a stale connection, maybe
        framing = _framing(method, status, rheaders)
        if stream and 200 <= status < 300:
            return status, rheaders, http11, framing, None
        payload = await conn.run(_body(framing, False))
        return status, rheaders, http11, framing, payload

    def _streamed(
        self,
        conn: _AsyncConn,
        status: int,
        headers: dict[str, str],
        framing: tuple[str, int],
        reusable: bool,
        timeout: float,
    ) -> Response:
        state = {"done": False, "open": True}

        async def chunks() -> AsyncIterator[bytes]:
            gen = _body(framing, True)
            try:
                op, arg = next(gen)
                while True:
                    if op == _DATA:
                        yield arg
                        value = b""
                    else:
                        value = await _within(conn.step(op, arg), timeout)
                    op, arg = gen.send(value)
            except StopIteration:
                state["done"] = True
            except (_EOF, OSError, asyncio.TimeoutError) as exc:
                release()
                raise _lost(exc)
            release()

        def release() -> None:
            if state["open"]:
                state["open"] = False
                if state["done"] and reusable:
                    self._checkin(conn)
                else:
                    conn.close()

        return Response(status, headers, None, chunks(), release)

    def _forget_connections(self) -> None:
        # After a fork: the parent's loops and connections are not the child's to use.
        self._pools = weakref.WeakKeyDictionary()

    async def aclose(self) -> None:
        self._closed = True
        for pool in list(self._pools.values()):
            _close_all(pool.idle)


# -- httpx, for callers who bring their own client -------------------------------------------


def _httpx_error(exc: BaseException) -> TransportError:
    import httpx

    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        return TransportError(Outcome.CONNECT_FAILED, f"{type(exc).__name__}: {exc}", exc)
    if isinstance(exc, httpx.TimeoutException):
        return TransportError(Outcome.TIMEOUT, f"{type(exc).__name__}: {exc}", exc)
    return TransportError(Outcome.CONNECTION_LOST, f"{type(exc).__name__}: {exc}", exc)


class HttpxTransport:
    """The same interface over a caller's ``httpx.Client`` (its own timeouts apply)."""

    def __init__(self, client: Any, base_url: str, fixed_headers: dict[str, str]) -> None:
        self.client = client
        self.base_url = base_url
        self.fixed = fixed_headers

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None,
        body: bytes | None,
        timeout: float,
        stream: bool = False,
        fresh: bool = False,
    ) -> Response:
        import httpx

        try:
            request = self.client.build_request(
                method, self.base_url + path, headers={**self.fixed, **(headers or {})}, content=body
            )
            response = self.client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise _httpx_error(exc)
        heads = {k.lower(): v for k, v in response.headers.items()}
        if stream and 200 <= response.status_code < 300:

            def chunks() -> Iterator[bytes]:
                try:
                    yield from response.iter_bytes()
                except httpx.TransportError as exc:
                    raise _httpx_error(exc)
                finally:
                    response.close()

            return Response(response.status_code, heads, None, chunks(), response.close)
        try:
            payload = response.read()
        except httpx.TransportError as exc:
            raise _httpx_error(exc)
        finally:
            response.close()
        return Response(response.status_code, heads, payload)

    def close(self) -> None:
        pass  # the caller's client is the caller's to close


class AsyncHttpxTransport:
    """The same interface over a caller's ``httpx.AsyncClient``."""

    def __init__(self, client: Any, base_url: str, fixed_headers: dict[str, str]) -> None:
        self.client = client
        self.base_url = base_url
        self.fixed = fixed_headers

    async def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None,
        body: bytes | None,
        timeout: float,
        stream: bool = False,
        fresh: bool = False,
    ) -> Response:
        import httpx

        try:
            request = self.client.build_request(
                method, self.base_url + path, headers={**self.fixed, **(headers or {})}, content=body
            )
            response = await self.client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise _httpx_error(exc)
        heads = {k.lower(): v for k, v in response.headers.items()}
        if stream and 200 <= response.status_code < 300:

            async def chunks() -> AsyncIterator[bytes]:
                try:
                    async for chunk in response.aiter_bytes():
                        yield chunk
                except httpx.TransportError as exc:
                    raise _httpx_error(exc)
                finally:
                    await response.aclose()

            return Response(response.status_code, heads, None, chunks(), response.aclose)
        try:
            payload = await response.aread()
        except httpx.TransportError as exc:
            raise _httpx_error(exc)
        finally:
            await response.aclose()
        return Response(response.status_code, heads, payload)

    async def aclose(self) -> None:
        pass
