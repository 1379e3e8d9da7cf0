"""Dataclass configs and a strict YAML loader.

Dataclasses are the schema and hold every default, each field with a one-line help (`opt(default, help)`).
YAML holds only what differs; `a.b=c` overrides are applied to the YAML before validation, so an override
and a YAML key go through the same checks. An unknown key is an error naming the closest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable

import yaml

from safealign.errors import ConfigError


def opt(default: Any, help: str, **metadata: Any) -> Any:
    """A config field with its default and one line of help. Mutable defaults are copied per instance.
    `was="old_key"` keeps a renamed key working, with a one-line deprecation warning naming the new key."""
    meta = {"help": help, **metadata}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: _deepcopy(d), metadata=meta)
    if dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda d=default: dataclasses.replace(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _deepcopy(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _deepcopy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_deepcopy(v) for v in x]
    return x


# ---------------------------------------------------------------------------------------------- loading


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value parsed as a YAML scalar/list)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key.path=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


class _CreatedByOverride(dict):
    """A section the config file did not have, made by an override of one of its keys (`a.b.c=1` without an
    `a.b` section): `build` fills it up with the field's default section, so the override changes that one key
    and keeps the others (a section written in the file replaces the default whole, as written)."""


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = _deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = _CreatedByOverride()
            elif not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r}: '{k}' holds a value, not a section")
            node = nxt
        node[keys[-1]] = value
    return data


def build(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass `cls` from a plain mapping, strictly: unknown keys and wrong types are ConfigErrors
    that name the dotted key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    data = _renamed_keys(data, fields, where)
    for key in data:
        if key not in fields:
            raise ConfigError(_unknown_key_message(key, list(fields), where))
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            continue
        dotted = f"{where}.{name}" if where else name
        chooser = f.metadata.get("choose_by")
        if chooser is not None:
            kwargs[name] = chooser(data[name], dotted)
        else:
            kwargs[name] = _coerce(hints[name], _with_default_section(f, data[name]), dotted)
    try:
        obj = cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"{where or cls.__name__}: {e}") from None
    for name in fields:  # one rule for every batch size of every config: generation, judging, scoring, training
        value = getattr(obj, name)
        if name.endswith("batch_size") and isinstance(value, int) and value < 1:
            raise ConfigError(f"{f'{where}.{name}' if where else name}: must be >= 1, got {value}")
    validate = getattr(cls, "validate", None)
    if validate is not None:
        validate(obj, where)
    return obj


def _with_default_section(f: dataclasses.Field, value: Any) -> Any:
    """A section an override created, on top of the field's default section (see _CreatedByOverride)."""
    if not isinstance(value, _CreatedByOverride) or f.default_factory is dataclasses.MISSING:
        return value
    default = f.default_factory()
    if not dataclasses.is_dataclass(default):
        return value
    return _merged({d.name: to_dict(getattr(default, d.name)) for d in dataclasses.fields(default) if d.init}, value)


def _merged(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _renamed_keys(data: dict, fields: dict, where: str) -> dict:
    """`data` with each key a field was once called (`opt(..., was=OLD)`) under its new name, saying so once."""
    data = dict(data)
    for name, f in fields.items():
        old = f.metadata.get("was")
        if old is None or old not in data:
            continue
        prefix = f"{where}." if where else ""
        if name in data:
            raise ConfigError(f"{prefix}{old}: the old name of '{prefix}{name}', which is set too; keep '{name}'")
        print(f"warning: config key '{prefix}{old}' is deprecated; use '{prefix}{name}'", file=sys.stderr)
        data[name] = data.pop(old)
    return data


def _unknown_key_message(key: str, valid: list[str], where: str) -> str:
    dotted = f"{where}.{key}" if where else key
    close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{f'{where}.' if where else ''}{close[0]}'?" if close else f"; valid keys: {', '.join(valid)}"
    return f"unknown config key '{dotted}'{hint}"


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for a in inner:
            try:
                return _coerce(a, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            value = [value] if isinstance(value, (str, int, float)) else value
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        return [_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return {str(k): _coerce(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads 1e-3 without a dot as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported config type {tp}")


def choose_from(registry: Callable[[str], type], key: str = "name") -> Callable[[Any, str], Any]:
    """A field whose dataclass is picked by a key inside its mapping, e.g. `method: {name: lisa, rho: 1}`."""

    def choose(value: Any, where: str) -> Any:
        if not isinstance(value, dict) or key not in value:
            raise ConfigError(f"{where}: expected a mapping with a '{key}' key")
        cls = registry(value[key], where)
        rest = {k: v for k, v in value.items() if k != key}
        obj = build(cls, rest, where)
        return obj

    return choose


def one_of(value: str, choices: list[str] | tuple[str, ...], where: str) -> None:
    if value not in choices:
        close = difflib.get_close_matches(str(value), list(choices), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{where}: '{value}' is not one of {', '.join(choices)}{hint}")


PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+@-]*")  # "@": a sweep names its units NAME@VALUE


def plain_name(value: str, where: str) -> None:
    """Recipe, stage and eval-label names become directory names under the run directory: letters, digits and
    `_ . + - @`, not starting with a dot, so none can point outside it (`../x`, `/abs`, `a/b`)."""
    if not isinstance(value, str) or not PLAIN_NAME.fullmatch(value) or ".." in value:
        raise ConfigError(f"{where}: {value!r} is not a plain name (letters, digits and _ . + - @, not starting "
                          f"with a dot or holding '..'); it names a directory inside the run directory")


# ---------------------------------------------------------------------------------------------- dumping


def to_dict(obj: Any, hashed: bool = False) -> Any:
    """Dataclass -> plain dict (what `config.yaml` holds). Polymorphic configs keep their `name`. `hashed`: without
    the fields a config class lists in `NOT_HASHED` (they change how a run reports or checkpoints, not what it
    computes), for the pipeline's unit hash."""
    if dataclasses.is_dataclass(obj):
        out = {}
        name = getattr(type(obj), "registry_name", None)
        if name is not None:
            out["name"] = name
        skip = getattr(type(obj), "NOT_HASHED", ()) if hashed else ()
        for f in dataclasses.fields(obj):
            if f.name not in skip:
                out[f.name] = to_dict(getattr(obj, f.name), hashed)
        return out
    if isinstance(obj, dict):
        return {k: to_dict(v, hashed) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v, hashed) for v in obj]
    return obj


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False, allow_unicode=True)


def describe(cls: type, prefix: str = "") -> list[str]:
    """Lines `key (default): help` for every field, recursively: the `safealign config` help text."""
    lines = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "required")
        lines.append(f"{key} ({default!r}): {f.metadata.get('help', '')}")
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            lines.extend(describe(tp, key + "."))
    return lines
