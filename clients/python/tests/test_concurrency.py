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


def test_two_concurrent_writers_by_default_both_turns_are_recorded_the_later_flagged(
    ledger: Ledger, session_id: str
) -> None:
    """The default on_conflict="append": the user saw both answers, so both turns are stored,
    each whole; the one written on a stale context says so in its metadata."""
    seed(ledger, session_id)
    replies, failures = run_two_writers(ledger, session_id)
    assert failures == [] and sorted(r.content for r in replies) == ["answer A", "answer B"]
    with ledger.client(ledger.reader_key) as client:
        entries = list(client.messages(session_id))
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5, 6]
    first, second = entries[2:4], entries[4:6]
    assert sorted([[e.content for e in first], [e.content for e in second]]) == [
        ["question A", "answer A"], ["question B", "answer B"]]
    assert all("chatledger" not in e.metadata for e in first)
    for entry in second:
        assert entry.metadata["chatledger"] == {"stale_context": {"expected_seq": 2, "current_seq": 4}}
    # What LangChain reads back is exactly what was added (the flag is not part of a message).
    back = ChatLedgerMessageHistory(session_id, url=ledger.url, api_key=ledger.reader_key).messages
    assert [m.content for m in back[2:]] == [e.content for e in entries[2:]]
    assert all(not m.response_metadata for m in back)


def test_two_concurrent_writers_strict_one_wins_the_other_fails_loudly(ledger: Ledger, session_id: str) -> None:
    seed(ledger, session_id)
    replies, failures = run_two_writers(ledger, session_id, on_conflict="raise")
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
    # and (plain RunnableWithMessageHistory swallowed it, so the fallback applies) the next
    # read of that session raises the failure, once.
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
        return ChatLedgerMessageHistory(
            sid, url=ledger.url, api_key=ledger.writer_key, on_write_error=failures.append, on_conflict="raise"
        )

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


def test_a_write_landing_between_langchains_two_reads_does_not_lose_the_input(
    ledger: Ledger, session_id: str
) -> None:
    """Without history_messages_key, LangChain re-reads the history after the model call and
    drops that many messages from the front of its input. Had another writer appended in
    between, a fresh second read would make it drop the new user message and hand over only
    the answer. The history answers that second read from its first one, so the turn stays
    whole: strictly, it is refused as a conflict (question and answer); by default, it is
    recorded after the other writer's entry, flagged."""
    seed(ledger, session_id)
    failures: list[HistoryWriteFailed] = []

    def meanwhile(value: Any) -> Any:
        with ledger.client() as other:
            other.append(session_id, [{"role": "user", "content": "from another replica"}])
        return value

    def get(**kwargs: Any) -> Any:
        return lambda sid: ChatLedgerMessageHistory(
            sid, url=ledger.url, api_key=ledger.writer_key, on_write_error=failures.append, **kwargs
        )

    strict = model_chain(["the answer"], get(on_conflict="raise"), recorder=Recorder(), model=_then(meanwhile))
    strict.invoke("the question", config=config(session_id))
    assert len(failures) == 1 and isinstance(failures[0].error, chatledger.SeqConflict)
    assert [m.content for m in failures[0].messages] == ["the question", "the answer"]
    assert contents(ledger, session_id) == ["hello", "hi, how can I help?", "from another replica"]
    ChatLedgerMessageHistory(session_id, url=ledger.url, api_key=ledger.writer_key).acknowledge_failures()

    recorder = Recorder()
    lenient = model_chain(["the answer"], get(), recorder=recorder, model=_then(meanwhile))
    lenient.invoke("the question", config=config(session_id))
    assert len(failures) == 1
    assert contents(ledger, session_id)[3:] == ["from another replica", "the question", "the answer"]
    with ledger.client(ledger.reader_key) as client:
        *_, question, answer = client.messages(session_id)
    assert question.metadata["chatledger"] == {"stale_context": {"expected_seq": 3, "current_seq": 4}}
    assert answer.metadata["chatledger"] == question.metadata["chatledger"]


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


