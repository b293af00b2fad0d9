"""`modstream review serve` refuses to start without a way to sign in, or with a weak token."""

from __future__ import annotations

from click.testing import CliRunner

from worker.cli.main import cli


def test_serve_needs_a_sign_in_method_and_strong_tokens() -> None:
    runner = CliRunner()
    none = runner.invoke(cli, ["review", "serve"], env={"MODSTREAM_CONSOLE_TOKENS": ""})
    assert none.exit_code == 2 and "no way to sign in" in none.output
    weak = runner.invoke(cli, ["review", "serve", "--token", "alice=short"])
    assert weak.exit_code == 2 and "at least 16 characters" in weak.output
    assert runner.invoke(cli, ["review", "--help"]).output.count("  apply") == 1
