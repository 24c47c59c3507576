"""Click options generated from a config dataclass (its sections flattened, one option per setting), so each
setting is declared once, as data."""

from __future__ import annotations

import types
import typing
from typing import Any, Callable, Mapping

import click
from click.core import ParameterSource

from sifar import __version__
from sifar.config_fields import config_from_dict, flat_values, merge, nest_flags, settings_of


def comma_items(value: str) -> tuple[str, ...]:
    """The comma-separated items of an option, stripped, each once, in the order given."""
    return tuple(dict.fromkeys(item.strip() for item in value.split(",") if item.strip()))


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
            name, default, metadata = setting.flag.replace("_", "-"), defaults[setting.flag], setting.field.metadata
            if "off_value" in metadata:
                func = click.option(f"--no-{name}", f"no_{setting.flag}", is_flag=True,
                                    help=f"Same as --{name} {metadata['off_value']}.")(func)
            decls = [f"--{name}/--no-{name}"] if is_flag else [f"--{name}"]
            value_is_optional = ({"is_flag": False, "flag_value": metadata["flag_value"]}
                                 if "flag_value" in metadata else {})
            func = click.option(
                *decls, setting.flag, type=None if is_flag else click_type, default=default,
                show_default=default is not None, help=metadata.get("help", ""), **value_is_optional,
            )(func)
        return func

    return decorate


def config_from_options(cls: type, values: dict[str, Any], base: Mapping[str, Any] | None = None) -> Any:
    """The config of the options given on the command line (``values``: the generated options' values),
    over ``base`` (a config file's nested mapping) where given, over the defaults. ConfigError naming the
    setting when a value cannot be used."""
    context = click.get_current_context()
    values = dict(values)
    switched_off = {s.flag: s.field.metadata["off_value"] for s in settings_of(cls) if "off_value" in s.field.metadata
                    if values.pop(f"no_{s.flag}")}
    given = {flag: value for flag, value in values.items()
             if context.get_parameter_source(flag) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)}
    return config_from_dict(cls, merge(base or {}, nest_flags(cls, {**given, **switched_off})))


def command_settings(name: str) -> Callable[[Callable], Callable]:
    """What every sifar command shares: ``-h``/``--help``, ``--version``, help wrapped at 110 columns."""
    def decorate(func: Callable) -> Callable:
        func = click.version_option(__version__, prog_name=name)(func)
        return click.command(name, context_settings={"help_option_names": ["-h", "--help"],
                                                     "max_content_width": 110})(func)

    return decorate


def usage_error(err: Exception) -> click.UsageError:
    """A config's ``"<field>: <why>"`` error as the usage error of the option that set the field."""
    field, _, why = str(err).partition(": ")
    return click.UsageError(f"Invalid value for '--{field.replace('_', '-')}': {why}")
