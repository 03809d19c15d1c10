"""``request_id`` (proxy/messages.py): the client's (or nginx's) id when it is sane, else a new one per request."""

from __future__ import annotations

import re
from typing import Any

from gateway.proxy.messages import request_id


def scope(*headers: tuple[bytes, bytes]) -> Any:
    return {"type": "http", "headers": list(headers)}


def test_a_request_id_is_the_clients_or_a_new_one() -> None:
    """A printable id of up to 128 characters is kept; otherwise 32 new hex digits, kept for the request."""
    assert request_id(scope((b"x-request-id", b"abc-123"))) == "abc-123"
    assert request_id(scope((b"x-request-id", b"first"), (b"x-request-id", b"second"))) == "first"
    fresh = [scope(), scope((b"x-request-id", b"a\x01b")), scope((b"x-request-id", b"x" * 129))]
    ids = [request_id(s) for s in fresh]
    assert all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in ids)
    assert len(set(ids)) == len(ids)
    assert request_id(fresh[0]) == ids[0]
