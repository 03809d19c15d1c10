"""Settings from the environment and .env; a bad one stops start-up with one line naming it."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from gateway.settings import Settings, SettingsError

if TYPE_CHECKING:
    from pathlib import Path


def run_cli(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/bin:/bin", "GATEWAY_ENV_FILE": ""}
    return subprocess.run([sys.executable, "-m", "gateway", *args], env={**base, **env}, cwd=cwd,
                          capture_output=True, text=True, timeout=30, check=False)


def test_defaults_mean_the_embedded_simulator() -> None:
    """No upstream key or URL: the simulator stands in, on loopback port 8000."""
    settings = Settings.from_env({}, env_file=None)
    assert settings.simulated
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.keepalive_seconds == 15
    assert settings.resume_grace_seconds == 30


def test_environment_wins_over_dotenv(tmp_path: Path) -> None:
    """.env fills in what the environment does not set."""
    env_file = tmp_path / ".env"
    env_file.write_text("GATEWAY_PORT=9001\nGATEWAY_KEEPALIVE_SECONDS=5\n")
    settings = Settings.from_env({"GATEWAY_PORT": "9002"}, env_file=env_file)
    assert settings.port == 9002
    assert settings.keepalive_seconds == 5


@pytest.mark.parametrize(("env", "names"), [
    ({"GATEWAY_PORT": "eighty"}, "GATEWAY_PORT"),
    ({"GATEWAY_KEEPALIVE_SECONDS": "0"}, "GATEWAY_KEEPALIVE_SECONDS"),
    ({"GATEWAY_TELEMETRY": "maybe"}, "GATEWAY_TELEMETRY"),
    ({"GATEWAY_API_KEY_SHA256": "not-a-digest"}, "GATEWAY_API_KEY_SHA256"),
    ({"GATEWAY_CORS_ORIGINS": "*"}, "GATEWAY_CORS_ORIGINS"),
    ({"ANTHROPIC_BASE_URL": "ftp://x"}, "ANTHROPIC_BASE_URL"),
    ({"ANTHROPIC_BASE_URL": "https://api.anthropic.com"}, "ANTHROPIC_API_KEY"),
    ({"GATEWAY_REDIS_URL": "localhost:6379"}, "GATEWAY_REDIS_URL"),
    ({"GATEWAY_PRICES_FILE": "/no/such/file.json"}, "GATEWAY_PRICES_FILE"),
    ({"GATEWAY_HOST": "0.0.0.0"}, "GATEWAY_HOST"),
])
def test_bad_settings_name_the_variable(env: dict[str, str], names: str) -> None:
    """Each malformed value raises an error whose message starts with the variable's name."""
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env, env_file=None)
    assert str(info.value).startswith(names)


def test_open_listen_needs_keys_or_an_explicit_yes() -> None:
    """A non-loopback address is allowed with gateway keys, or with GATEWAY_ALLOW_OPEN."""
    digest = "a" * 64
    assert Settings.from_env({"GATEWAY_HOST": "0.0.0.0", "GATEWAY_API_KEY_SHA256": digest}, env_file=None)
    assert Settings.from_env({"GATEWAY_HOST": "0.0.0.0", "GATEWAY_ALLOW_OPEN": "true"}, env_file=None)


def test_cli_bad_setting_is_one_line_and_exit_2() -> None:
    """`claude-gateway serve` with a bad setting prints one line naming it and exits 2."""
    result = run_cli("serve", env={"GATEWAY_DRAIN_SECONDS": "-1"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "GATEWAY_DRAIN_SECONDS" in lines[0]


def test_cli_refuses_open_host_without_keys() -> None:
    """--host 0.0.0.0 without keys is refused before anything listens."""
    result = run_cli("serve", "--host", "0.0.0.0", env={})
    assert result.returncode == 2
    assert "GATEWAY_HOST" in result.stderr


def test_hash_key_command() -> None:
    """`claude-gateway hash-key KEY` prints the digest operators put in GATEWAY_API_KEY_SHA256."""
    result = run_cli("hash-key", "abc", env={})
    assert result.stdout.strip() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
