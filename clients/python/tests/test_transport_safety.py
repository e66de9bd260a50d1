"""What the transport must never do: send a call the server must not get twice a second time,
put a caller's bytes into the request's head, wait past an attempt's deadline, or hide the
server's answer to a body it refused."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

import chatledger
from chatledger import AsyncClient, Client, Retry

from conftest import Ledger

_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]"


class _KeepAliveThenDrop:
    """A server that answers every GET on a kept-alive connection and reads each POST to
    /v1/holds, then closes without answering (a connection that broke under the call)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.holds_received = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        data = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(data) < length:
                    data += conn.recv(65536)
                data = data[length:]
                if head.startswith(b"POST /v1/holds"):
                    with self._lock:
                        self.holds_received += 1
                    return
                conn.sendall(_OK)

    def close(self) -> None:
        self.listener.close()


def test_a_hold_goes_out_on_a_new_connection_and_is_never_resent_after_it_may_have_landed() -> None:
    server = _KeepAliveThenDrop()
    try:
        client = Client(server.url, "clk_test", retry=Retry(initial_backoff=0.01))
        client._transport.request("GET", "/v1/holds", None, None, 5.0)  # a kept-alive connection
        with pytest.raises(chatledger.NetworkError):
            client.place_hold("matter-1", ["s"], reason="dispute")
        assert server.holds_received == 1
        client.close()
    finally:
        server.close()


def test_the_async_client_never_resends_a_hold_either() -> None:
    server = _KeepAliveThenDrop()

    async def scenario() -> None:
        client = AsyncClient(server.url, "clk_test", retry=Retry(initial_backoff=0.01))
        await client._transport.request("GET", "/v1/holds", None, None, 5.0)
        with pytest.raises(chatledger.NetworkError):
            await client.place_hold("matter-1", ["s"], reason="dispute")
        await client.aclose()

    try:
        asyncio.run(scenario())
        assert server.holds_received == 1
    finally:
        server.close()


@pytest.mark.parametrize("key", ["turn-9\r\nX-Injected: yes", "with space", "", "k" * 256, "café"])
def test_an_idempotency_key_the_server_would_refuse_is_refused_before_sending(
    ledger: Ledger, session_id: str, key: str
) -> None:
    with ledger.client() as client:
        with pytest.raises(chatledger.InvalidIdempotencyKey):
            client.append(session_id, [{"role": "user", "content": "x"}], idempotency_key=key)
        with pytest.raises(chatledger.SessionNotFound):
            client.session(session_id)


def test_an_api_key_is_stripped_and_one_outside_visible_ascii_is_refused_without_showing_it(
    ledger: Ledger, session_id: str
) -> None:
    turn = [{"role": "user", "content": "once"}]
    with Client(ledger.url, ledger.writer_key + "\n") as client:
        client.append(session_id, turn, idempotency_key="turn-once")
        again = client.append(session_id, turn, idempotency_key="turn-once")
        assert again.replayed
        assert [e.content for e in client.messages(session_id)] == ["once"]
    for bad in [ledger.writer_key + "\u2019", "clk\r\nX-Injected: yes"]:
        with pytest.raises(ValueError) as refused:
            Client(ledger.url, bad)
        assert ledger.writer_key not in repr(refused.value) and "clk" not in str(refused.value)


def test_a_trickled_answer_ends_the_sync_attempt_at_its_deadline() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 20) for i in range(40))
        + b"Content-Length: 2\r\n\r\n[]"
    )
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            # Every read of the client's gets a line well within its timeout, but the whole
            # answer takes about twenty seconds.
            for line in answer.split(b"\r\n"):
                if stop.wait(0.5):
                    return
                conn.sendall(line + b"\r\n")

    threading.Thread(target=trickle, daemon=True).start()
    try:
        with Client(url, "clk_test", timeout=1.0, retry=Retry.none()) as client:
            with pytest.raises(chatledger.NetworkError):
                list(client.sessions())
    finally:
        stop.set()
        listener.close()


def test_a_body_over_the_servers_limit_is_payload_too_large_not_a_network_error(
    ledger: Ledger, session_id: str
) -> None:
    messages = [{"role": "user", "content": "x" * 200 * 1024}] * 25  # about 5 MB, over 4 MiB
    with ledger.client(retry=Retry(initial_backoff=0.01)) as client:
        with pytest.raises(chatledger.PayloadTooLarge) as refused:
            client.append(session_id, messages)
    assert refused.value.attempts == 1


def test_verify_reports_the_erased_entries(ledger: Ledger, session_id: str) -> None:
    with ledger.client() as writer:
        writer.append(session_id, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    with ledger.client(ledger.auditor_key) as auditor:
        auditor.erase(session_id, "gdpr-17 request 1", through_seq=2)
        verified = auditor.verify(session_id)
    assert verified.ok and verified.erased_entries == 2


def test_a_retried_search_is_logged_without_its_terms(caplog: pytest.LogCaptureFixture) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"

    def unavailable() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                problem = b'{"type": "urn:chatledger:problem:unavailable", "code": "unavailable", "status": 503}'
                conn.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(problem), problem)
                )

    threading.Thread(target=unavailable, daemon=True).start()
    try:
        with caplog.at_level("WARNING", logger="chatledger"):
            with Client(url, "clk_test", retry=Retry(attempts=2, initial_backoff=0.01)) as client:
                with pytest.raises(chatledger.Unavailable):
                    list(client.search("Jane Doe 1984-02-29"))
        logged = caplog.text
        assert "/v1/audit/search" in logged and "Jane" not in logged and "1984" not in logged
    finally:
        listener.close()


def test_the_shared_client_closes_its_connections_at_exit(ledger: Ledger, session_id: str) -> None:
    import subprocess
    import sys

    program = (
        "import chatledger, sys\n"
        "client = chatledger.Client.shared(sys.argv[1], sys.argv[2])\n"
        "client.append(sys.argv[3], [{'role': 'user', 'content': 'x'}])\n"
    )
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", program, ledger.url, ledger.writer_key, session_id],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "ResourceWarning" not in done.stderr, done.stderr
