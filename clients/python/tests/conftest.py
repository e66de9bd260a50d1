"""Fixtures: the real chatledger server on real PostgreSQL, a fresh tenant per test.

With ``DATABASE_URL`` (scripts/test.sh exports one: a throwaway cluster's owner role) the
session creates its own database there; without it, it starts a throwaway cluster itself.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import (  # noqa: E402
    Admin,
    ServerProcess,
    ThrowawayCluster,
    create_database,
    drop_database,
    start_external,
)

import chatledger  # noqa: E402


@dataclass
class Backend:
    database_url: str
    admin_key_file: Path
    admin_key: str

    def start_server(self, listen: str = "127.0.0.1:0") -> ServerProcess:
        return start_external(self.database_url, self.admin_key_file, listen)


@dataclass
class Ledger:
    """A running server and a fresh tenant with one key per role."""

    url: str
    tenant: str
    writer_key: str
    reader_key: str
    auditor_key: str

    def client(self, key: str | None = None, **kwargs: object) -> chatledger.Client:
        return chatledger.Client(self.url, key or self.writer_key, **kwargs)  # type: ignore[arg-type]

    def async_client(self, key: str | None = None, **kwargs: object) -> chatledger.AsyncClient:
        return chatledger.AsyncClient(self.url, key or self.writer_key, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    owner_url = os.environ.get("DATABASE_URL")
    cluster = None
    if not owner_url:
        cluster = ThrowawayCluster()
        owner_url = cluster.url
    database_url, name = create_database(owner_url)
    admin_key = "pytest-admin-" + secrets.token_hex(24)
    key_file = tmp_path_factory.mktemp("admin") / "admin.key"
    key_file.write_text(admin_key)
    key_file.chmod(0o600)
    try:
        yield Backend(database_url, key_file, admin_key)
    finally:
        drop_database(owner_url, name)
        if cluster is not None:
            cluster.stop()


@pytest.fixture(scope="session")
def server(backend: Backend) -> Iterator[ServerProcess]:
    process = backend.start_server()
    yield process
    process.stop()


def _ledger(url: str, admin_key: str) -> Ledger:
    keys = Admin(url, admin_key).tenant_with_keys()
    return Ledger(url, keys["tenant"], keys["writer"], keys["reader"], keys["auditor"])


@pytest.fixture
def ledger(server: ServerProcess, backend: Backend) -> Ledger:
    """A fresh tenant on the session's server: tests cannot see each other's sessions."""
    return _ledger(server.url, backend.admin_key)


@pytest.fixture
def make_ledger(server: ServerProcess, backend: Backend):  # type: ignore[no-untyped-def]
    """Another tenant on the same server (for isolation tests)."""
    return lambda: _ledger(server.url, backend.admin_key)


@pytest.fixture
def session_id() -> str:
    return "s-" + secrets.token_hex(8)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _no_kept_failures() -> Iterator[None]:
    """Each test starts and ends without swallowed failures kept in this process."""
    from chatledger.langchain import _surfacing

    _surfacing.clear_all()
    yield
    _surfacing.clear_all()
