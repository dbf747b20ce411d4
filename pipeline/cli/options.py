"""click options built from the records of :mod:`pipeline.common.defaults`.

A flag's name, default, help and range come from its record, and a value is checked by the
record's own rule, the one job files use: a value out of range is refused with one line naming
the flag and the range (exit 2), never clamped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from pipeline.common.defaults import BadValue, Setting

F = TypeVar("F", bound=Callable[..., Any])


class SettingType(click.ParamType):
    """A value checked by its setting, in the words job files use too:
    ``Invalid value for '--page-limit': expected integer between 1 and 1000, got 0``."""

    def __init__(self, setting: Setting[Any]) -> None:
        self.setting = setting
        self.name = {int: "integer", float: "float"}.get(setting.value_type, "text")

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return self.setting.parse(value) if isinstance(value, str) else self.setting.check(value)
        except BadValue as exc:
            self.fail(str(exc), param, ctx)


def setting_option(setting: Setting[Any], *, help: str | None = None) -> Callable[[F], F]:
    """The click option of ``setting``; ``help`` replaces the record's for one command whose
    use of the setting reads differently (delete's workers send deletes, not inserts)."""
    if setting.flag is None:
        raise ValueError(f"setting {setting.name} has no command-line flag")
    text = help or setting.help
    if setting.value_type is bool:
        return click.option(
            setting.flag, setting.name, is_flag=True, default=setting.default, help=f"{text}."
        )
    metavar = setting.metavar or ("[" + "|".join(setting.choices) + "]" if setting.choices else None)
    if setting.value_type in (int, float) and setting.allowed:
        text += f"; {setting.allowed}"
    if setting.envvar:
        text += f" (env {setting.envvar})"
    return click.option(
        setting.flag,
        setting.name,
        type=SettingType(setting),
        default=setting.default,
        show_default=setting.shown if setting.shown is not None else setting.default is not None,
        metavar=metavar,
        envvar=setting.envvar,
        help=f"{text}.",
    )


def setting_options(*settings: Setting[Any]) -> Callable[[F], F]:
    """One decorator adding the options of ``settings``, listed in that order in ``--help``."""

    def decorate(fn: F) -> F:
        for setting in reversed(settings):
            fn = setting_option(setting)(fn)
        return fn

    return decorate
