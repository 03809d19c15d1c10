"""Gateway keys: check a presented key against configured SHA-256 digests, redact secrets.

Keys are high-entropy random tokens, so a plain SHA-256 digest is the right storage form (a
password KDF would only add latency to every request). The presented key is hashed first and
the fixed-length digests are compared with ``hmac.compare_digest`` against *every* configured
digest, so the time taken says nothing about which digest, or how much of one, matched.

The identity handed to the rest of the gateway is the key id: the first 12 hex characters of
the digest. It keys per-client limits and resume ownership and may appear in logs; it cannot
be turned back into the key.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import secrets
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from typing import TextIO

__all__ = (
    "ANONYMOUS",
    "AuthResult",
    "Headers",
    "KeyAuthenticator",
    "hash_key",
    "hash_key_command",
    "key_id",
    "new_key",
    "redact_headers",
)

Headers: TypeAlias = Mapping[str, str] | Iterable[tuple[bytes, bytes]]
"""A header mapping (Litestar ``request.headers``, a dict) or raw ASGI ``scope["headers"]``."""

ANONYMOUS = "anonymous"
"""Identity of a request that presented no key while no keys are configured."""

KEY_ID_LENGTH = 12
REDACTED = "[redacted]"
_SECRET_HEADERS = frozenset(
    {"x-api-key", "authorization", "proxy-authorization", "cookie", "set-cookie", "api-key"}
)
# Header names that smell like credentials even when we have never heard of them.
_SECRET_MARKERS = ("api-key", "apikey", "auth", "secret", "password", "session")
_SECRET_SUFFIXES = ("-token", "_token")


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The outcome of :meth:`KeyAuthenticator.authenticate`."""

    ok: bool
    """True when the request may proceed."""
    key_id: str
    """Non-reversible identity (``anonymous`` when no key was presented); empty on failure."""
    reason: str = ""
    """Why it failed: ``missing`` or ``invalid``; empty on success."""


_ANONYMOUS = AuthResult(ok=True, key_id=ANONYMOUS)
_MISSING = AuthResult(ok=False, key_id="", reason="missing")
_INVALID = AuthResult(ok=False, key_id="", reason="invalid")
_PASSED_KEPT = 1024
"""Results of keys let in that are kept (a gateway without configured keys lets in any)."""


def hash_key(key: str) -> str:
    """Return the hex SHA-256 digest of ``key``, as ``GATEWAY_API_KEY_SHA256`` holds it."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_id(digest: str) -> str:
    """Return the short, loggable identity for a key digest."""
    return digest[:KEY_ID_LENGTH]


def new_key() -> str:
    """Return a fresh random gateway key; the ``csg_`` prefix makes leaked keys greppable."""
    return "csg_" + secrets.token_urlsafe(32)


def hash_key_command(key: str | None = None, *, stdin: TextIO | None = None) -> str:
    """Produce the digest for ``claude-gateway hash-key`` without the key touching shell history.

    Args:
        key: The key, if given on the command line (discouraged: it lands in shell history).
        stdin: Where to read the key from when ``key`` is None; ``sys.stdin`` by default. A TTY
            is prompted without echo, a pipe is read up to the first newline.

    Returns:
        The hex digest to put in ``GATEWAY_API_KEY_SHA256``.

    Raises:
        ValueError: The key is empty.
    """
    if key is None:
        stream = stdin if stdin is not None else sys.stdin
        key = getpass.getpass("gateway key: ") if stream.isatty() else stream.readline()
    key = key.strip()
    if not key:
        raise ValueError("empty key: pass one on stdin")
    return hash_key(key)


def _header(headers: Headers, name: str) -> str | None:
    """Return one header value, matching the name case-insensitively (``name`` is lowercase)."""
    if isinstance(headers, Mapping):
        value = headers.get(name)  # Litestar's Headers (and lowercase dicts) hit here
        if value is not None:
            return str(value)
        for k, v in headers.items():
            if k.lower() == name:
                return str(v)
        return None
    raw = name.encode()
    for k, v in headers:
        if k.lower() == raw:
            return v.decode("latin-1")
    return None


def _presented_key(headers: Headers) -> str:
    if isinstance(headers, list):  # raw ASGI pairs (lower-case names): the first value of each
        key = auth = None
        pairs: list[tuple[bytes, bytes]] = headers  # typed: bytes compares in C once compiled
        for name, value in pairs:  # no index built
            if name == b"x-api-key":
                key = key if key is not None else value.decode("latin-1")
            elif name == b"authorization":
                auth = auth if auth is not None else value.decode("latin-1")
        return _bearer_or_key(key, auth)
    return _bearer_or_key(_header(headers, "x-api-key"), _header(headers, "authorization"))


def _bearer_or_key(key: str | None, auth: str | None) -> str:
    if key and key.strip():
        return key.strip()
    if auth:
        scheme, _, credential = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and credential.strip():
            return credential.strip()
    return ""


class KeyAuthenticator:
    """Check the key a request presents against the configured digests.

    Args:
        hashes: Lowercase hex SHA-256 digests of the accepted keys. Empty: every request is
            allowed (the settings refuse a non-loopback listener in that case).
    """

    __slots__ = ("_digests", "_passed")

    def __init__(self, hashes: tuple[str, ...]) -> None:
        self._digests = tuple(bytes.fromhex(h) for h in hashes)
        # The results of keys let in, by digest: frozen, so one serves every request of a key.
        self._passed: dict[bytes, AuthResult] = {}

    @property
    def enabled(self) -> bool:
        """True when keys are configured and requests must present one."""
        return bool(self._digests)

    def authenticate(self, headers: Headers) -> AuthResult:
        """Read ``x-api-key`` or ``Authorization: Bearer`` and check it.

        Args:
            headers: The request headers.

        Returns:
            ``AuthResult(ok=True, key_id=...)`` on success. Without configured keys a presented
            key still yields its own id, so per-key limits tell clients apart.
        """
        key = _presented_key(headers)
        if not key:
            return _MISSING if self._digests else _ANONYMOUS
        digest = hashlib.sha256(key.encode()).digest()
        matched = False
        for candidate in self._digests:
            # No early exit: every digest is compared whatever matched before.
            matched |= hmac.compare_digest(digest, candidate)
        if self._digests and not matched:
            return _INVALID
        passed = self._passed.get(digest)
        if passed is None:
            if len(self._passed) >= _PASSED_KEPT:  # keys presented to an open gateway are unbounded
                self._passed.clear()
            passed = self._passed[digest] = AuthResult(ok=True, key_id=key_id(digest.hex()))
        return passed


def redact_headers(headers: Headers) -> dict[str, str]:
    """Return the headers with lowercase names and credential values replaced by ``[redacted]``.

    Masks ``x-api-key``, ``authorization``, ``proxy-authorization``, ``cookie``,
    ``set-cookie``, any name that looks like a credential, and any value carrying an Anthropic
    key (``sk-ant-``). Repeated headers are joined with ``", "``.
    """
    items: Iterable[tuple[str, str]]
    if isinstance(headers, Mapping):
        items = ((str(k), str(v)) for k, v in headers.items())
    else:
        items = ((k.decode("latin-1"), v.decode("latin-1")) for k, v in headers)
    out: dict[str, str] = {}
    for name, value in items:
        lower = name.lower()
        secret = (
            lower in _SECRET_HEADERS
            or any(marker in lower for marker in _SECRET_MARKERS)
            or lower.endswith(_SECRET_SUFFIXES)
            or "sk-ant-" in value
        )
        shown = REDACTED if secret else value
        out[lower] = f"{out[lower]}, {shown}" if lower in out and not secret else shown
    return out
