"""One credential resolution for every entry point, and one pooled client per server, key
and settings (and event loop), reused by every history object."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.messages import HumanMessage

import chatledger
from chatledger import AsyncClient, Client, Retry, Settings
from chatledger.langchain import ChatLedgerMessageHistory, ChatLedgerMiddleware

from conftest import Ledger


def test_arguments_then_a_clients_settings_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATLEDGER_URL", "http://env:8080/")
    monkeypatch.setenv("CHATLEDGER_API_KEY", "env-key")
    for make in (Client, AsyncClient):
        assert make().settings == Settings("http://env:8080", "env-key")
        assert make("http://arg:1", "arg-key").settings.base_url == "http://arg:1"
    history = ChatLedgerMessageHistory("s")
    middleware = ChatLedgerMiddleware()
    assert history.settings == middleware.settings == Settings("http://env:8080", "env-key")
    given = Client("http://given:2", "given-key", retry=Retry.none(), timeout=3.0)
    for adapter in (ChatLedgerMessageHistory("s", client=given), ChatLedgerMiddleware(client=given)):
        assert adapter.settings == given.settings, "a client's settings, not the environment"
    assert ChatLedgerMessageHistory("s", client=given, api_key="other").settings.api_key == "other"
    assert "given-key" not in repr(given.settings)
    monkeypatch.delenv("CHATLEDGER_API_KEY")
    for make in (Client, AsyncClient, lambda: ChatLedgerMessageHistory("s"), lambda: ChatLedgerMiddleware()):
        with pytest.raises(ValueError, match="CHATLEDGER_API_KEY"):
            make()


def test_history_objects_share_one_pooled_client(ledger: Ledger, session_id: str) -> None:
    histories = [ChatLedgerMessageHistory(session_id, url=ledger.url, api_key=ledger.writer_key) for _ in range(3)]
    for h in histories:
        h.add_messages([HumanMessage("x")])
    clients = {id(h._sync()) for h in histories}
    assert len(clients) == 1 and histories[0]._sync() is Client.shared(ledger.url, ledger.writer_key)
    other_key = ChatLedgerMessageHistory(session_id, url=ledger.url, api_key=ledger.reader_key)
    assert other_key._sync() is not histories[0]._sync()
    assert len(histories[0]._sync()._transport._idle) == 1, "one keep-alive connection, reused"


def test_async_histories_share_one_client_with_a_pool_per_event_loop(ledger: Ledger, session_id: str) -> None:
    async def turns() -> None:
        for _ in range(3):
            h = ChatLedgerMessageHistory(session_id, url=ledger.url, api_key=ledger.writer_key)
            await h.aget_messages()
            await h.aadd_messages([HumanMessage("y")])

    asyncio.run(turns())
    asyncio.run(turns())  # a second loop: its own connections, the same client
    shared = AsyncClient.shared(ledger.url, ledger.writer_key)
    assert ChatLedgerMessageHistory(session_id, url=ledger.url, api_key=ledger.writer_key)._async() is shared
    with ledger.client() as client:
        assert client.session(session_id).message_count == 6


def test_a_closed_shared_client_is_replaced(ledger: Ledger) -> None:
    first = Client.shared(ledger.url, ledger.writer_key)
    first.close()
    second = Client.shared(ledger.url, ledger.writer_key)
    assert second is not first
    with pytest.raises(RuntimeError):
        first.session("s")
    with pytest.raises(chatledger.SessionNotFound):
        second.session("s-none")
