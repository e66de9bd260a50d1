"""The recommended wiring, RunnableWithLedgerHistory: a turn whose write failed fails its own
invoke/ainvoke/stream/astream/batch (plain RunnableWithMessageHistory logs it and answers).
With real LangChain classes against a real server: a write the server refused, and a server
that went down during the turn. Then the fallback without the wrapper, raised once."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableLambda

import chatledger
from chatledger import Retry
from chatledger.langchain import ChatLedgerMessageHistory, HistoryWriteFailed, RunnableWithLedgerHistory

from _server import Admin, ServerProcess
from chains import Recorder, config, prompt_chain
from conftest import Backend, Ledger

FAST = Retry(attempts=3, initial_backoff=0.05, max_backoff=0.1, total_timeout=1.0)


def ledger_chain(
    responses: list[str],
    get_history: Callable[[str], Any],
    *,
    model: Any = None,
    recorder: Recorder | None = None,
) -> RunnableWithLedgerHistory:
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are a support bot."), MessagesPlaceholder("history"), ("human", "{question}")]
    )
    chain = prompt | RunnableLambda(recorder or Recorder()) | (model or FakeListChatModel(responses=responses))
    return RunnableWithLedgerHistory(chain, get_history, input_messages_key="question", history_messages_key="history")


def stored(ledger: Ledger, session_id: str) -> list[Any]:
    with ledger.client(ledger.reader_key) as client:
        try:
            return [e.content for e in client.messages(session_id)]
        except chatledger.SessionNotFound:
            return []


def test_a_refused_write_fails_invoke_and_is_raised_nowhere_else(ledger: Ledger, session_id: str) -> None:
    seen: list[HistoryWriteFailed] = []
    get = lambda sid: ChatLedgerMessageHistory(sid, url=ledger.url, api_key=ledger.reader_key, on_write_error=seen.append)  # noqa: E731
    chain = ledger_chain(["the answer"], get)
    with pytest.raises(HistoryWriteFailed) as caught:
        chain.invoke({"question": "hi"}, config=config(session_id))
    assert isinstance(caught.value.error, chatledger.Forbidden) and caught.value.status == 403
    assert [m.content for m in caught.value.messages] == ["hi", "the answer"]
    assert seen == [caught.value], "the callback heard of it too, at once"
    assert stored(ledger, session_id) == []
    # Raised once, there: nothing is kept for a later turn.
    assert get(session_id).pending_failures == [] and get(session_id).messages == []


def test_a_message_the_server_refuses_fails_that_turn_only(ledger: Ledger, session_id: str) -> None:
    get = lambda sid: ChatLedgerMessageHistory(sid, url=ledger.url, api_key=ledger.writer_key)  # noqa: E731
    chain = ledger_chain(["fine", "nul \u0000 inside", "fine again"], get)
    chain.invoke({"question": "one"}, config=config(session_id))
    with pytest.raises(HistoryWriteFailed) as caught:
        chain.invoke({"question": "two"}, config=config(session_id))
    assert isinstance(caught.value.error, chatledger.InvalidText) and caught.value.status == 422
    chain.invoke({"question": "three"}, config=config(session_id))
    assert stored(ledger, session_id) == ["one", "fine", "three", "fine again"]


@pytest.mark.anyio
async def test_ainvoke_and_astream_fail_too(ledger: Ledger, session_id: str) -> None:
    get = lambda sid: ChatLedgerMessageHistory(sid, url=ledger.url, api_key=ledger.reader_key)  # noqa: E731
    with pytest.raises(HistoryWriteFailed) as caught:
        await ledger_chain(["a"], get).ainvoke({"question": "q"}, config=config(session_id))
    assert isinstance(caught.value.error, chatledger.Forbidden)
    chunks: list[Any] = []
    with pytest.raises(HistoryWriteFailed):
        async for chunk in ledger_chain(["streamed"], get).astream({"question": "q"}, config=config(session_id)):
            chunks.append(chunk)
    assert "".join(str(c.content) for c in chunks) == "streamed", "the stream ran, then failed"
    writer = lambda sid: ChatLedgerMessageHistory(sid, url=ledger.url, api_key=ledger.writer_key)  # noqa: E731
    reply = await ledger_chain(["ok"], writer).ainvoke({"question": "q"}, config=config(session_id))
    assert reply.content == "ok" and stored(ledger, session_id) == ["q", "ok"]


def test_stream_and_batch(ledger: Ledger, session_id: str) -> None:
    reader = lambda sid: ChatLedgerMessageHistory(sid, url=ledger.url, api_key=ledger.reader_key)  # noqa: E731
    with pytest.raises(HistoryWriteFailed):
        list(ledger_chain(["streamed"], reader).stream({"question": "q"}, config=config(session_id)))
    writer = lambda sid: ChatLedgerMessageHistory(sid, url=ledger.url, api_key=ledger.writer_key)  # noqa: E731
    answer = RunnableLambda(lambda prompt: AIMessage("bad \u0000" if "q2" in prompt.to_string() else "ok"))
    chain = ledger_chain([], writer, model=answer)
    results = chain.batch(
        [{"question": "q1"}, {"question": "q2"}, {"question": "q3"}],
        [config(session_id + "-1"), config(session_id + "-2"), config(session_id + "-3")],
        return_exceptions=True,
        max_concurrency=1,
    )
    assert results[0].content == "ok" and results[2].content == "ok"
    assert isinstance(results[1], HistoryWriteFailed) and isinstance(results[1].error, chatledger.InvalidText)
    assert stored(ledger, session_id + "-2") == []


def test_the_default_factory_reads_the_environment(
    ledger: Ledger, session_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATLEDGER_URL", ledger.url)
    monkeypatch.setenv("CHATLEDGER_API_KEY", ledger.writer_key)
    prompt = ChatPromptTemplate.from_messages([MessagesPlaceholder("history"), ("human", "{question}")])
    chain = RunnableWithLedgerHistory(
        prompt | FakeListChatModel(responses=["hello"]), input_messages_key="question", history_messages_key="history"
    )
    chain.invoke({"question": "hi"}, config=config(session_id))
    assert stored(ledger, session_id) == ["hi", "hello"]


# -- a chatledger server that goes down during the turn --------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Restartable:
    """A server of our own on a fixed port, so that it can go down and come back."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.listen = f"127.0.0.1:{free_port()}"
        self.server: ServerProcess | None = backend.start_server(self.listen)
        self.url = self.server.url
        keys = Admin(self.url, backend.admin_key).tenant_with_keys()
        self.ledger = Ledger(self.url, keys["tenant"], keys["writer"], keys["reader"], keys["auditor"])

    def stop(self, value: Any = None) -> Any:
        if self.server is not None:
            assert self.server.stop() == 0
            self.server = None
        return value

    def start(self) -> None:
        if self.server is None:
            self.server = self.backend.start_server(self.listen)

    def history(self, sid: str, **kwargs: Any) -> ChatLedgerMessageHistory:
        return ChatLedgerMessageHistory(sid, url=self.url, api_key=self.ledger.writer_key, retry=FAST, **kwargs)


