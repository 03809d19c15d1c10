"""The request bodies the gateway checks, as msgspec structs.

Litestar decodes them (and serves their JSON schema in the OpenAPI document); the fast path
decodes ``MessagesRequest`` itself. Unknown fields are allowed and stay in the raw bytes, which
are forwarded unchanged. Not compiled (``setup.py``): mypyc drops the annotations msgspec reads.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

__all__ = ("CountTokensRequest", "InputMessage", "MessagesRequest")

NonEmpty = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class InputMessage(msgspec.Struct, forbid_unknown_fields=False):
    """One turn of ``messages``."""

    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class MessagesRequest(msgspec.Struct, forbid_unknown_fields=False):
    """The fields of a Messages API request the gateway checks; the rest pass through."""

    model: NonEmpty
    max_tokens: Annotated[int, msgspec.Meta(ge=1)]
    messages: Annotated[list[InputMessage], msgspec.Meta(min_length=1)]
    stream: bool = False
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    metadata: dict[str, Any] | None = None


class CountTokensRequest(msgspec.Struct, forbid_unknown_fields=False):
    """The fields of a count_tokens request the gateway checks."""

    model: NonEmpty
    messages: Annotated[list[InputMessage], msgspec.Meta(min_length=1)]
