"""Client settings and the one place credentials are resolved.

Every entry point (``Client``, ``AsyncClient``, ``ChatLedgerMessageHistory``,
``ChatLedgerMiddleware``) resolves the server URL and API key the same way: an explicit
argument first, then the settings of a client passed in, then ``$CHATLEDGER_URL`` and
``$CHATLEDGER_API_KEY``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

from ._retry import Retry

__all__ = ["DEFAULT_LONG_TIMEOUT", "DEFAULT_TIMEOUT", "Settings", "resolve_settings"]

#: Seconds one attempt of an append, reset or read may take (connect, send, answer).
DEFAULT_TIMEOUT = 10.0
#: Seconds one attempt of a verify or export may wait for the server (to the first byte,
#: and then between two chunks of an export).
DEFAULT_LONG_TIMEOUT = 600.0

ENV_URL = "CHATLEDGER_URL"
ENV_API_KEY = "CHATLEDGER_API_KEY"


@dataclass(frozen=True)
class Settings:
    """Everything that identifies a client: where, as whom, how patiently.

    Immutable and hashable: the process-wide pools of ``Client.shared`` and
    ``AsyncClient.shared`` are keyed by it. ``client.settings`` gives a client's settings;
    the key is never shown in ``repr``.
    """

    base_url: str
    api_key: str = field(repr=False)
    retry: Retry = field(default_factory=Retry)
    #: Seconds per attempt of appends, resets and reads.
    timeout: float = DEFAULT_TIMEOUT
    #: Seconds per attempt of verify and export (see :class:`chatledger.CallKind`).
    long_timeout: float = DEFAULT_LONG_TIMEOUT

    def __post_init__(self) -> None:
        if not self.base_url:
            raise ValueError(
                "no chatledger URL: pass url=... (e.g. http://127.0.0.1:8080) or set "
                f"${ENV_URL}"
            )
        if not self.api_key:
            raise ValueError(f"no chatledger API key: pass api_key=... or set ${ENV_API_KEY}")
        # A key read from a file or a secret often ends in a newline; anything else outside
        # visible ASCII would break the request's head (and never names a real key). The key
        # itself is never in the message.
        object.__setattr__(self, "api_key", self.api_key.strip())
        if not self.api_key or not all("!" <= c <= "~" for c in self.api_key):
            raise ValueError("the chatledger API key must be visible ASCII characters only")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"the chatledger URL must start with http:// or https://: {self.base_url!r}")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        if self.timeout <= 0 or self.long_timeout <= 0:
            raise ValueError("timeouts must be positive")

    def with_changes(self, **changes: Any) -> Settings:
        """A copy with some fields replaced (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def resolve_settings(
    url: str | None = None,
    api_key: str | None = None,
    *,
    base: Settings | None = None,
    retry: Retry | None = None,
    timeout: float | None = None,
    long_timeout: float | None = None,
) -> Settings:
    """The settings for these arguments: each given argument wins, then ``base`` (the
    settings of a client that was passed in), then the environment, then the defaults."""
    resolved_url = url or (base.base_url if base else None) or os.environ.get(ENV_URL) or ""
    resolved_key = api_key or (base.api_key if base else None) or os.environ.get(ENV_API_KEY) or ""
    return Settings(
        resolved_url,
        resolved_key,
        retry if retry is not None else (base.retry if base else Retry()),
        timeout if timeout is not None else (base.timeout if base else DEFAULT_TIMEOUT),
        long_timeout
        if long_timeout is not None
        else (base.long_timeout if base else DEFAULT_LONG_TIMEOUT),
    )
