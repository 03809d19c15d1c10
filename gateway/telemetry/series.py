"""The values the gateway moves in one process, compiled: a histogram series and its cells.

prometheus_client keeps each value of a series in a Python object (``MutexValue``: a float, an
exemplar, a lock), read and written through the generic attribute lookup, and walks a
histogram's buckets in Python. ``GatewayMetrics`` puts a ``Cell`` in place of each value of a
child it moves, so that its own updates are native writes while the library's collection (and
any call on the child itself) still goes through ``MutexValue``'s methods: the exposition stays
the library's. In multiprocess mode the values are the library's files and stay so.
"""

from __future__ import annotations

import time
from typing import Any, final

from prometheus_client.samples import Exemplar, Timestamp

__all__ = ("Cell", "HistogramSeries", "native_value")


@final
class Cell:
    """One value of a series in one process: prometheus_client's ``MutexValue``, compiled, lock-free.

    ``GatewayMetrics`` puts one in place of each value object of a child it moves (in one
    process; in multiprocess mode the values are the library's files). The library still reads
    and moves it through ``MutexValue``'s methods (a scrape's ``get`` and ``get_exemplar``, a
    child's own ``inc``), while the gateway's updates are native attribute writes: on the
    library's Python object each read and write went through the generic attribute lookup, over
    two fifths of a histogram observation's cost. There is no lock: the gateway moves its metrics from
    the event loop's thread only, and a scrape reads each float whole. The exemplar is kept as
    its fields and made a named tuple when a scrape asks for it, rather than at each observation.
    """

    __slots__ = ("exemplar_labels", "exemplar_time", "exemplar_value", "value")

    def __init__(self, value: float = 0.0) -> None:
        self.value = value
        self.exemplar_labels: dict[str, str] | None = None
        self.exemplar_value = 0.0
        self.exemplar_time: float | Timestamp | None = None

    def inc(self, amount: float) -> None:
        """Add ``amount``."""
        self.value += amount

    def set(self, value: float, timestamp: float | None = None) -> None:  # the library's signature
        """Replace the value."""
        self.value = value

    def set_exemplar(self, exemplar: Exemplar) -> None:
        """Replace the exemplar."""
        self.exemplar_labels = exemplar.labels
        self.exemplar_value = exemplar.value
        self.exemplar_time = exemplar.timestamp

    def get(self) -> float:
        """The value."""
        return self.value

    def get_exemplar(self) -> Exemplar | None:
        """The exemplar, if any."""
        labels = self.exemplar_labels
        return None if labels is None else Exemplar(labels, self.exemplar_value, self.exemplar_time)


def native_value(value: Any) -> Cell:  # noqa: ANN401 - the library's value object
    """``value`` as a ``Cell`` holding what it holds (itself when it is one)."""
    if isinstance(value, Cell):
        return value
    cell = Cell(value.get())
    exemplar = value.get_exemplar()
    if exemplar is not None:
        cell.set_exemplar(exemplar)
    return cell


@final
class HistogramSeries:
    """One labelled histogram series in one process, as ``GatewayMetrics.observe`` moves it.

    Its buckets and sum are ``Cell``s, put in the child's place, so an observation is a walk
    over the bounds and two native writes; the exposition is the library's own, read off the
    same cells.
    """

    __slots__ = ("_bounds", "_buckets", "_sum")

    def __init__(self, child: Any) -> None:  # noqa: ANN401 - a Histogram child
        self._bounds: list[float] = list(child._upper_bounds)
        self._sum = child._sum = native_value(child._sum)
        self._buckets: list[Cell] = [native_value(bucket) for bucket in child._buckets]
        child._buckets = self._buckets

    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        """``child.observe(amount, exemplar)``; ``amount`` is a number, not NaN.

        The exemplar's labels are not validated as the library does: the gateway's is one
        ``trace_id`` of 32 hex digits.
        """
        buckets = self._buckets
        bounds = self._bounds
        i = 0
        while amount > bounds[i]:  # the last bound is +Inf
            i += 1
        bucket = buckets[i]
        bucket.value += 1.0
        self._sum.value += amount
        if exemplar:
            bucket.exemplar_labels = exemplar
            bucket.exemplar_value = amount
            bucket.exemplar_time = time.time()
