"""Click options generated from a config dataclass, so each setting is declared once, as data."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Callable

import click


def _option_type(hint: Any) -> tuple[Any, bool]:
    """(click type, is_flag) for a field's annotation; Optional[X] becomes X."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = inner[0]
    if hint is bool:
        return bool, True
    if typing.get_origin(hint) is typing.Literal:
        return click.Choice([str(a) for a in typing.get_args(hint)]), False
    return hint, False


def dataclass_options(cls: type, skip: tuple[str, ...] = ()) -> Callable[[Callable], Callable]:
    """Decorator adding one ``--field-name`` option per dataclass field (help from ``metadata['help']``)."""
    hints = typing.get_type_hints(cls)

    def decorate(func: Callable) -> Callable:
        for field in reversed(dataclasses.fields(cls)):
            if field.name in skip:
                continue
            click_type, is_flag = _option_type(hints[field.name])
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


def help_field(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with its command-line help beside it."""
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)
