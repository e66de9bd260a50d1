"""Two writers on one session, sessions and tenants kept apart, and failed writes that
RunnableWithMessageHistory would swallow surfacing anyway."""

from __future__ import annotations

import asyncio
import datetime
import threading
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel, FakeMessagesListChatModel
from langchain_core.messages import AIMessage, HumanMessage

import chatledger
from chatledger.langchain import ChatLedgerMessageHistory, HistoryWriteFailed, MessageEncodingError

from chains import Recorder, config, model_chain, prompt_chain
from conftest import Ledger


class BarrierModel(FakeListChatModel):
    """Answers only once every writer has read the history: a real race, not a sleep."""

    barrier: Any = None

    def _call(self, *args: Any, **kwargs: Any) -> str:
        self.barrier.wait(timeout=30)
        return super()._call(*args, **kwargs)


def seed(ledger: Ledger, session_id: str) -> None:
    ChatLedgerMessageHistory(session_id, url=ledger.url, api_key=ledger.writer_key).add_messages(
        [HumanMessage("hello"), AIMessage("hi, how can I help?")]
    )


def contents(ledger: Ledger, session_id: str) -> list[Any]:
    with ledger.client(ledger.reader_key) as client:
        return [e.content for e in client.messages(session_id)]


def run_two_writers(ledger: Ledger, session_id: str, **history_kwargs: Any) -> tuple[list[Any], list[HistoryWriteFailed]]:
    barrier = threading.Barrier(2)
    failures: list[HistoryWriteFailed] = []
    replies: list[Any] = []

    def get(sid: str) -> ChatLedgerMessageHistory:
        return ChatLedgerMessageHistory(
            sid, url=ledger.url, api_key=ledger.writer_key, on_write_error=failures.append, **history_kwargs
        )

    def writer(name: str) -> None:
        model = BarrierModel(responses=[f"answer {name}"], barrier=barrier)
        chain = prompt_chain([], get, model=model)
        replies.append(chain.invoke({"question": f"question {name}"}, config=config(session_id)))

    threads = [threading.Thread(target=writer, args=(n,)) for n in "AB"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return replies, failures


def test_two_concurrent_writers_one_wins_the_other_fails_loudly(ledger: Ledger, session_id: str) -> None:
    seed(ledger, session_id)
    replies, failures = run_two_writers(ledger, session_id)
    # RunnableWithMessageHistory swallowed the loser's write error: both calls "succeeded".
    assert sorted(r.content for r in replies) == ["answer A", "answer B"]
    # ... but the callback heard of it at once,
    assert len(failures) == 1
    failure = failures[0]
    assert isinstance(failure.error, chatledger.SeqConflict) and failure.error.current_seq == 4
    loser = failure.messages[0].content[-1]
    winner = "B" if loser == "A" else "A"
    assert [m.content for m in failure.messages] == [f"question {loser}", f"answer {loser}"]
    # the ledger holds the winner's turn, whole, after the seed and nothing of the loser,
    stored = contents(ledger, session_id)
    assert stored == ["hello", "hi, how can I help?", f"question {winner}", f"answer {winner}"]
    # and the next read of that session raises the failure, once.
    history = ChatLedgerMessageHistory(session_id, url=ledger.url, api_key=ledger.writer_key)
    with pytest.raises(HistoryWriteFailed) as caught:
        history.messages
    assert caught.value is failure and caught.value.__cause__ is failure.error
    assert len(history.messages) == 4
    # Recovery: append the lost turn after the winner's.
    history.add_messages(failure.messages)
    assert contents(ledger, session_id)[4:] == [f"question {loser}", f"answer {loser}"]


def test_two_concurrent_writers_with_on_conflict_append_keep_both_turns_whole(
    ledger: Ledger, session_id: str
) -> None:
    seed(ledger, session_id)
    replies, failures = run_two_writers(ledger, session_id, on_conflict="append")
    assert failures == [] and len(replies) == 2
    stored = contents(ledger, session_id)
    assert stored[:2] == ["hello", "hi, how can I help?"]
    turns = [stored[2:4], stored[4:6]]
    assert sorted(turns) == [["question A", "answer A"], ["question B", "answer B"]]


@pytest.mark.anyio
async def test_two_concurrent_async_writers(ledger: Ledger, session_id: str) -> None:
    seed(ledger, session_id)
    barrier = threading.Barrier(2)  # the fake model's async path runs _call in an executor
    failures: list[HistoryWriteFailed] = []

    def get(sid: str) -> ChatLedgerMessageHistory:
        return ChatLedgerMessageHistory(sid, url=ledger.url, api_key=ledger.writer_key, on_write_error=failures.append)

    async def writer(name: str) -> Any:
        chain = prompt_chain([], get, model=BarrierModel(responses=[f"answer {name}"], barrier=barrier))
        return await chain.ainvoke({"question": f"question {name}"}, config=config(session_id))

    await asyncio.wait_for(asyncio.gather(writer("A"), writer("B")), 60)
    assert len(failures) == 1 and isinstance(failures[0].error, chatledger.SeqConflict)
    assert len(contents(ledger, session_id)) == 4
    with pytest.raises(HistoryWriteFailed):
        await get(session_id).aget_messages()
    await get(session_id).aadd_messages(failures[0].messages)
    assert len(contents(ledger, session_id)) == 6


def test_a_write_landing_between_langchains_two_reads_is_a_conflict_not_a_lost_input(
    ledger: Ledger, session_id: str
) -> None:
    """Without history_messages_key, LangChain re-reads the history after the model call and
    drops that many messages from the front of its input. When another writer appended in
    between, it drops the new user message too and hands over only the answer: stored as is,
    the turn would silently lose its question. The adapter's expected seq comes from the
    first read, so the write is refused and surfaces instead."""
    seed(ledger, session_id)
    failures: list[HistoryWriteFailed] = []

    def meanwhile(value: Any) -> Any:
        with ledger.client() as other:
            other.append(session_id, [{"role": "user", "content": "from another replica"}])
        return value

    get = lambda sid: ChatLedgerMessageHistory(  # noqa: E731
        sid, url=ledger.url, api_key=ledger.writer_key, on_write_error=failures.append
    )
    chain = model_chain(["the answer"], get, recorder=Recorder(), model=_then(meanwhile))
    chain.invoke("the question", config=config(session_id))
    assert len(failures) == 1 and isinstance(failures[0].error, chatledger.SeqConflict)
    assert [m.content for m in failures[0].messages] == ["the answer"]  # LangChain lost the question
    assert contents(ledger, session_id) == ["hello", "hi, how can I help?", "from another replica"]


def _then(side_effect: Any) -> Any:
    from langchain_core.runnables import RunnableLambda

    return RunnableLambda(side_effect) | FakeListChatModel(responses=["the answer"])


def test_a_message_that_cannot_be_stored_surfaces_and_writes_nothing(ledger: Ledger, session_id: str) -> None:
    seed(ledger, session_id)
    failures: list[HistoryWriteFailed] = []
    model = FakeMessagesListChatModel(
        responses=[AIMessage("ok", additional_kwargs={"at": datetime.datetime(2026, 11, 21)})]
    )
    get = lambda sid: ChatLedgerMessageHistory(  # noqa: E731
        sid, url=ledger.url, api_key=ledger.writer_key, on_write_error=failures.append
    )
    reply = prompt_chain([], get, model=model).invoke({"question": "q"}, config=config(session_id))
    assert reply.content == "ok"  # LangChain carried on...
    assert len(failures) == 1 and isinstance(failures[0].error, MessageEncodingError)
    assert len(contents(ledger, session_id)) == 2  # ...the turn is not half-written...
    with pytest.raises(HistoryWriteFailed):  # ...and the next turn hears of it.
        prompt_chain(["x"], get).invoke({"question": "next"}, config=config(session_id))


def test_a_direct_caller_sees_the_error_and_can_acknowledge_it(ledger: Ledger, session_id: str) -> None:
    seed(ledger, session_id)
    stale = ChatLedgerMessageHistory(session_id, url=ledger.url, api_key=ledger.writer_key)
    stale.messages  # reads at seq 2
    ChatLedgerMessageHistory(session_id, url=ledger.url, api_key=ledger.writer_key).add_messages([HumanMessage("other")])
    with pytest.raises(chatledger.SeqConflict):
        stale.add_messages([HumanMessage("mine")])
    assert len(stale.pending_failures) == 1
    (failure,) = stale.acknowledge_failures()
    # Resending the same request conflicts again (the session moved on) ...
    with pytest.raises(chatledger.SeqConflict):
        stale.retry_failed_write(failure)
    # ... and so does a plain append until this object has read what the other wrote.
    with pytest.raises(chatledger.SeqConflict):
        stale.add_messages(failure.messages)
    stale.acknowledge_failures()
    assert [m.content for m in stale.messages][-1] == "other"
    stale.add_messages(failure.messages)
    assert contents(ledger, session_id)[2:] == ["other", "mine"]


def test_sessions_and_tenants_never_see_each_other(ledger: Ledger, make_ledger, session_id: str) -> None:
    other_tenant = make_ledger()
    recorders = {name: Recorder() for name in ("a", "b", "c")}
    chains = {
        "a": prompt_chain(["a1", "a2"], lambda sid: ChatLedgerMessageHistory(sid, url=ledger.url, api_key=ledger.writer_key), recorder=recorders["a"]),
        "b": prompt_chain(["b1", "b2"], lambda sid: ChatLedgerMessageHistory(sid, url=ledger.url, api_key=ledger.writer_key), recorder=recorders["b"]),
        # Same session id, another tenant.
        "c": prompt_chain(["c1", "c2"], lambda sid: ChatLedgerMessageHistory(sid, url=other_tenant.url, api_key=other_tenant.writer_key), recorder=recorders["c"]),
    }
    sessions = {"a": session_id, "b": session_id + "-b", "c": session_id}
    for turn in (1, 2):
        for name in ("a", "b", "c"):
            chains[name].invoke({"question": f"{name}q{turn}"}, config=config(sessions[name]))
    for name in ("a", "b", "c"):
        assert recorders[name].last == ["You are a support bot.", f"{name}q1", f"{name}1", f"{name}q2"]
    assert contents(ledger, session_id) == ["aq1", "a1", "aq2", "a2"]
    assert contents(other_tenant, session_id) == ["cq1", "c1", "cq2", "c2"]
