"""What the simulator saw: bounded, so a benchmark of millions of streams uses flat memory."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

__all__ = ("REDACTED", "Record")

REDACTED = "[redacted]"
_SECRET_HEADERS = frozenset({"x-api-key", "authorization"})


class Record:
    """Counters plus the most recent requests and early client closes.

    ``GET /_simulator/stats`` returns ``snapshot()``; gateway tests read it to check header
    pass-through and that cancelling a stream really closed the upstream connection.
    """

    def __init__(self, size: int = 200) -> None:
        self._size = size
        self.reset()

    def reset(self) -> None:
        """Forget everything (``POST /_simulator/reset``)."""
        self.requests = 0
        self.completed = 0
        self.active_streams = 0
        self.by_status: dict[str, int] = {}
        self.by_scenario: dict[str, int] = {}
        self.recent: deque[dict[str, Any]] = deque(maxlen=self._size)
        self.cancelled: deque[dict[str, Any]] = deque(maxlen=self._size)
        self.cancelled_total = 0
        self.cache_seen: set[int] = set()

    def request(self, request_id: str, method: str, path: str, query: bytes,
                headers: dict[str, str]) -> dict[str, Any]:
        """Note a request (credentials redacted); the entry is filled in as the reply goes out."""
        self.requests += 1
        entry: dict[str, Any] = {
            "request_id": request_id, "time": time.time(), "method": method, "path": path,
            "query": query.decode("latin-1"),
            "headers": {k: REDACTED if k in _SECRET_HEADERS else v for k, v in headers.items()},
            "scenario": None, "stream": None, "model": None, "status": None,
        }
        self.recent.append(entry)
        return entry

    def status(self, entry: dict[str, Any], status: int) -> None:
        """Note the HTTP status sent for ``entry``."""
        entry["status"] = status
        key = str(status)
        self.by_status[key] = self.by_status.get(key, 0) + 1

    def scenario(self, entry: dict[str, Any], scenario: str) -> None:
        """Note which scenario ``entry`` ran."""
        entry["scenario"] = scenario
        self.by_scenario[scenario] = self.by_scenario.get(scenario, 0) + 1

    def finished(self, entry: dict[str, Any], events_sent: int, outcome: str) -> None:
        """A reply ran to its planned end (``outcome`` names a fault that ended it, if any)."""
        entry["events_sent"] = events_sent
        entry["outcome"] = outcome
        self.completed += 1

    def client_closed(self, entry: dict[str, Any], events_sent: int) -> None:
        """The client left before the reply was complete."""
        entry["events_sent"] = events_sent
        entry["outcome"] = "client_closed"
        self.cancelled_total += 1
        self.cancelled.append({
            "request_id": entry["request_id"], "path": entry["path"],
            "scenario": entry["scenario"], "stream": entry["stream"],
            "events_sent": events_sent, "reason": "client_closed", "time": time.time(),
        })

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready view for ``GET /_simulator/stats``."""
        return {
            "requests": self.requests,
            "completed": self.completed,
            "active_streams": self.active_streams,
            "cancelled_total": self.cancelled_total,
            "by_status": dict(self.by_status),
            "by_scenario": dict(self.by_scenario),
            "recent": list(self.recent),
            "cancelled": list(self.cancelled),
        }