@pytest.fixture
def restartable(backend: Backend) -> Iterator[Restartable]:
    server = Restartable(backend)
    try:
        yield server
    finally:
        server.stop()


def test_a_server_that_goes_down_mid_turn_fails_invoke(restartable: Restartable, session_id: str) -> None:
    chain = ledger_chain(["Hello!"], restartable.history)
    chain.invoke({"question": "Hi"}, config=config(session_id))
    dying = RunnableLambda(restartable.stop) | FakeListChatModel(responses=["Order 8892 shipped."])
    with pytest.raises(HistoryWriteFailed) as caught:
        ledger_chain([], restartable.history, model=dying).invoke({"question": "Where is 8892?"}, config=config(session_id))
    assert isinstance(caught.value.error, chatledger.NetworkError)
    assert [m.content for m in caught.value.messages] == ["Where is 8892?", "Order 8892 shipped."]
    restartable.start()
    # Raised once, from that invoke: nothing is kept, the next read sees only what is stored.
    assert [m.content for m in restartable.history(session_id).messages] == ["Hi", "Hello!"]
    # The caller may resend the failed turn: same request, same key, stored at most once.
    h = restartable.history(session_id)
    resent = h.retry_failed_write(caught.value)
    again = h.retry_failed_write(caught.value)
    assert again.replayed and again.first_seq == resent.first_seq == 3
    recorder = Recorder()
    ledger_chain(["You're welcome."], restartable.history, recorder=recorder).invoke(
        {"question": "Thanks"}, config=config(session_id)
    )
    assert recorder.last == ["You are a support bot.", "Hi", "Hello!", "Where is 8892?", "Order 8892 shipped.", "Thanks"]
    assert stored(restartable.ledger, session_id) == [
        "Hi", "Hello!", "Where is 8892?", "Order 8892 shipped.", "Thanks", "You're welcome.",
    ]


