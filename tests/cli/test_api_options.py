"""Options every API command shares arrive as one ready ``ClientSettings``."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from pipeline.api.client import ClientSettings, RetryPolicy, Timeouts
from pipeline.cli.common import api_options


def test_api_options_arrive_as_one_settings_value(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[ClientSettings, str]] = []

    @click.command()
    @api_options
    @click.option("--other")
    def command(settings: ClientSettings, other: str) -> None:
        seen.append((settings, other))

    monkeypatch.setenv("BRAINTRUST_API_KEY", "key-from-env")
    flags = ["--api-url", "http://h:1", "--impersonate", "u@x", "--max-retries", "1", "--max-backoff", "3",
             "--timeout", "5", "--connections", "2", "--other", "o"]  # fmt: skip
    result = CliRunner().invoke(command, flags)
    assert result.exit_code == 0, result.output
    expected = ClientSettings(
        api_url="http://h:1", api_key="key-from-env", impersonate_user="u@x",
        retry=RetryPolicy(max_attempts=1, max_delay=3.0), timeouts=Timeouts(read=5.0), max_connections=2,
    )  # fmt: skip
    assert seen == [(expected, "o")]
    assert "--api-key TEXT" in CliRunner().invoke(command, ["--help"]).output


def test_without_flags_the_settings_are_the_library_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[ClientSettings] = []

    @click.command()
    @api_options
    def command(settings: ClientSettings) -> None:
        seen.append(settings)

    monkeypatch.delenv("BRAINTRUST_API_URL", raising=False)
    monkeypatch.setenv("BRAINTRUST_API_KEY", "k")
    assert CliRunner().invoke(command, []).exit_code == 0
    assert seen == [ClientSettings(api_key="k")]
