"""Config files: a YAML file read into a frozen dataclass, with one set of rules for every config.

`load_dataclass` is the one reader of config files (training, data pipeline, demo recipe);
`build_dataclass` applies the same rules to a mapping built in code and `merge_settings` is the one
override rule. This module imports nothing else of the package. The rules:

- a missing file is a FileNotFoundError naming it;
- the file is UTF-8 YAML holding plain values only (mappings, lists, strings, numbers, true/false,
  null): a syntax error, or a tag such as `!!python/object/apply`, is a ValueError
  "FILE, line L, column C: problem; hint";
- the top level is a mapping of settings (an empty file is an empty mapping);
- every key is a field of its dataclass (an unknown key is named with its dotted path, with the
  known keys), every field without a default is given, and every value has its field's type
  (see `_convert`); the dataclass's own `__post_init__` checks (ranges) run last;
- an error about a key written in the file names the file and the key's line.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

T = TypeVar("T")

_SYNTAX_HINT = "fix the YAML there (indentation, a space after each ':', matching quotes and brackets)"
_PLAIN_HINT = "config files hold plain values only (mappings, lists, strings, numbers, true/false, null)"
# YAML 1.1 reads 5e-6 (an exponent without a dot) as a string; such strings are numbers.
_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class SettingError(ValueError):
    """A wrong setting; `key` is its dotted path (`optimizer.lr`, `data.resolutions[0]`, `` for the top)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def load_dataclass(cls: type[T], path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> T:
    """Read the YAML file `path` into dataclass `cls` by the rules above.

    `overrides` (nested mappings) apply on top of the file's values by `merge_settings`. Every
    ValueError names the file; errors about a key written in the file name its line too.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    values, lines = _read_mapping(path)
    overrides = overrides or {}
    try:
        return build_dataclass(cls, merge_settings(cls, values, overrides))
    except SettingError as error:
        line = lines.get(error.key) or lines.get(error.key.split("[")[0])
        where = f"{path}, line {line}" if line and not _overridden(error.key, overrides) else str(path)
        raise ValueError(f"{where}: {error}") from error
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


def build_dataclass(cls: type[T], values: Any, key: str = "") -> T:
    """Dataclass `cls` from a mapping of settings; `key` is the section's dotted path ("" at the top).

    Unknown keys and missing required keys are errors naming their dotted paths; each value is
    checked (and converted) by `_convert` against its field's annotation.
    """
    if not isinstance(values, dict):
        raise SettingError(key, f"{key or 'a config'} must be a mapping of settings, got {_show(values)}")
    prefix = f"{key}." if key else ""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(str(name) for name in values if name not in fields)
    if unknown:
        raise SettingError(
            prefix + unknown[0],
            f"unknown config key {prefix + unknown[0]!r}"
            + (f" (and {', '.join(prefix + name for name in unknown[1:])})" if len(unknown) > 1 else "")
            + f"; known keys{' of ' + key if key else ''}: {', '.join(sorted(fields))}",
        )
    missing = [name for name, f in fields.items() if name not in values and _required(f)]
    if missing:
        raise SettingError(
            key,
            f"missing config key {', '.join(repr(prefix + name) for name in missing)}; "
            f"add {'it' if len(missing) == 1 else 'them'}",
        )
    hints = typing.get_type_hints(cls)
    return cls(**{name: _convert(hints[name], value, prefix + name) for name, value in values.items()})


def merge_settings(cls: type, values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`values` with `overrides` applied: the one override rule of every config.

    A section (a field whose type is a dataclass, optional or not) merges key by key; every other
    setting is replaced whole, lists and free-form mappings included (training's `model.config`
    is one set of constructor arguments, never a mix of two).
    """
    hints = typing.get_type_hints(cls)
    merged = dict(values)
    for name, value in overrides.items():
        section = _section_class(hints.get(name))
        if section is not None and isinstance(value, dict) and isinstance(merged.get(name), dict):
            merged[name] = merge_settings(section, merged[name], value)
        else:
            merged[name] = value
    return merged


def _read_mapping(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The file's top-level mapping and the 1-based line of each key in it, by dotted path."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: byte {error.start} is not UTF-8 text; save the config as UTF-8") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise _yaml_error(path, text, error) from None
    if values is None:
        return {}, {}
    if not isinstance(values, dict):
        raise ValueError(
            f"{path}: a config is a mapping of settings (key: value lines), got a {type(values).__name__}"
        )
    return values, _key_lines(yaml.compose(text, Loader=yaml.SafeLoader))


def _yaml_error(path: Path, text: str, error: yaml.YAMLError) -> ValueError:
    """The ValueError "FILE, line L, column C: problem; hint" of a YAML error (marks are 0-based)."""
    if isinstance(error, yaml.reader.ReaderError):  # a control character; the position is in `text`
        line = text.count("\n", 0, error.position)
        column = error.position - (text.rfind("\n", 0, error.position) + 1)
        problem, hint = f"character #x{error.character:04x} is not allowed", "remove it"
    else:
        mark = error.problem_mark or error.context_mark
        line, column = (mark.line, mark.column) if mark else (None, None)
        problem = error.problem or error.context
        if error.context and error.problem and error.context_mark:
            problem = f"{error.context} (line {error.context_mark.line + 1}), {error.problem}"
        hint = _PLAIN_HINT if isinstance(error, yaml.constructor.ConstructorError) else _SYNTAX_HINT
    where = f"{path}, line {line + 1}, column {column + 1}" if line is not None else str(path)
    return ValueError(f"{where}: {problem}; {hint}")


def _key_lines(node: yaml.Node, prefix: str = "") -> dict[str, int]:
    """1-based line of every mapping key under `node`, by dotted path."""
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            lines[key] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, f"{key}."))
    return lines


