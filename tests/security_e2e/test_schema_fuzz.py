"""Schemathesis against the OpenAPI document the gateway serves: no input makes the gateway fail (5xx)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.servers import run_gateway

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.support.servers import ServerProcess

EXAMPLES = 15  # per operation and generation mode: ~30 per operation


@pytest.fixture(scope="module")
def gateway() -> Iterator[ServerProcess]:
    """A gateway on its embedded simulator, unpaced, so generated valid requests finish at once."""
    env = {"GATEWAY_SIM_FAST": "true", "GATEWAY_UPSTREAM_IDLE_TIMEOUT": "10", "GATEWAY_AGENT_MAX_TURNS": "2"}
    with run_gateway(env) as server:
        yield server


def test_schema_lists_the_v1_routes(gateway: ServerProcess) -> None:
    """The served schema documents the Anthropic-compatible and agent routes."""
    schema = schemathesis.openapi.from_url(gateway.url + "/schema/openapi.json")
    paths = {op.ok().path for op in schema.get_all_operations()}
    assert {"/v1/messages", "/v1/messages/count_tokens", "/v1/models", "/v1/agent/stream"} <= paths


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
def test_no_server_error_for_any_generated_input(gateway: ServerProcess, mode: schemathesis.GenerationMode) -> None:
    """Every /v1/* operation, valid and invalid inputs: never a 5xx from the gateway."""
    schema = schemathesis.openapi.from_url(gateway.url + "/schema/openapi.json")
    operations = [op.ok() for op in schema.get_all_operations() if op.ok().path.startswith("/v1/")]
    strategies = [op.as_strategy(generation_mode=mode) for op in operations]
    failures: list[str] = []

    @settings(max_examples=EXAMPLES * len(operations), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(strategies))
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=gateway.url, timeout=30)
        if response.status_code >= 500:
            failures.append(f"{response.status_code} {case.as_curl_command()}\n  -> {response.text[:300]}")

    run()
    assert not failures, "\n".join(failures[:5])
