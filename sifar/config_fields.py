"""Configuration fields as data: each setting's default, help and bounds declared once, beside it.

The command lines are generated from these fields (:mod:`sifar.cli.options`), and :func:`check_bounds`
applies the same bounds to configs made in Python.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import click


class ConfigError(ValueError):
    """A setting that cannot work, found before any work: ``"<field>: <why>"``."""


def help_field(default: Any, help: str, *, min: float | None = None, max: float | None = None,
               min_open: bool = False, max_open: bool = False, **kwargs: Any) -> Any:
    """A dataclass field with its command-line help and its bounds (``min``/``max``, open or closed) beside
    it: the generated option refuses values outside them (click's usage error, exit 2, naming the option)."""
    metadata: dict[str, Any] = {"help": help}
    if min is not None or max is not None:
        metadata["bounds"] = {"min": min, "max": max, "min_open": min_open, "max_open": max_open}
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


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


def validate(config: Any, *checks: Callable[[], None]) -> None:
    """A config's bounds (:func:`check_bounds`), then its own ``checks``; the first failure is raised as
    ConfigError ``"<field>: <why>"``, which the command line turns into a usage error naming the option."""
    try:
        check_bounds(config)
        for check in checks:
            check()
    except ValueError as err:
        raise ConfigError(str(err)) from None
