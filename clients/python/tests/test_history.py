"""ChatLedgerMessageHistory specifics beyond the shared contract."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

import chatledger
from chatledger.langchain import ChatLedgerMessageHistory, HistoryWriteFailed

from chains import config, prompt_chain
from conftest import Ledger


def test_a_window_longer_than_one_page_is_read_whole(ledger: Ledger, session_id: str) -> None:
    with ledger.client() as client:
        client.append(session_id, [{"role": "user", "content": "before the reset"}])
        client.reset(session_id)
        for batch in range(11):
            client.append(session_id, [{"role": "user", "content": f"{batch}-{i}"} for i in range(100)])
    history = ChatLedgerMessageHistory(session_id, url=ledger.url, api_key=ledger.writer_key)
    messages = history.messages
    assert len(messages) == 1100
    assert messages[0].content == "0-0" and messages[-1].content == "10-99"
    # The read's head is the base for the next write: it is accepted.
    history.add_messages([AIMessage("the end")])
    last = ChatLedgerMessageHistory(session_id, url=ledger.url, api_key=ledger.writer_key, window=2).messages
    assert [m.content for m in last] == ["10-99", "the end"]
    long_window = ChatLedgerMessageHistory(session_id, url=ledger.url, api_key=ledger.writer_key, window=1050)
    assert len(long_window.messages) == 1050


def test_environment_configuration_and_extra_metadata(
    ledger: Ledger, session_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATLEDGER_URL", ledger.url)
    monkeypatch.setenv("CHATLEDGER_API_KEY", ledger.writer_key)
    history = ChatLedgerMessageHistory(session_id, metadata={"bot": "support", "release": "2026.11"})
    history.add_messages([HumanMessage("hi")])
    with ledger.client() as client:
        (entry,) = client.messages(session_id)
    assert entry.metadata["bot"] == "support" and entry.metadata["langchain"]["type"] == "human"
    assert history.messages == [HumanMessage("hi")]
    monkeypatch.delenv("CHATLEDGER_URL")
    with pytest.raises(ValueError):
        ChatLedgerMessageHistory(session_id, api_key="x")


def test_entries_of_other_clients_are_readable(ledger: Ledger, session_id: str) -> None:
    with ledger.client() as client:
        client.append(session_id, [
            {"role": "system", "content": "policy"},
            {"role": "user", "content": ["hi", {"type": "text", "text": "there"}]},
            {"role": "assistant", "content": "hello", "metadata": {"model": "gpt-x"}},
            {"role": "tool", "content": "42", "metadata": {"tool_call_id": "call-1"}},
        ])
    messages = ChatLedgerMessageHistory(session_id, url=ledger.url, api_key=ledger.writer_key).messages
    assert [m.type for m in messages] == ["system", "human", "ai", "tool"]
    assert messages[1].content == ["hi", {"type": "text", "text": "there"}]
    assert messages[2].response_metadata == {"chatledger_metadata": {"model": "gpt-x"}}
    assert isinstance(messages[3], ToolMessage) and messages[3].tool_call_id == "call-1"


def test_a_write_langchain_swallowed_is_kept_for_the_next_use_of_the_session_and_raised_once(
    ledger: Ledger, session_id: str
) -> None:
    """The fallback without RunnableWithLedgerHistory: plain RunnableWithMessageHistory logs
    the failed write and answers; the next read or write of that session (through any history
    object of the process, with the same server and key) raises it once."""
    reply = prompt_chain(["never stored"], lambda sid: ChatLedgerMessageHistory(
        sid, url=ledger.url, api_key=ledger.reader_key)).invoke({"question": "hi"}, config=config(session_id))
    assert reply.content == "never stored"
    other_session = ChatLedgerMessageHistory(session_id + "-x", url=ledger.url, api_key=ledger.reader_key)
    assert other_session.messages == [], "other sessions are not affected"
    writer_view = ChatLedgerMessageHistory(session_id, url=ledger.url, api_key=ledger.writer_key)
    assert writer_view.messages == [], "another key is another scope"
    fresh = ChatLedgerMessageHistory(session_id, url=ledger.url, api_key=ledger.reader_key)
    assert len(fresh.pending_failures) == 1
    with pytest.raises(HistoryWriteFailed) as caught:
        fresh.add_messages([HumanMessage("a later write")])
    assert isinstance(caught.value.error, chatledger.Forbidden)
    assert caught.value.code == "forbidden" and caught.value.status == 403
    assert [m.content for m in caught.value.messages] == ["hi", "never stored"]
    assert fresh.messages == []  # raised once
    assert fresh.pending_failures == []


def test_a_direct_callers_failure_is_never_raised_again(ledger: Ledger, session_id: str) -> None:
    reader = ChatLedgerMessageHistory(session_id, url=ledger.url, api_key=ledger.reader_key)
    with pytest.raises(chatledger.Forbidden):
        reader.add_messages([HumanMessage("not allowed")])
    with pytest.raises(chatledger.Forbidden):
        reader.clear()  # a session that does not exist, but a reader may not reset at all
    fresh = ChatLedgerMessageHistory(session_id, url=ledger.url, api_key=ledger.reader_key)
    assert fresh.pending_failures == [] and fresh.messages == [] and reader.messages == []
    with pytest.raises(chatledger.Forbidden):  # its own failure, not an old one
        fresh.add_messages([HumanMessage("again")])


def test_a_failing_callback_does_not_hide_the_error(ledger: Ledger, session_id: str) -> None:
    calls: list[HistoryWriteFailed] = []

    def broken_callback(failure: HistoryWriteFailed) -> None:
        calls.append(failure)
        raise RuntimeError("alerting is down too")

    history = ChatLedgerMessageHistory(session_id, url=ledger.url, api_key=ledger.reader_key, on_write_error=broken_callback)
    with pytest.raises(chatledger.Forbidden):
        history.add_messages([HumanMessage("x")])
    assert len(calls) == 1 and isinstance(calls[0].error, chatledger.Forbidden)
    assert calls[0].request is not None and calls[0].request["wire"][0]["content"] == "x"


def test_optimistic_off_appends_blindly(ledger: Ledger, session_id: str) -> None:
    blind = ChatLedgerMessageHistory(session_id, url=ledger.url, api_key=ledger.writer_key, optimistic=False)
    blind.messages
    ChatLedgerMessageHistory(session_id, url=ledger.url, api_key=ledger.writer_key).add_messages([HumanMessage("other")])
    blind.add_messages([HumanMessage("mine")])
    assert [m.content for m in blind.messages] == ["other", "mine"]


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        ChatLedgerMessageHistory("s", url="http://x", api_key="k", on_conflict="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ChatLedgerMessageHistory("s", url="ftp://x", api_key="k")
    with pytest.raises(ValueError):
        ChatLedgerMessageHistory("s", url="http://x", api_key="k", window=0)