def test_a_direct_caller_sees_the_error_once_and_only_there(ledger: Ledger, session_id: str) -> None:
    seed(ledger, session_id)
    failures: list[HistoryWriteFailed] = []
    stale = ChatLedgerMessageHistory(
        session_id, url=ledger.url, api_key=ledger.writer_key, on_conflict="raise", on_write_error=failures.append
    )
    stale.messages  # reads at seq 2
    ChatLedgerMessageHistory(session_id, url=ledger.url, api_key=ledger.writer_key).add_messages([HumanMessage("other")])
    with pytest.raises(chatledger.SeqConflict):
        stale.add_messages([HumanMessage("mine")])
    # Raised to its caller, so kept nowhere: no later read or write raises it again.
    assert stale.pending_failures == [] and len(failures) == 1
    assert len(ChatLedgerMessageHistory(session_id, url=ledger.url, api_key=ledger.writer_key).messages) == 3
    (failure,) = failures
    # Resending the same request conflicts again (the session moved on) ...
    with pytest.raises(chatledger.SeqConflict):
        stale.retry_failed_write(failure)
    # ... and so does a plain append until this object has read what the other wrote.
    with pytest.raises(chatledger.SeqConflict):
        stale.add_messages(failure.messages)
    assert [m.content for m in stale.messages][-1] == "other"
    stale.add_messages(failure.messages)
    assert contents(ledger, session_id)[2:] == ["other", "mine"]


@pytest.mark.anyio
async def test_twenty_concurrent_histories_the_callers_handle_their_conflicts_and_nothing_lingers(
    ledger: Ledger, session_id: str
) -> None:
    """Issue 12's incident: 20 history objects read the same session and each appends a
    turn; the caller catches the SeqConflicts. The next read, through a brand-new history
    object, raises nothing (and neither does any later one)."""
    seed(ledger, session_id)

    def history() -> ChatLedgerMessageHistory:
        return ChatLedgerMessageHistory(session_id, url=ledger.url, api_key=ledger.writer_key, on_conflict="raise")

    histories = [history() for _ in range(20)]
    for h in histories:
        assert len(await h.aget_messages()) == 2

    async def turn(i: int) -> str:
        try:
            await histories[i].aadd_messages([HumanMessage(f"q{i}"), AIMessage(f"a{i}")])
            return "stored"
        except chatledger.SeqConflict:
            return "conflict"

    outcomes = await asyncio.gather(*(turn(i) for i in range(20)))
    assert outcomes.count("stored") == 1 and outcomes.count("conflict") == 19
    for _ in range(20):
        assert len(await history().aget_messages()) == 4
        assert len(history().messages) == 4
    await history().aadd_messages([HumanMessage("next turn")])
    assert len(contents(ledger, session_id)) == 5


@pytest.mark.anyio
async def test_twenty_concurrent_histories_by_default_all_turns_are_recorded(ledger: Ledger, session_id: str) -> None:
    seed(ledger, session_id)
    histories = [ChatLedgerMessageHistory(session_id, url=ledger.url, api_key=ledger.writer_key) for _ in range(20)]
    for h in histories:
        await h.aget_messages()
    await asyncio.gather(*(h.aadd_messages([HumanMessage(f"q{i}"), AIMessage(f"a{i}")]) for i, h in enumerate(histories)))
    with ledger.client(ledger.reader_key) as client:
        entries = list(client.messages(session_id))
    assert len(entries) == 42
    turns = [entries[i : i + 2] for i in range(2, 42, 2)]
    assert sorted(t[0].content for t in turns) == sorted(f"q{i}" for i in range(20))
    for q, a in turns:
        assert a.content == "a" + q.content[1:], "each turn is one contiguous run"
        assert q.metadata.get("chatledger") == a.metadata.get("chatledger")
    flagged = [q for q, _ in turns if "chatledger" in q.metadata]
    assert len(flagged) == 19
    for q in flagged:
        assert q.metadata["chatledger"]["stale_context"] == {"expected_seq": 2, "current_seq": q.seq - 1}


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
