"""Gateway key authentication and header redaction."""

from __future__ import annotations

import hashlib
import hmac
import io

import pytest

from gateway.security import auth
from gateway.security.auth import (
    ANONYMOUS,
    AuthResult,
    KeyAuthenticator,
    hash_key,
    hash_key_command,
    new_key,
    redact_headers,
)

KEY = "csg_test-key-one"
OTHER = "csg_test-key-two"


def make() -> KeyAuthenticator:
    return KeyAuthenticator((hash_key(KEY), hash_key(OTHER)))


def test_hash_key_is_sha256_hex() -> None:
    assert hash_key(KEY) == hashlib.sha256(KEY.encode()).hexdigest()


def test_x_api_key_accepted_and_identity_is_digest_prefix() -> None:
    result = make().authenticate({"x-api-key": KEY})
    assert result == AuthResult(ok=True, key_id=hash_key(KEY)[:12])
    assert KEY not in result.key_id


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_bearer_accepted_case_insensitive_scheme(scheme: str) -> None:
    result = make().authenticate({"Authorization": f"{scheme} {OTHER}"})
    assert result.ok
    assert result.key_id == hash_key(OTHER)[:12]


def test_raw_asgi_headers_accepted() -> None:
    raw = [(b"content-type", b"application/json"), (b"x-api-key", KEY.encode())]
    result = make().authenticate(raw)
    assert result.ok


def test_raw_asgi_headers_bearer_and_the_first_of_repeats() -> None:
    """Raw pairs: a Bearer credential, and of a repeated header the first value, as from a mapping."""
    bearer = make().authenticate([(b"authorization", f"Bearer {KEY}".encode())])
    assert bearer.ok
    assert make().authenticate([(b"x-api-key", KEY.encode()), (b"x-api-key", b"wrong")]) == bearer
    assert not make().authenticate([(b"x-api-key", b"wrong"), (b"x-api-key", KEY.encode())]).ok
    assert make().authenticate([(b"content-type", b"application/json")]).reason == "missing"


def test_wrong_key_of_equal_length_fails() -> None:
    wrong = KEY[:-1] + ("X" if KEY[-1] != "X" else "Y")
    assert len(wrong) == len(KEY)
    assert make().authenticate({"x-api-key": wrong}) == AuthResult(False, "", "invalid")


def test_missing_key_fails_when_keys_configured() -> None:
    assert make().authenticate({}).reason == "missing"
    assert make().authenticate({"authorization": "Basic abc"}).reason == "missing"
    assert make().authenticate({"x-api-key": "  "}).reason == "missing"


def test_compares_against_every_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append(b)
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert make().authenticate({"x-api-key": KEY}).ok  # the first digest matches
    assert len(calls) == 2  # yet the second is still compared


def test_no_keys_configured_allows_everyone() -> None:
    open_auth = KeyAuthenticator(())
    assert not open_auth.enabled
    assert open_auth.authenticate({}) == AuthResult(ok=True, key_id=ANONYMOUS)
    # A presented key still gets its own identity, so per-key limits distinguish clients.
    assert open_auth.authenticate({"x-api-key": KEY}).key_id == hash_key(KEY)[:12]


def test_a_keys_result_is_made_once_and_the_memory_of_keys_is_bounded() -> None:
    """A result is frozen: one serves every request of a key; an open gateway forgets old keys."""
    auth = KeyAuthenticator(())
    first = auth.authenticate({"x-api-key": KEY})
    assert auth.authenticate([(b"x-api-key", KEY.encode())]) is first
    ids = {auth.authenticate({"x-api-key": f"sk-{n}"}).key_id for n in range(3000)}
    assert len(ids) == 3000
    assert len(auth._passed) <= 1024
    assert auth.authenticate({"x-api-key": KEY}) == first


def test_hash_key_command_reads_a_pipe_and_rejects_empty() -> None:
    assert hash_key_command(stdin=io.StringIO(KEY + "\n")) == hash_key(KEY)
    assert hash_key_command(KEY) == hash_key(KEY)
    with pytest.raises(ValueError, match="empty"):
        hash_key_command(stdin=io.StringIO("\n"))


def test_new_key_is_random_and_prefixed() -> None:
    a, b = new_key(), new_key()
    assert a != b
    assert a.startswith("csg_")
    assert len(a) > 40


def test_redact_headers_masks_credentials() -> None:
    headers = {
        "X-Api-Key": KEY,
        "Authorization": "Bearer abc",
        "Cookie": "s=1",
        "Proxy-Authorization": "Basic x",
        "X-Custom": "sk-ant-api03-secret",
        "x-auth-token": "t",
        "content-type": "application/json",
        "x-simulator-output-tokens": "12",
        "anthropic-version": "2023-06-01",
    }
    out = redact_headers(headers)
    for name in ("x-api-key", "authorization", "cookie", "proxy-authorization", "x-custom",
                 "x-auth-token"):
        assert out[name] == "[redacted]"
    assert out["content-type"] == "application/json"
    assert out["x-simulator-output-tokens"] == "12"
    assert out["anthropic-version"] == "2023-06-01"


def test_redact_headers_raw_asgi_joins_repeats() -> None:
    raw = [(b"Accept", b"a"), (b"accept", b"b"), (b"cookie", b"x"), (b"cookie", b"y")]
    out = redact_headers(raw)
    assert out == {"accept": "a, b", "cookie": "[redacted]"}
