"""Click options generated from a config dataclass (its sections flattened, one option per setting), so each
setting is declared once, as data."""

from __future__ import annotations

import types
import typing
from typing import Any, Callable, Mapping

import click
from click.core import ParameterSource

from sifar.config_fields import config_from_dict, flat_values, merge, nest_flags, settings_of


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


def dataclass_options(cls: type) -> Callable[[Callable], Callable]:
    """Decorator adding one ``--name`` option per setting of a config dataclass, its sections' included
    (help from ``metadata['help']``, defaults shown from ``cls()``); build the config from what the command
    receives with :func:`config_from_options`."""
    defaults = flat_values(cls())

    def decorate(func: Callable) -> Callable:
        for setting in reversed(settings_of(cls)):
            click_type, is_flag = _option_type(setting.hint, setting.field.metadata.get("bounds"))
            name, default = setting.flag.replace("_", "-"), defaults[setting.flag]
            decls = [f"--{name}/--no-{name}"] if is_flag else [f"--{name}"]
            func = click.option(
                *decls, setting.flag, type=None if is_flag else click_type, default=default,
                show_default=default is not None, help=setting.field.metadata.get("help", ""),
            )(func)
        return func

    return decorate


def config_from_options(cls: type, values: dict[str, Any], base: Mapping[str, Any] | None = None) -> Any:
    """The config of the options given on the command line (``values``: the generated options' values),
    over ``base`` (a config file's nested mapping) where given, over the defaults. ConfigError naming the
    setting when a value cannot be used."""
    context = click.get_current_context()
    given = {flag: value for flag, value in values.items()
             if context.get_parameter_source(flag) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)}
    return config_from_dict(cls, merge(base or {}, nest_flags(cls, given)))


def usage_error(err: Exception) -> click.UsageError:
    """A config's ``"<field>: <why>"`` error as the usage error of the option that set the field."""
    field, _, why = str(err).partition(": ")
    return click.UsageError(f"Invalid value for '--{field.replace('_', '-')}': {why}")
