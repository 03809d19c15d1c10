"""Client authentication and admission control (rate and concurrency limits).

``auth`` turns a request's headers into a non-reversible client identity; ``limits`` decides
whether that identity may start another request now. Both are called once per request.
"""

from __future__ import annotations

__all__: tuple[str, ...] = ()
