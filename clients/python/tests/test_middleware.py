"""ChatLedgerMiddleware with LangChain 1.x create_agent."""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool

import chatledger
from chatledger.langchain import ChatLedgerMessageHistory, ChatLedgerMiddleware

from conftest import Ledger


class RecordingModel(FakeMessagesListChatModel):
    """Answers from a list and keeps what it was shown; accepts tools."""

    seen: list[list[BaseMessage]] = []

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self.seen.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


@tool
def lookup_order(order: str) -> str:
    """Looks an order up."""
    return f"order {order} shipped yesterday"


def contents(messages: list[BaseMessage]) -> list[Any]:
    return [m.content for m in messages]


def test_agent_loads_the_window_and_appends_each_turn(ledger: Ledger, session_id: str) -> None:
    model = RecordingModel(
        seen=[],
        responses=[
            AIMessage("Thanks, what can I do?"),
            AIMessage("", tool_calls=[{"name": "lookup_order", "args": {"order": "8892"}, "id": "call-1"}]),
            AIMessage("Order 8892 shipped yesterday."),
        ],
    )
    agent = create_agent(model, tools=[lookup_order], middleware=[ChatLedgerMiddleware(url=ledger.url, api_key=ledger.writer_key)])
    cfg = {"configurable": {"session_id": session_id}}
    agent.invoke({"messages": [HumanMessage("My order number is 8892")]}, config=cfg)
    result = agent.invoke({"messages": [HumanMessage("Where is it?")]}, config=cfg)
    # The second turn's first model call saw the first turn, loaded from chatledger.
    assert contents(model.seen[1]) == ["My order number is 8892", "Thanks, what can I do?", "Where is it?"]
    assert result["messages"][-1].content == "Order 8892 shipped yesterday."

    stored = ChatLedgerMessageHistory(session_id, url=ledger.url, api_key=ledger.reader_key).messages
    assert [type(m) for m in stored] == [HumanMessage, AIMessage, HumanMessage, AIMessage, ToolMessage, AIMessage]
    assert stored[3].tool_calls[0]["args"] == {"order": "8892"}
    assert stored[4].tool_call_id == "call-1" and stored[4].content == "order 8892 shipped yesterday"
    assert stored == result["messages"], "what the agent saw is what was stored, ids included"
    with ledger.client(ledger.reader_key) as client:
        assert client.session(session_id).last_seq == 6


@pytest.mark.anyio
async def test_agent_async_with_thread_id_and_a_context_limit(ledger: Ledger, session_id: str) -> None:
    model = RecordingModel(seen=[], responses=[AIMessage("one"), AIMessage("two"), AIMessage("three")])
    middleware = ChatLedgerMiddleware(url=ledger.url, api_key=ledger.writer_key, context_limit=2)
    agent = create_agent(model, middleware=[middleware])
    cfg = {"configurable": {"thread_id": session_id}}
    for question in ("q1", "q2", "q3"):
        await agent.ainvoke({"messages": [HumanMessage(question)]}, config=cfg)
    assert contents(model.seen[2]) == ["q2", "two", "q3"], "only the last two messages were loaded"
    with ledger.client(ledger.reader_key) as client:
        assert [e.content for e in client.messages(session_id)] == ["q1", "one", "q2", "two", "q3", "three"]


def test_a_failed_append_raises_out_of_invoke(ledger: Ledger, session_id: str) -> None:
    model = RecordingModel(seen=[], responses=[AIMessage("never stored")])
    reader_only = ChatLedgerMiddleware(url=ledger.url, api_key=ledger.reader_key, session_id=session_id)
    agent = create_agent(model, middleware=[reader_only])
    with pytest.raises(chatledger.Forbidden):
        agent.invoke({"messages": [HumanMessage("hi")]})
    assert model.seen, "the model ran; the write after it failed"


def test_a_concurrent_write_during_the_turn_is_a_conflict(ledger: Ledger, session_id: str) -> None:
    class Interrupted(RecordingModel):
        def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
            with ledger.client() as other:
                other.append(session_id, [{"role": "user", "content": "another replica"}])
            return super()._generate(messages, *args, **kwargs)

    cfg = {"configurable": {"session_id": session_id}}
    strict = create_agent(
        Interrupted(seen=[], responses=[AIMessage("a")]),
        middleware=[ChatLedgerMiddleware(url=ledger.url, api_key=ledger.writer_key, on_conflict="raise")],
    )
    with pytest.raises(chatledger.SeqConflict):
        strict.invoke({"messages": [HumanMessage("mine")]}, config=cfg)
    lenient = create_agent(
        Interrupted(seen=[], responses=[AIMessage("b")]),
        middleware=[ChatLedgerMiddleware(url=ledger.url, api_key=ledger.writer_key, on_conflict="append")],
    )
    lenient.invoke({"messages": [HumanMessage("mine again")]}, config=cfg)
    by_default = create_agent(
        Interrupted(seen=[], responses=[AIMessage("c")]),
        middleware=[ChatLedgerMiddleware(url=ledger.url, api_key=ledger.writer_key)],
    )
    by_default.invoke({"messages": [HumanMessage("mine, third")]}, config=cfg)
    with ledger.client(ledger.reader_key) as client:
        entries = list(client.messages(session_id))
    assert [e.content for e in entries] == [
        "another replica", "another replica", "mine again", "b", "another replica", "mine, third", "c",
    ]
    assert "chatledger" not in entries[0].metadata
    assert [e.metadata["chatledger"] for e in entries[2:4]] == [
        {"stale_context": {"expected_seq": 1, "current_seq": 2}}] * 2
    assert [e.metadata["chatledger"] for e in entries[5:7]] == [
        {"stale_context": {"expected_seq": 4, "current_seq": 5}}] * 2
