"""Configuration as data: each setting's default, help and bounds declared once, beside it; configs
composed of sections (a field whose type is a config dataclass); read from nested mappings (config files).

The command lines are generated from these fields, one flat option per setting, named by the field or its
``flag`` (:mod:`sifar.cli.options`), and :func:`check_bounds` applies the same bounds and choices to
configs made in Python or read from files.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import typing
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import click
import yaml


class ConfigError(ValueError):
    """A setting that cannot work, found before any work: ``"<field>: <why>"``."""


def help_field(default: Any, help: str, *, min: float | None = None, max: float | None = None,
               min_open: bool = False, max_open: bool = False, flag: str | None = None,
               flag_value: str | None = None, off_value: str | None = None, **kwargs: Any) -> Any:
    """A dataclass field with its command-line help and its bounds (``min``/``max``, open or closed) beside
    it: the generated option refuses values outside them (click's usage error, exit 2, naming the option).
    ``flag``: the option's name where it is not the field's (``model.name`` is ``--model``). ``flag_value``:
    what the option means given without a value (``--resume`` is ``--resume auto``); ``off_value``: what
    ``--no-<option>`` sets."""
    metadata: dict[str, Any] = {"help": help}
    for key, value in (("flag", flag), ("flag_value", flag_value), ("off_value", off_value)):
        if value is not None:
            metadata[key] = value
    if min is not None or max is not None:
        metadata["bounds"] = {"min": min, "max": max, "min_open": min_open, "max_open": max_open}
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


@functools.cache
def choices(cls: type) -> dict[str, tuple[Any, ...]]:
    """The allowed values of each field of ``cls`` annotated ``Literal[...]`` (or ``Literal[...] | None``)."""
    found = {}
    for name, hint in typing.get_type_hints(cls).items():
        literal = [arg for arg in typing.get_args(hint) if typing.get_origin(arg) is typing.Literal]
        if typing.get_origin(hint) is typing.Literal:
            found[name] = typing.get_args(hint)
        elif literal:
            found[name] = typing.get_args(literal[0])
    return found


def check_bounds(config: Any) -> None:
    """ValueError naming the first field of a config dataclass outside its :func:`help_field` bounds or its
    ``Literal`` choices (the command line refuses those values itself, naming the option; this covers Python
    callers and config files)."""
    allowed = choices(type(config))
    for field in dataclasses.fields(config):
        bounds, value = field.metadata.get("bounds"), getattr(config, field.name)
        if value is None:
            continue
        if field.name in allowed and value not in allowed[field.name]:
            raise ValueError(f"{field.name}: {value!r} is not one of {', '.join(map(str, allowed[field.name]))}")
        if not bounds:
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


# ---- composed configs ---------------------------------------------------------------------------------------


def section(hint: Any) -> type | None:
    """The config dataclass a field's annotation names (a section), or None for a plain setting."""
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


@dataclasses.dataclass(frozen=True)
class Setting:
    """One plain setting of a composed config: where it is (``("optim", "lr")``), its field and annotation."""

    path: tuple[str, ...]
    field: dataclasses.Field
    hint: Any

    @property
    def flag(self) -> str:
        """Its one name on the command line and in flat records (the field's name unless it says otherwise)."""
        return self.field.metadata.get("flag", self.field.name)


@functools.cache
def settings_of(cls: type) -> tuple[Setting, ...]:
    """Every plain setting of ``cls``, sections walked in field order; their flags are checked to be unique."""
    found = tuple(_walk(cls, ()))
    flags = [s.flag for s in found]
    duplicated = sorted({flag for flag in flags if flags.count(flag) > 1})
    if duplicated:
        raise TypeError(f"{cls.__name__}: settings share the names {duplicated}")
    return found


def _walk(cls: type, path: tuple[str, ...]) -> Iterator[Setting]:
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        inner = section(hints[field.name])
        if inner is not None:
            yield from _walk(inner, path + (field.name,))
        else:
            yield Setting(path + (field.name,), field, hints[field.name])


def flat_values(config: Any) -> dict[str, Any]:
    """``{flag: value}`` of every plain setting of a config (what resume compares, whatever the sections)."""
    values = {}
    for setting in settings_of(type(config)):
        value = config
        for name in setting.path:
            value = getattr(value, name)
        values[setting.flag] = value
    return values


def nest_flags(cls: type, flat: Mapping[str, Any]) -> dict[str, Any]:
    """Flat ``{flag: value}`` (options given on a command line) as the nested mapping of ``cls``'s sections."""
    by_flag = {s.flag: s.path for s in settings_of(cls)}
    nested: dict[str, Any] = {}
    for flag, value in flat.items():
        *sections, name = by_flag[flag]
        place = nested
        for part in sections:
            place = place.setdefault(part, {})
        place[name] = value
    return nested


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``over``'s values put in, section by section (a config file, then the command line)."""
    merged = dict(base)
    for key, value in over.items():
        inner = merged.get(key)
        merged[key] = merge(inner, value) if isinstance(inner, Mapping) and isinstance(value, Mapping) else value
    return merged


def config_from_dict(cls: type, values: Mapping[str, Any], where: str = "", strict: bool = True) -> Any:
    """A config from a nested mapping (a config file, a saved ``config.json``): sections become their
    dataclasses, numbers are taken as the field's type where that loses nothing (YAML reads ``1e-4`` as a
    string), and a key the config does not have is a ConfigError naming it and the known ones (``strict``;
    otherwise it is ignored, as for records saved by another version)."""
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = [key for key in values if key not in known]
    if unknown and strict:
        raise ConfigError(f"{where}{unknown[0]}: no such setting (known here: {', '.join(known)})")
    kwargs = {}
    for name, value in values.items():
        if name not in known:
            continue
        inner = section(hints[name])
        if inner is None:
            kwargs[name] = _as_declared(value, hints[name], where + name)
        elif isinstance(value, Mapping):
            kwargs[name] = config_from_dict(inner, value, f"{where}{name}.", strict)
        else:
            raise ConfigError(f"{where}{name}: a section of settings, got {value!r}")
    return cls(**kwargs)


def _as_declared(value: Any, hint: Any, name: str) -> Any:
    """``value`` as a float where the field is a float and it is an int or a number written as text."""
    declared = [hint] if typing.get_origin(hint) is None else list(typing.get_args(hint))
    if float in declared and not isinstance(value, (bool, float)) and isinstance(value, (int, str)):
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{name}: a number, got {value!r}") from None
    return value


def read_config_file(path: str | os.PathLike, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The nested settings of a YAML file (JSON is YAML too: a run's ``config.json`` reads as it was written).

    A file may start from others: ``base: other.yaml`` (or a list of files, later ones winning), paths
    relative to the file; its own settings override theirs, section by section. ConfigError naming the
    file when it cannot be read, is not a mapping of settings, or its bases form a loop."""
    path = Path(path)
    if path.resolve() in _seen:
        raise ConfigError(f"config file {path} is its own base ({' -> '.join(map(str, _seen + (path,)))})")
    try:
        values = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"config file {path} cannot be read: {err}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} holds {type(values).__name__}, not a mapping of settings")
    bases = values.pop("base", [])
    merged: dict[str, Any] = {}
    for base in [bases] if isinstance(bases, str) else bases:
        merged = merge(merged, read_config_file(path.parent / base, _seen + (path.resolve(),)))
    return merge(merged, values)
