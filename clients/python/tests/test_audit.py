"""verify and export (role auditor), checked against the server's own offline verifier."""

from __future__ import annotations

import io
import json
import subprocess

import pytest

import chatledger

from _server import chatledger_binary
from conftest import Ledger


def fill(ledger: Ledger, session_id: str) -> chatledger.AppendResult:
    with ledger.client() as client:
        client.append(session_id, [{"role": "user", "content": "My order number is 8892"},
                                   {"role": "assistant", "content": [{"type": "text", "text": "Looking ✓"}, "bare"],
                                    "metadata": {"langchain": {"type": "ai"}}}])
        client.reset(session_id)
        return client.append(session_id, [{"role": "user", "content": "again"}])


def test_verify(ledger: Ledger, session_id: str) -> None:
    receipt = fill(ledger, session_id)
    with ledger.client(ledger.auditor_key) as auditor:
        result = auditor.verify(session_id)
        assert result.ok and bool(result)
        assert result.verified_through_seq == 4 and result.head_hash == receipt.head_hash
        assert result.first_bad_seq is None
        with pytest.raises(chatledger.SessionNotFound):
            auditor.verify(session_id + "-missing")
    with ledger.client(ledger.writer_key) as writer:
        with pytest.raises(chatledger.Forbidden):
            writer.verify(session_id)


def test_export_streams_entries_then_the_trailer(ledger: Ledger, session_id: str) -> None:
    receipt = fill(ledger, session_id)
    with ledger.client(ledger.auditor_key) as auditor:
        lines = list(auditor.export(session_id))
    *entries, last = lines
    assert [e["seq"] for e in entries] == [1, 2, 3, 4]
    assert [e["kind"] for e in entries] == ["message", "message", "context_reset", "message"]
    assert all(e["session_id"] == session_id and e["tenant"] == ledger.tenant for e in entries)
    trailer = last["export_trailer"]
    assert trailer["last_seq"] == 4 and trailer["head_hash"] == receipt.head_hash


def test_export_to_a_file_verifies_offline_against_the_receipt(ledger: Ledger, session_id: str) -> None:
    receipt = fill(ledger, session_id)
    buffer = io.BytesIO()
    with ledger.client(ledger.auditor_key) as auditor:
        trailer = auditor.export_to(session_id, buffer)
    assert trailer.last_seq == 4 and trailer.head_hash == receipt.head_hash
    data = buffer.getvalue()
    ok = subprocess.run([chatledger_binary(), "verify-export", "-", "--expect-head", receipt.head_hash],
                        input=data, capture_output=True)
    assert ok.returncode == 0, ok.stderr
    tampered = data.replace("8892".encode(), "8893".encode(), 1)
    assert tampered != data
    bad = subprocess.run([chatledger_binary(), "verify-export", "-"], input=tampered, capture_output=True)
    assert bad.returncode == 1


@pytest.mark.anyio
async def test_async_verify_and_export(ledger: Ledger, session_id: str) -> None:
    receipt = fill(ledger, session_id)
    async with ledger.async_client(ledger.auditor_key) as auditor:
        result = await auditor.verify(session_id)
        assert result.ok and result.head_hash == receipt.head_hash
        lines = [line async for line in auditor.export(session_id)]
        buffer = io.BytesIO()
        trailer = await auditor.export_to(session_id, buffer)
    assert lines[-1]["export_trailer"]["head_hash"] == trailer.head_hash == receipt.head_hash
    assert [json.loads(line) for line in buffer.getvalue().splitlines()][:-1] == lines[:-1]