def _overridden(key: str, overrides: dict[str, Any]) -> bool:
    """Whether the setting `key` (dotted) came from `overrides` rather than from the file."""
    node: Any = overrides
    for part in key.split("[")[0].split("."):
        if not isinstance(node, dict):
            return True
        if part not in node:
            return False
        node = node[part]
    return True


def _required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _section_class(hint: Any) -> type | None:
    """The dataclass of a section field (`Section` or `Section | None`), else None."""
    options = typing.get_args(hint) if _is_union(hint) else (hint,)
    sections = [option for option in options if dataclasses.is_dataclass(option)]
    return sections[0] if len(sections) == 1 else None


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (Union, types.UnionType)


def _convert(hint: Any, value: Any, key: str) -> Any:
    """`value` checked against the annotation `hint`, and converted where a rule says so:

    - Any: anything; `X | None`: null, or a value of X (several options are tried in order);
    - Literal[...]: one of the listed values;
    - a dataclass: a mapping of its settings (built recursively); null (an empty section) means its defaults;
    - tuple[X, ...] / list[X]: a list of X, returned as a tuple / list; tuple[X, Y]: exactly those
      entries; where the entries are strings, a lone string is a one-entry list;
    - dict[K, V]: a mapping (a copy, keys and values checked);
    - bool: true or false (the strings "yes" or "true" are not);
    - int: an integer (not true/false, not 1.5);
    - float: a number; an integer becomes a float, and so does a string such as "5e-6";
    - str: a string.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if _is_union(hint):
        return _convert_union(hint, value, key)
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, {} if value is None else value, key)
    if origin is Literal:
        if value not in args:
            raise _wrong(hint, value, key)
        return value
    if origin in (tuple, list):
        return _convert_sequence(hint, value, key)
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise _wrong(hint, value, key)
        key_hint, value_hint = args or (Any, Any)
        return {
            _convert(key_hint, name, f"{key}.{name}"): _convert(value_hint, item, f"{key}.{name}")
            for name, item in value.items()
        }
    if hint in (bool, int, float, str):
        return _convert_scalar(hint, value, key)
    raise TypeError(f"config field {key} has an unsupported type {hint!r}")


def _convert_union(hint: Any, value: Any, key: str) -> Any:
    """The first option of `hint` that takes `value`; an error inside a section is reported as is."""
    options = typing.get_args(hint)
    if value is None and type(None) in options:
        return None
    errors = []
    for option in (option for option in options if option is not type(None)):
        try:
            return _convert(option, value, key)
        except SettingError as error:
            errors.append(error)
    nested = [error for error in errors if error.key != key]
    raise nested[0] if nested else _wrong(hint, value, key)


def _convert_sequence(hint: Any, value: Any, key: str) -> tuple | list:
    """A list (or tuple) of `hint`'s entries, as `hint`'s type; see `_convert` for the lone string."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    variable = _variable_length(hint)
    if variable and isinstance(value, str) and args[0] is str:
        value = [value]
    if not isinstance(value, (list, tuple)) or (not variable and len(value) != len(args)):
        raise _wrong(hint, value, key)
    item_hints = [args[0]] * len(value) if variable else args
    items = [
        _convert(h, item, f"{key}[{i}]") for i, (h, item) in enumerate(zip(item_hints, value, strict=True))
    ]
    return origin(items)


def _variable_length(hint: Any) -> bool:
    """Whether sequence annotation `hint` takes any number of entries (`tuple[X, ...]`, `list[X]`)."""
    args = typing.get_args(hint)
    return typing.get_origin(hint) is list or (len(args) == 2 and args[1] is Ellipsis)


def _convert_scalar(hint: type, value: Any, key: str) -> Any:
    """A bool, int, float or str by the rules of `_convert` (true/false is never a number)."""
    if hint is float and isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value):
        return float(value)
    if isinstance(value, bool) and hint is not bool:
        raise _wrong(hint, value, key)
    if hint is float and isinstance(value, int):
        return float(value)
    if not isinstance(value, hint):
        raise _wrong(hint, value, key)
    return value


def _wrong(hint: Any, value: Any, key: str) -> SettingError:
    """The one type error: "KEY must be EXPECTED, got VALUE" (with a hint for YAML's yes/no booleans)."""
    message = f"{key} must be {_describe(hint)}, got {_show(value)}"
    if isinstance(value, bool) and _takes_text(hint):
        message += "; quote it (YAML reads unquoted yes/no/on/off/true/false as true/false)"
    return SettingError(key, message)


def _describe(hint: Any) -> str:
    """What a value of annotation `hint` is, in words."""
    if _is_union(hint):
        options = typing.get_args(hint)
        words = [_describe(option) for option in options if option is not type(None)]
        return " or ".join(words + (["null"] if type(None) in options else []))
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return f"one of {', '.join(map(repr, args))}" if len(args) > 1 else repr(args[0])
    if origin in (tuple, list):
        return "a list" if _variable_length(hint) else f"a list of {len(args)} entries"
    if hint is dict or origin is dict or dataclasses.is_dataclass(hint):
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[hint]


def _takes_text(hint: Any) -> bool:
    """Whether a string is among the values of annotation `hint`."""
    if _is_union(hint):
        return any(_takes_text(option) for option in typing.get_args(hint))
    if typing.get_origin(hint) is Literal:
        return any(isinstance(arg, str) for arg in typing.get_args(hint))
    return hint is str


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
