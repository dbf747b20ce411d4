"""Every command of ``btpipe``, lazily loaded ones included, and every option has help text."""

from __future__ import annotations

from collections.abc import Iterator

import click

from pipeline.cli import LAZY_COMMANDS, main


def walk(command: click.Command, path: str) -> Iterator[tuple[str, click.Command]]:
    """``command`` and every command below it, each with its full name."""
    yield path, command
    if isinstance(command, click.Group):
        ctx = click.Context(command, info_name=path)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None, f"{path} {name}: listed but cannot be loaded"
            yield from walk(sub, f"{path} {name}")


def missing_help(path: str, command: click.Command) -> list[str]:
    """What lacks help in one command: the command itself, or an option (by its flags)."""
    problems = [] if (command.help or "").strip() else [f"{path}: no help text"]
    for param in command.params:
        if isinstance(param, click.Option) and not (param.help or "").strip():
            problems.append(f"{path} {'/'.join(param.opts)}: no help text")
    return problems


def test_every_command_and_option_has_help() -> None:
    commands = dict(walk(main, "btpipe"))
    assert {f"btpipe {name}" for name in LAZY_COMMANDS} <= set(commands)
    assert [p for path, command in commands.items() for p in missing_help(path, command)] == []


def test_the_check_finds_what_lacks_help() -> None:
    @click.command()
    @click.option("--bare")
    @click.option("--fine", help="Explained.")
    def undocumented(bare: str, fine: str) -> None:
        pass

    assert missing_help("btpipe x", undocumented) == [
        "btpipe x: no help text",
        "btpipe x --bare: no help text",
    ]
