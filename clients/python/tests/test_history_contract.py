"""The chat history contract, run against the adapter and against LangChain's
InMemoryChatMessageHistory as the reference: whatever the reference does, the adapter does."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from langchain_core.chat_history import BaseChatMessageHistory, InMemoryChatMessageHistory
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, get_buffer_string

from chatledger.langchain import ChatLedgerMessageHistory

from conftest import Ledger
from messages import every_message_type

Factory = Callable[[str], BaseChatMessageHistory]


@pytest.fixture(params=["chatledger", "in_memory"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def new_history(kind: str, request: pytest.FixtureRequest) -> Factory:
    """A factory of history objects: a new object per call, the same store per session id."""
    if kind == "in_memory":
        store: dict[str, InMemoryChatMessageHistory] = {}
        return lambda sid: store.setdefault(sid, InMemoryChatMessageHistory())
    ledger: Ledger = request.getfixturevalue("ledger")
    return lambda sid: ChatLedgerMessageHistory(sid, url=ledger.url, api_key=ledger.writer_key)


def same(a: list[BaseMessage], b: list[BaseMessage]) -> bool:
    return a == b and [type(m) for m in a] == [type(m) for m in b]


def test_a_new_session_is_empty(new_history: Factory, session_id: str) -> None:
    assert new_history(session_id).messages == []


def test_add_messages_then_read_in_order(new_history: Factory, session_id: str) -> None:
    history = new_history(session_id)
    history.add_messages([HumanMessage("one"), AIMessage("two")])
    history.add_messages([HumanMessage("three")])
    history.add_message(AIMessage("four"))
    expected = [HumanMessage("one"), AIMessage("two"), HumanMessage("three"), AIMessage("four")]
    assert same(history.messages, expected)
    assert same(new_history(session_id).messages, expected)


def test_every_message_type_and_field_survives(new_history: Factory, session_id: str) -> None:
    sent = every_message_type()
    new_history(session_id).add_messages(sent)
    back = new_history(session_id).messages
    assert same(back, sent)
    assert [m.model_dump() for m in back] == [m.model_dump() for m in sent]


def test_user_and_ai_convenience_methods(new_history: Factory, session_id: str) -> None:
    history = new_history(session_id)
    history.add_user_message("hi")
    history.add_ai_message("hello")
    history.add_user_message(HumanMessage("typed", id="h-2"))
    history.add_ai_message(AIMessage("typed", id="a-2"))
    assert same(
        new_history(session_id).messages,
        [HumanMessage("hi"), AIMessage("hello"), HumanMessage("typed", id="h-2"), AIMessage("typed", id="a-2")],
    )


def test_clear_empties_the_window_and_writing_goes_on(new_history: Factory, session_id: str) -> None:
    history = new_history(session_id)
    history.add_messages([HumanMessage("old"), AIMessage("old reply")])
    history.clear()
    assert history.messages == []
    assert new_history(session_id).messages == []
    history.add_messages([SystemMessage("fresh start")])
    history.clear()
    history.clear()
    history.add_messages([HumanMessage("new")])
    assert same(new_history(session_id).messages, [HumanMessage("new")])


def test_clear_of_an_unknown_session_is_fine(new_history: Factory, session_id: str) -> None:
    history = new_history(session_id)
    history.clear()
    assert history.messages == []
    history.add_messages([HumanMessage("first")])
    assert same(history.messages, [HumanMessage("first")])


def test_adding_nothing_is_a_no_op(new_history: Factory, session_id: str) -> None:
    history = new_history(session_id)
    history.add_messages([])
    assert history.messages == []


def test_sessions_are_isolated(new_history: Factory, session_id: str) -> None:
    a, b = new_history(session_id + "-a"), new_history(session_id + "-b")
    a.add_messages([HumanMessage("for a")])
    b.add_messages([HumanMessage("for b")])
    a.add_messages([AIMessage("reply a")])
    b.clear()
    assert same(new_history(session_id + "-a").messages, [HumanMessage("for a"), AIMessage("reply a")])
    assert new_history(session_id + "-b").messages == []


def test_str_is_the_buffer_string(new_history: Factory, session_id: str) -> None:
    history = new_history(session_id)
    history.add_messages([HumanMessage("hi"), AIMessage("hello")])
    assert str(history) == get_buffer_string([HumanMessage("hi"), AIMessage("hello")])


@pytest.mark.anyio
async def test_async_methods_match_the_sync_ones(new_history: Factory, session_id: str) -> None:
    history = new_history(session_id)
    assert await history.aget_messages() == []
    await history.aadd_messages([HumanMessage("one"), AIMessage("two")])
    sent = every_message_type()
    await history.aadd_messages(sent)
    assert same(await new_history(session_id).aget_messages(), [HumanMessage("one"), AIMessage("two"), *sent])
    assert same(new_history(session_id).messages, await history.aget_messages())
    await history.aclear()
    assert await history.aget_messages() == []
    await history.aadd_messages([HumanMessage("after")])
    assert same(await new_history(session_id).aget_messages(), [HumanMessage("after")])


@pytest.mark.anyio
async def test_async_user_and_ai_helpers(new_history: Factory, session_id: str, kind: str) -> None:
    """``aadd_user_message`` / ``aadd_ai_message`` as community histories offer them (the
    in-memory reference has none; there the sync helpers define the expected result)."""
    history = new_history(session_id)
    if kind == "in_memory":
        history.add_user_message("hi")
        history.add_ai_message(AIMessage("hello", id="a1"))
    else:
        await history.aadd_user_message("hi")  # type: ignore[attr-defined]
        await history.aadd_ai_message(AIMessage("hello", id="a1"))  # type: ignore[attr-defined]
    assert same(await new_history(session_id).aget_messages(), [HumanMessage("hi"), AIMessage("hello", id="a1")])
