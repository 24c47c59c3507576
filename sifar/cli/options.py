"""Click options generated from a config dataclass, so each setting is declared once, as data."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Callable

import click


def _option_type(hint: Any, bounds: dict[str, Any] | None = None) -> tuple[Any, bool]:
    """(click type, is_flag) for a field's annotation and its bounds; Optional[X] becomes X."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = inner[0]
    if hint is bool:
        return bool, True
    if typing.get_origin(hint) is typing.Literal:
        return click.Choice([str(a) for a in typing.get_args(hint)]), False
    if bounds and hint in (int, float):
        return (click.IntRange if hint is int else click.FloatRange)(**bounds), False
    return hint, False


def dataclass_options(cls: type, skip: tuple[str, ...] = ()) -> Callable[[Callable], Callable]:
    """Decorator adding one ``--field-name`` option per dataclass field (help from ``metadata['help']``)."""
    hints = typing.get_type_hints(cls)

    def decorate(func: Callable) -> Callable:
        for field in reversed(dataclasses.fields(cls)):
            if field.name in skip:
                continue
            click_type, is_flag = _option_type(hints[field.name], field.metadata.get("bounds"))
            name = field.name.replace("_", "-")
            required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
            default = None if required else (
                field.default if field.default is not dataclasses.MISSING else field.default_factory())
            decls = [f"--{name}/--no-{name}"] if is_flag else [f"--{name}"]
            func = click.option(
                *decls, field.name, type=None if is_flag else click_type, default=default, required=required,
                show_default=not required and default is not None, help=field.metadata.get("help", ""),
            )(func)
        return func

    return decorate


def ema_option(command: Callable) -> Callable:
    """``--ema/--no-ema``, None when neither is given (the weights training validated with)."""
    return click.option("--ema/--no-ema", default=None,
                        help="The checkpoint's EMA weights, or its raw ones [default: those training validated "
                             "with].")(command)


def usage_error(err: Exception) -> click.UsageError:
    """A config's ``"<field>: <why>"`` error as the usage error of the option that set the field."""
    field, _, why = str(err).partition(": ")
    return click.UsageError(f"Invalid value for '--{field.replace('_', '-')}': {why}")
