"""Starting the real chatledger binary and a throwaway PostgreSQL for the tests."""

from __future__ import annotations

import collections
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

REPO = Path(__file__).resolve().parents[3]


def chatledger_binary() -> str:
    # run-tests.sh sets CHATLEDGER_BIN from `cargo metadata` (CARGO_TARGET_DIR is honoured).
    path = os.environ.get("CHATLEDGER_BIN") or str(REPO / "target" / "debug" / "chatledger")
    if not os.access(path, os.X_OK):
        raise RuntimeError(
            f"no chatledger binary at {path}: run `cargo build` (or scripts/test.sh) first, "
            "or set CHATLEDGER_BIN"
        )
    return path


def pg_bindir() -> Path:
    """Where initdb and pg_ctl live: $PATH, `pg_config --bindir`, /usr/lib/postgresql/*/bin
    (the order scripts/test.sh and the server use)."""

    def ok(d: Path) -> bool:
        return os.access(d / "initdb", os.X_OK) and os.access(d / "pg_ctl", os.X_OK)

    for d in os.environ.get("PATH", "").split(os.pathsep):
        if d and ok(Path(d)):
            return Path(d)
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
        if ok(Path(out.stdout.strip())):
            return Path(out.stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        pass
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in p.parent.name.split(".")],
        reverse=True,
    )
    for d in candidates:
        if ok(d):
            return d
    raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found")


def as_cluster_user(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root; as root the cluster runs as `postgres`."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


def run_cluster_cmd(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(as_cluster_user(args), cwd="/", capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]


def make_world_traversable_tmpdir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


class ThrowawayCluster:
    """A PostgreSQL cluster on a unix socket, for running the tests without DATABASE_URL."""

    def __init__(self) -> None:
        self.bindir = pg_bindir()
        self.dir = make_world_traversable_tmpdir("chatledger-pytest-pg.")
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        self.dir.chmod(0o700 if os.geteuid() != 0 else 0o755)
        r = run_cluster_cmd(
            [str(self.bindir / "initdb"), "-D", f"{self.dir}/pg", "-U", "postgres",
             "--auth-local=trust", "--auth-host=reject", "--encoding=UTF8", "--locale=C",
             "--no-sync"]
        )
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {r.stderr}")
        r = run_cluster_cmd(
            [str(self.bindir / "pg_ctl"), "-D", f"{self.dir}/pg", "-l", f"{self.dir}/postgres.log",
             "-w", "-t", "60", "-o",
             f"-c listen_addresses='' -c unix_socket_directories='{self.dir}' -c fsync=off",
             "start"]
        )
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {r.stderr}")
        psql = str(self.bindir / "psql") if (self.bindir / "psql").exists() else "psql"
        r = run_cluster_cmd(
            [psql, "-h", str(self.dir), "-U", "postgres", "-d", "postgres", "-X", "-q",
             "-v", "ON_ERROR_STOP=1",
             "-c", "CREATE ROLE chatledger_owner LOGIN CREATEDB CREATEROLE",
             "-c", "CREATE DATABASE chatledger OWNER chatledger_owner"]
        )
        if r.returncode != 0:
            raise RuntimeError(f"psql failed: {r.stderr}")
        self.url = f"postgres://chatledger_owner@localhost/chatledger?host={self.dir}"

    def stop(self) -> None:
        run_cluster_cmd(
            [str(self.bindir / "pg_ctl"), "-D", f"{self.dir}/pg", "-m", "immediate", "-w", "stop"]
        )
        shutil.rmtree(self.dir, ignore_errors=True)


def psql_binary() -> str:
    found = shutil.which("psql")
    if found:
        return found
    return str(pg_bindir() / "psql")


def create_database(owner_url: str) -> tuple[str, str]:
    """Creates a fresh database with the owner role of ``owner_url``; returns its URL and name."""
    name = "chatledger_py_" + secrets.token_hex(6)
    r = subprocess.run(
        [psql_binary(), owner_url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c",
         f"CREATE DATABASE {name}"],
        capture_output=True, text=True, cwd="/",
    )
    if r.returncode != 0:
        raise RuntimeError(f"CREATE DATABASE failed: {r.stderr}")
    parts = urlsplit(owner_url)
    return urlunsplit(parts._replace(path="/" + name)), name


def drop_database(owner_url: str, name: str) -> None:
    subprocess.run(
        [psql_binary(), owner_url, "-X", "-q", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"],
        capture_output=True, text=True, cwd="/",
    )


class ServerProcess:
    """`chatledger serve` on an ephemeral loopback port; stderr is drained into ``logs``."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, listen: str = "127.0.0.1:0") -> None:
        self.logs: collections.deque[str] = collections.deque(maxlen=2000)
        self._listening = threading.Event()
        self.address: str | None = None
        self.proc = subprocess.Popen(
            [chatledger_binary(), "serve", "--listen", listen, "--log-format", "json", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 120
        while not self._listening.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    "chatledger did not start listening:\n" + "\n".join(list(self.logs)[-40:])
                )
        self.url = f"http://{self.address}"

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.logs.append(line.rstrip("\n"))
            if self.address is None:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                fields = record.get("fields", {}) if isinstance(record, dict) else {}
                if fields.get("message") == "chatledger listening":
                    self.address = fields["address"]
                    self._listening.set()

    def stop(self) -> int:
        """SIGTERM, and wait for a graceful exit; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return self.proc.returncode


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    for name in list(env):
        if name.startswith("CHATLEDGER_"):
            env.pop(name)
    return env


def checkpoint_key_beside(admin_key_file: Path) -> Path:
    """The checkpoint signing key every server of a deployment shares, made on first use."""
    path = admin_key_file.with_name("checkpoint.key")
    if not path.exists():
        subprocess.run(
            [chatledger_binary(), "checkpoint-key", "--generate", str(path), "--name", "chatledger/pytest"],
            capture_output=True,
            check=True,
        )
    return path


def start_external(database_url: str, admin_key_file: Path, listen: str = "127.0.0.1:0") -> ServerProcess:
    key = checkpoint_key_beside(admin_key_file)
    return ServerProcess(
        ["--database-url", database_url, "--admin-key-file", str(admin_key_file), "--checkpoint-key-file", str(key)],
        env=server_env(),
        listen=listen,
    )


def start_embedded(data_dir: Path) -> ServerProcess:
    return ServerProcess(["--data-dir", str(data_dir)], env=server_env())


class Admin:
    """Tenants and keys through the admin API."""

    def __init__(self, url: str, admin_key: str) -> None:
        self.url = url
        self.admin_key = admin_key

    def tenant_with_keys(self) -> dict[str, str]:
        name = "t-" + secrets.token_hex(6)
        headers = {"Authorization": f"Bearer {self.admin_key}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as http:
            r = http.post("/v1/admin/tenants", json={"name": name})
            r.raise_for_status()
            keys = {"tenant": name}
            for role in ("writer", "reader", "auditor"):
                r = http.post(
                    "/v1/admin/keys", json={"tenant": name, "role": role, "label": f"pytest-{role}"}
                )
                r.raise_for_status()
                keys[role] = r.json()["key"]
        return keys
