"""Multi-turn conversations through RunnableWithMessageHistory, sync and async, including a
server restart in the middle."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage

from chatledger.langchain import ChatLedgerMessageHistory

from chains import Recorder, config, model_chain, prompt_chain
from conftest import Backend, Ledger
from _server import Admin

QUESTIONS = ["My order number is 8892", "Where is it?", "Thanks!"]
ANSWERS = ["Thanks, looking up 8892.", "Order 8892 shipped yesterday.", "You're welcome."]


def factory(ledger: Ledger, **kwargs):  # type: ignore[no-untyped-def]
    return lambda sid: ChatLedgerMessageHistory(sid, url=ledger.url, api_key=ledger.writer_key, **kwargs)


def assert_ledger_holds(ledger: Ledger, session_id: str, turns: int) -> None:
    with ledger.client(ledger.reader_key) as client:
        entries = list(client.messages(session_id))
    assert [e.seq for e in entries] == list(range(1, 2 * turns + 1))
    assert [e.role for e in entries] == ["user", "assistant"] * turns
    assert [e.content for e in entries] == [x for pair in zip(QUESTIONS, ANSWERS) for x in pair][: 2 * turns]


def test_multi_turn_conversation_sync(ledger: Ledger, session_id: str) -> None:
    recorder = Recorder()
    chain = prompt_chain(ANSWERS, factory(ledger), recorder=recorder)
    for i, question in enumerate(QUESTIONS):
        reply = chain.invoke({"question": question}, config=config(session_id))
        assert reply.content == ANSWERS[i]
        # The model saw the system prompt, every earlier turn, then the question.
        earlier = [x for pair in zip(QUESTIONS[:i], ANSWERS[:i]) for x in pair]
        assert recorder.last == ["You are a support bot.", *earlier, question]
    assert_ledger_holds(ledger, session_id, 3)
    back = ChatLedgerMessageHistory(session_id, url=ledger.url, api_key=ledger.reader_key).messages
    assert [type(m) for m in back] == [HumanMessage, AIMessage] * 3


@pytest.mark.anyio
async def test_multi_turn_conversation_async(ledger: Ledger, session_id: str) -> None:
    recorder = Recorder()
    chain = prompt_chain(ANSWERS, factory(ledger), recorder=recorder)
    for i, question in enumerate(QUESTIONS):
        reply = await chain.ainvoke({"question": question}, config=config(session_id))
        assert reply.content == ANSWERS[i]
        earlier = [x for pair in zip(QUESTIONS[:i], ANSWERS[:i]) for x in pair]
        assert recorder.last == ["You are a support bot.", *earlier, question]
    assert_ledger_holds(ledger, session_id, 3)


def test_wrapping_the_model_directly_sync(ledger: Ledger, session_id: str) -> None:
    recorder = Recorder()
    chain = model_chain(ANSWERS, factory(ledger), recorder=recorder)
    for i, question in enumerate(QUESTIONS):
        chain.invoke(question, config=config(session_id))
        earlier = [x for pair in zip(QUESTIONS[:i], ANSWERS[:i]) for x in pair]
        assert recorder.last == [*earlier, question]
    assert_ledger_holds(ledger, session_id, 3)


@pytest.mark.anyio
async def test_wrapping_the_model_directly_async(ledger: Ledger, session_id: str) -> None:
    chain = model_chain(ANSWERS, factory(ledger))
    for question in QUESTIONS:
        await chain.ainvoke([HumanMessage(question)], config=config(session_id))
    assert_ledger_holds(ledger, session_id, 3)


def test_streaming_stores_the_chunk_losslessly(ledger: Ledger, session_id: str) -> None:
    chain = prompt_chain(ANSWERS, factory(ledger))
    chunks = list(chain.stream({"question": QUESTIONS[0]}, config=config(session_id)))
    assert "".join(str(c.content) for c in chunks) == ANSWERS[0]
    back = ChatLedgerMessageHistory(session_id, url=ledger.url, api_key=ledger.writer_key).messages
    assert [type(m) for m in back] == [HumanMessage, AIMessageChunk]
    assert back[1].content == ANSWERS[0]
    assert_ledger_holds(ledger, session_id, 1)


@pytest.mark.anyio
async def test_streaming_async(ledger: Ledger, session_id: str) -> None:
    chain = prompt_chain(ANSWERS, factory(ledger))
    for question in QUESTIONS[:2]:
        async for _ in chain.astream({"question": question}, config=config(session_id)):
            pass
    back = await ChatLedgerMessageHistory(session_id, url=ledger.url, api_key=ledger.writer_key).aget_messages()
    assert [type(m) for m in back] == [HumanMessage, AIMessageChunk] * 2
    assert_ledger_holds(ledger, session_id, 2)


def test_conversation_resumes_after_a_server_restart(backend: Backend, session_id: str) -> None:
    first = backend.start_server()
    try:
        keys = Admin(first.url, backend.admin_key).tenant_with_keys()
        chain = prompt_chain(ANSWERS[:2], lambda sid: ChatLedgerMessageHistory(sid, url=first.url, api_key=keys["writer"]))
        for question in QUESTIONS[:2]:
            chain.invoke({"question": question}, config=config(session_id))
        before = ChatLedgerMessageHistory(session_id, url=first.url, api_key=keys["writer"]).messages
    finally:
        assert first.stop() == 0, "SIGTERM stops the server cleanly"

    second = backend.start_server()
    try:
        history = ChatLedgerMessageHistory(session_id, url=second.url, api_key=keys["writer"])
        assert history.messages == before and len(before) == 4
        recorder = Recorder()
        chain = prompt_chain(
            ANSWERS[2:], lambda sid: ChatLedgerMessageHistory(sid, url=second.url, api_key=keys["writer"]),
            recorder=recorder,
        )
        chain.invoke({"question": QUESTIONS[2]}, config=config(session_id))
        earlier = [x for pair in zip(QUESTIONS[:2], ANSWERS[:2]) for x in pair]
        assert recorder.last == ["You are a support bot.", *earlier, QUESTIONS[2]]
        ledger = Ledger(second.url, keys["tenant"], keys["writer"], keys["reader"], keys["auditor"])
        assert_ledger_holds(ledger, session_id, 3)
    finally:
        assert second.stop() == 0
