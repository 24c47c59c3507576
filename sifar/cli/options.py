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


def check_bounds(config: Any) -> None:
    """ValueError naming the first field of a config dataclass outside its :func:`help_field` bounds (the
    command line refuses those values itself, naming the option; this covers Python callers)."""
    for field in dataclasses.fields(config):
        bounds, value = field.metadata.get("bounds"), getattr(config, field.name)
        if not bounds or value is None:
            continue
        try:
            (click.IntRange if isinstance(value, int) else click.FloatRange)(**bounds).convert(value, None, None)
        except click.BadParameter as err:
            raise ValueError(f"{field.name}: {err.message}") from None


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


def help_field(default: Any, help: str, *, min: float | None = None, max: float | None = None,
               min_open: bool = False, max_open: bool = False, **kwargs: Any) -> Any:
    """A dataclass field with its command-line help and its bounds (``min``/``max``, open or closed) beside
    it: the generated option refuses values outside them (click's usage error, exit 2, naming the option)."""
    metadata: dict[str, Any] = {"help": help}
    if min is not None or max is not None:
        metadata["bounds"] = {"min": min, "max": max, "min_open": min_open, "max_open": max_open}
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def ema_option(command: Callable) -> Callable:
    """``--ema/--no-ema`` as ``weights``: "ema", "model", or None for those training validated with."""
    def to_weights(ctx: click.Context, param: click.Parameter, value: bool | None) -> str | None:
        return None if value is None else ("ema" if value else "model")

    return click.option("--ema/--no-ema", "weights", default=None, callback=to_weights,
                        help="The checkpoint's EMA weights, or its raw ones [default: those training validated "
                             "with].")(command)
