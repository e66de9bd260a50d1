"""How the history reads: one request for a window of up to 1000 messages, longer windows
backwards in pages at one head, every entry once, in view=chat (checked on the wire through
tests/_faults.py)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from langchain_core.messages import AIMessage, HumanMessage

import chatledger
from chatledger.langchain import ChatLedgerMessageHistory

from _faults import FaultProxy
from conftest import Ledger


def fill(ledger: Ledger, session_id: str, batches: int, *, reset_first: bool = True) -> None:
    with ledger.client() as client:
        client.append(session_id, [{"role": "user", "content": "before the reset"}])
        if reset_first:
            client.reset(session_id)
        for batch in range(batches):
            client.append(session_id, [{"role": "user", "content": f"{batch}-{i}"} for i in range(100)])


def query(target: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}


def test_a_short_window_is_one_request_in_the_chat_view(ledger: Ledger, session_id: str) -> None:
    with ledger.client() as client:
        client.append(session_id, [{"role": "user", "content": f"m{i}"} for i in range(20)])
    with FaultProxy(ledger.url) as proxy:
        history = ChatLedgerMessageHistory(session_id, url=proxy.url, api_key=ledger.writer_key)
        assert len(history.messages) == 20
    assert len(proxy.seen) == 1
    assert urlsplit(proxy.seen[0].target).path.endswith("/context")
    assert query(proxy.seen[0].target) == {"limit": "1000", "view": "chat"}


def test_a_long_window_is_read_once_backwards_in_pages_at_one_head(ledger: Ledger, session_id: str) -> None:
    fill(ledger, session_id, 25)  # seq 1, a reset at 2, then 2500 messages (3..2502)

    with FaultProxy(ledger.url) as proxy:
        history = ChatLedgerMessageHistory(session_id, url=proxy.url, api_key=ledger.writer_key)
        messages = history.messages
    assert len(messages) == 2500 and messages[0].content == "0-0" and messages[-1].content == "24-99"
    targets = [query(s.target) for s in proxy.seen]
    assert targets[0] == {"limit": "1000", "view": "chat"}
    # The rest is known from the first answer (seqs have no gaps): fetched concurrently.
    assert sorted(targets[1:], key=lambda q: q["before_seq"]) == [
        {"limit": "1000", "order": "desc", "before_seq": "1503", "view": "chat"},
        {"limit": "500", "order": "desc", "before_seq": "503", "view": "chat"},
    ], "each entry read once, never before the reset"
    # The head of that read is the base of the next write, which is accepted.
    history.add_messages([AIMessage("the end")])
    assert ChatLedgerMessageHistory(session_id, url=ledger.url, api_key=ledger.writer_key, window=2).messages == [
        HumanMessage("24-99"), AIMessage("the end")]


def test_entries_appended_during_a_paged_read_are_not_in_it(ledger: Ledger, session_id: str) -> None:
    fill(ledger, session_id, 12)
    with FaultProxy(ledger.url) as proxy:
        history = ChatLedgerMessageHistory(session_id, url=proxy.url, api_key=ledger.writer_key, on_conflict="raise")
        # The first page fixes the head; later pages only go backwards from it.
        original = proxy._relay

        def relay_then_append(raw: bytes) -> bytes:
            answer = original(raw)
            if len(proxy.seen) == 1:
                with ledger.client() as other:
                    other.append(session_id, [{"role": "user", "content": "late"}])
            return answer

        proxy._relay = relay_then_append  # type: ignore[method-assign]
        messages = history.messages
    assert len(messages) == 1200 and "late" not in [m.content for m in messages]
    with pytest.raises(chatledger.SeqConflict):  # the write is based on that head
        history.add_messages([HumanMessage("mine")])


@pytest.mark.parametrize("window", [5, 1000, 1001, 2200])
def test_windows_of_any_size(ledger: Ledger, session_id: str, window: int) -> None:
    fill(ledger, session_id, 21, reset_first=False)  # 2101 messages, no reset
    messages = ChatLedgerMessageHistory(session_id, url=ledger.url, api_key=ledger.writer_key, window=window).messages
    everything = ["before the reset"] + [f"{b}-{i}" for b in range(21) for i in range(100)]
    assert [m.content for m in messages] == everything[-window:]


@pytest.mark.anyio
async def test_async_long_window(ledger: Ledger, session_id: str) -> None:
    fill(ledger, session_id, 45)
    messages = await ChatLedgerMessageHistory(session_id, url=ledger.url, api_key=ledger.writer_key).aget_messages()
    assert [m.content for m in messages] == [f"{b}-{i}" for b in range(45) for i in range(100)]


def test_a_page_the_server_cuts_short_is_followed_up(ledger: Ledger, session_id: str) -> None:
    """The server ends a page before 8 MiB of entries; the rest of its range is read after."""
    big = "x" * 200_000
    with ledger.client() as client:
        for _ in range(11):
            client.append(session_id, [{"role": "user", "content": big}] * 5)  # 1 MB a batch
        for _ in range(10):
            client.append(session_id, [{"role": "user", "content": str(i)} for i in range(100)])
    with FaultProxy(ledger.url) as proxy:
        messages = ChatLedgerMessageHistory(session_id, url=proxy.url, api_key=ledger.writer_key).messages
    assert len(messages) == 1055 and [m.content for m in messages[-1000:]] == [str(i) for i in range(100)] * 10
    assert all(m.content == big for m in messages[:55])
    befores = [int(query(s.target)["before_seq"]) for s in proxy.seen[1:]]
    assert len(befores) == len(set(befores)), "nothing read twice"


def test_the_window_plan_follows_up_a_page_cut_short() -> None:
    """The plan alone (it does no I/O): a page the server ended early (its size cap) is
    continued from where it stopped, and nothing else is asked twice."""
    from chatledger.langchain._turns import WindowRead

    def entries(seqs: range) -> list[dict]:
        return [{"seq": s, "kind": "message", "role": "user", "content": str(s)} for s in seqs]

    plan = WindowRead("s", None)
    calls = plan.feed_first({"last_seq": 2600, "context_start_seq": 100, "entries": entries(range(1601, 2601))})
    assert [b for b, _ in calls] == [1601, 601]
    first = {"entries": entries(range(1600, 900, -1)), "next_before_seq": 901}  # cut at 901
    second = {"entries": entries(range(600, 100, -1)), "next_before_seq": None}
    follow = plan.feed_pages([(1601, first), (601, second)])
    assert [(b, c.path.split("?")[1]) for b, c in follow] == [(901, "limit=300&order=desc&before_seq=901&view=chat")]
    assert plan.feed_pages([(901, {"entries": entries(range(900, 600, -1)), "next_before_seq": 601})]) == []
    assert [e["seq"] for e in plan.entries()] == list(range(101, 2601))