@pytest.mark.anyio
async def test_a_server_that_goes_down_mid_turn_fails_ainvoke(restartable: Restartable, session_id: str) -> None:
    dying = RunnableLambda(restartable.stop) | FakeListChatModel(responses=["lost"])
    with pytest.raises(HistoryWriteFailed) as caught:
        await ledger_chain([], restartable.history, model=dying).ainvoke({"question": "q"}, config=config(session_id))
    assert isinstance(caught.value.error, chatledger.NetworkError)
    restartable.start()
    assert await restartable.history(session_id).aget_messages() == []


def test_fallback_without_the_wrapper_a_server_down_mid_turn_surfaces_once_on_next_use(
    restartable: Restartable, session_id: str
) -> None:
    dying = RunnableLambda(restartable.stop) | FakeListChatModel(responses=["Order 8892 shipped."])
    reply = prompt_chain([], restartable.history, model=dying).invoke({"question": "Where?"}, config=config(session_id))
    assert reply.content == "Order 8892 shipped."  # plain LangChain answered as if stored
    restartable.start()
    recorder = Recorder()
    chain = prompt_chain(["You're welcome."], restartable.history, recorder=recorder)
    with pytest.raises(HistoryWriteFailed) as caught:
        chain.invoke({"question": "Thanks"}, config=config(session_id))
    assert isinstance(caught.value.error, chatledger.NetworkError) and recorder.prompts == []
    restartable.history(session_id).retry_failed_write(caught.value)
    chain.invoke({"question": "Thanks"}, config=config(session_id))  # raised once only
    assert stored(restartable.ledger, session_id) == ["Where?", "Order 8892 shipped.", "Thanks", "You're welcome."]


def test_fallback_a_refused_write_surfaces_once_on_next_use(ledger: Ledger, session_id: str) -> None:
    get = lambda sid: ChatLedgerMessageHistory(sid, url=ledger.url, api_key=ledger.reader_key)  # noqa: E731
    assert prompt_chain(["a"], get).invoke({"question": "q"}, config=config(session_id)).content == "a"
    with pytest.raises(HistoryWriteFailed) as caught:
        get(session_id).messages
    assert isinstance(caught.value.error, chatledger.Forbidden)
    assert get(session_id).messages == []


def test_direct_use_inside_a_wrapped_turn_is_not_collected(ledger: Ledger, session_id: str) -> None:
    """A failure that code inside the chain got and handled is not raised again by invoke."""
    handled: list[Exception] = []

    def side_write(value: Any) -> Any:
        try:
            ChatLedgerMessageHistory(session_id + "-side", url=ledger.url, api_key=ledger.reader_key).add_messages(
                [HumanMessage("side")]
            )
        except chatledger.Forbidden as exc:
            handled.append(exc)
        return value

    get = lambda sid: ChatLedgerMessageHistory(sid, url=ledger.url, api_key=ledger.writer_key)  # noqa: E731
    model = RunnableLambda(side_write) | FakeListChatModel(responses=["fine"])
    reply = ledger_chain([], get, model=model).invoke({"question": "q"}, config=config(session_id))
    assert reply == AIMessage("fine", id=reply.id) and len(handled) == 1
    assert stored(ledger, session_id) == ["q", "fine"]



def test_fallback_a_kept_failure_does_not_cost_langchains_next_write_its_turn(
    ledger: Ledger, session_id: str
) -> None:
    """Turn A's write, which LangChain made and swallowed, was refused and kept while turn B
    ran. B's own write, swallowed the same way if it failed, must store B's turn rather than
    raise A's failure (and lose both); A's failure is raised by the next read, once."""
    get = lambda sid: ChatLedgerMessageHistory(sid, url=ledger.url, api_key=ledger.writer_key)  # noqa: E731
    too_long = "x" * (300 * 1024)  # over the server's 256 KiB per message: 413

    def turn_a_during_b(value: Any) -> Any:
        a = prompt_chain([too_long], get).invoke({"question": "question A"}, config=config(session_id))
        assert a.content == too_long  # plain LangChain answered as if stored
        assert get(session_id).pending_failures
        return value

    b_model = RunnableLambda(turn_a_during_b) | FakeListChatModel(responses=["answer B"])
    reply = prompt_chain([], get, model=b_model).invoke({"question": "question B"}, config=config(session_id))
    assert reply.content == "answer B"
    assert stored(ledger, session_id) == ["question B", "answer B"]
    with pytest.raises(HistoryWriteFailed) as caught:
        get(session_id).messages
    assert isinstance(caught.value.error, chatledger.PayloadTooLarge)
    assert caught.value.messages[0].content == "question A"
    assert [m.content for m in get(session_id).messages] == ["question B", "answer B"]
