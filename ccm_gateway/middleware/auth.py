"""Gateway keys: who is calling, and which models they may use.

Keys are accepted as ``Authorization: Bearer``, ``x-api-key`` (Anthropic SDK, Claude Code) or
``x-goog-api-key``. Only SHA-256 digests are kept: a presented key is format-checked, hashed, looked
up by digest and confirmed with ``hmac.compare_digest``. Every failure — missing, malformed,
oversized, unknown — gets the very same 401, so the answer says nothing about what was wrong.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import re
from collections.abc import Iterable

from ..config import KeyConfig
from ..errors import AuthenticationFailed, PermissionDenied
from ..exchange import exchange_of
from .types import ASGIApp, Receive, Scope, Send

_KEY = re.compile(rb"[\x21-\x7e]{8,256}")  # the format config.py demands of configured keys
_MAX_HEADER = 300  # "Bearer " + the longest valid key, with room to spare; longer is refused unread
_HEADERS = (b"authorization", b"x-api-key", b"x-goog-api-key")
_UNAUTHORIZED = "invalid or missing gateway API key"


class Principal:
    """The authenticated caller, on ``exchange.principal``: key name, team, model allow-list,
    limits and budget (read by the rate-limit stage and, later, billing)."""

    __slots__ = (
        "_allow", "budget_period", "budget_usd", "concurrency", "digest", "models", "name", "restricted", "rpm",
        "team", "tpm",
    )

    def __init__(self, key: KeyConfig, digest: bytes) -> None:
        self.digest = digest
        self.name = key.name
        self.team = key.team
        self.models = tuple(key.models)
        self.rpm = key.rpm
        self.tpm = key.tpm
        self.concurrency = key.concurrency
        self.budget_usd = key.budget_usd
        self.budget_period = key.budget_period
        every = "*" in self.models
        pattern = "|".join(fnmatch.translate(m) for m in self.models) or r"(?!)"
        self._allow = None if every else re.compile(pattern).match
        self.restricted = not every

    def allows(self, model: str) -> bool:
        """True when ``model`` (the name the client asked for) matches one of the key's patterns."""
        return self._allow is None or self._allow(model) is not None

    def __repr__(self) -> str:
        return f"Principal({self.name!r}, team={self.team!r})"


def key_table(keys: Iterable[KeyConfig]) -> dict[bytes, Principal]:
    """Digest → Principal. Plain keys are hashed and then dropped from the config object, so the
    process keeps only digests (``key_sha256`` is filled in their place)."""
    table: dict[bytes, Principal] = {}
    for key in keys:
        if key.key:
            key.key_sha256 = hashlib.sha256(key.key.reveal().encode()).hexdigest()
            key.key = None
        assert key.key_sha256 is not None  # load_config demands key or key_sha256
        digest = bytes.fromhex(key.key_sha256)
        table[digest] = Principal(key, digest)
    return table


class AuthMiddleware:
    def __init__(self, app: ASGIApp, keys: Iterable[KeyConfig] | dict[bytes, Principal]) -> None:
        self.app = app
        self.table = keys if isinstance(keys, dict) else key_table(keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ex = exchange_of(scope)
        if ex is None:
            await self.app(scope, receive, send)
            return
        principal = self.identify(scope["headers"])
        if principal is None:
            raise AuthenticationFailed(_UNAUTHORIZED, headers={"www-authenticate": "Bearer"})
        ex.principal = principal
        if ex.body and principal.restricted and ex.operation != "other":
            model = ex.head().model
            if not principal.allows(model):
                raise PermissionDenied(f"this API key may not use model '{model}'", param="model")
        await self.app(scope, receive, send)

    def identify(self, headers: Iterable[tuple[bytes, bytes]]) -> Principal | None:
        """The Principal of the first valid credential header, else None."""
        for name, value in headers:
            if name in _HEADERS:
                principal = self._lookup(name, value)
                if principal is not None:
                    return principal
        return None

    def _lookup(self, name: bytes, value: bytes) -> Principal | None:
        if len(value) > _MAX_HEADER:
            return None
        if name == b"authorization":
            scheme, _, value = value.partition(b" ")
            if scheme.lower() != b"bearer":
                return None
            value = value.strip(b" ")
        if not _KEY.fullmatch(value):
            return None
        digest = hashlib.sha256(value).digest()
        principal = self.table.get(digest)
        if principal is None:
            return None
        # Found by digest; confirm in constant time so no comparison of secrets can leak timing.
        return principal if hmac.compare_digest(digest, principal.digest) else None
