"""``series.Cell``: the library's value, compiled; its series are tested through ``GatewayMetrics``."""

from __future__ import annotations

from prometheus_client.samples import Exemplar
from prometheus_client.values import MutexValue  # type: ignore[attr-defined]

from gateway.telemetry.series import Cell


def test_cell_has_the_librarys_value_interface() -> None:
    """``Cell`` answers every method prometheus_client calls on ``MutexValue``, with its results."""
    ours, theirs = Cell(), MutexValue("counter", "n", "n", (), (), "h")
    assert ours.get_exemplar() is theirs.get_exemplar() is None
    exemplar = Exemplar({"trace_id": "b" * 32}, 1.5, 12.0)
    for value in (ours, theirs):
        value.inc(2.5)
        value.inc(-1.0)
        value.set_exemplar(exemplar)
    assert (ours.get(), ours.get_exemplar()) == (theirs.get(), theirs.get_exemplar()) == (1.5, exemplar)
    ours.set(4.0, timestamp=None)
    theirs.set(4.0, timestamp=None)
    assert ours.get() == theirs.get() == 4.0
