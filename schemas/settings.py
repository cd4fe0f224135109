"""Helpers for settings declared as typed models (pydantic v2), shared by the trainer and pipeline.

Both sides declare their settings as pydantic models and need the same two things from them: a
validation failure turned into `ConfigError` messages that name the dotted setting
(``distill.alpha.peak``, ``data.streams[0].uri``), and the list of settings for generated
command-line flags and ``--help``. Neither needs pydantic imported here: a ValidationError is read
through its ``errors()`` list and a model class through ``model_fields``.
"""
from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, Iterator, Literal

from schemas.errors import ConfigError

__all__ = ["Problem", "Refused", "problems", "raise_first", "dotted", "known_keys", "leaf_settings", "type_label"]


class Refused(ValueError):
    """Raised inside a model validator to refuse a combination of settings by naming one of them:
    ``raise Refused("tail", "only applies with support: full")`` -> ``distill.tail: only applies ...``."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key, self.message = key, message


@dataclass(frozen=True)
class Problem:
    """One validation failure: the dotted key, pydantic's error type, a readable message (with the
    value given, where it helps) and the value."""

    key: str
    kind: str
    message: str
    value: Any


def dotted(loc: tuple) -> str:
    """("data", "streams", 0, "uri") -> "data.streams[0].uri"."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_KIND_TEXT = {"missing": "required key is missing", "union_tag_not_found": "required key is missing",
              "extra_forbidden": "unknown key", "unexpected_keyword_argument": "unknown key"}
_BOUNDS = {"greater_than": (">", "gt"), "greater_than_equal": (">=", "ge"), "less_than": ("<", "lt"),
           "less_than_equal": ("<=", "le"), "too_short": ("at least", "min_length"),
           "too_long": ("at most", "max_length")}
_EXPECTED = {"int_type": "an integer", "int_from_float": "an integer", "int_parsing": "an integer",
             "float_type": "a number", "float_parsing": "a number", "bool_type": "a boolean",
             "bool_parsing": "a boolean", "string_type": "a string", "list_type": "a list",
             **dict.fromkeys(("model_type", "dict_type", "dataclass_type", "model_attributes_type"), "a mapping")}


def problems(error, tagged_unions: tuple[str, ...] = (), prefix: str = "") -> list[Problem]:
    """The failures of a pydantic ``ValidationError`` with dotted keys and readable messages.

    ``tagged_unions`` lists the dotted keys of discriminated unions ("" for a union at the top):
    pydantic puts the chosen tag in the location (``distill.alpha.wsd.peak``); it is dropped, and a
    bad or missing tag is reported as ``<key>.name``. ``prefix`` goes before every key."""
    out = []
    for e in error.errors(include_url=False):
        loc, kind, msg = tuple(e["loc"]), e["type"], e["msg"]
        cut = [i for i in range(len(loc)) if dotted(loc[:i]) in tagged_unions]
        if cut and not kind.startswith("union_tag_"):
            loc = loc[:cut[0]] + loc[cut[0] + 1:]
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, Refused):
            loc, msg = loc + tuple(cause.key.split(".")), cause.message
        elif kind == "union_tag_invalid":
            loc, msg = loc + ("name",), f"must be one of {e['ctx']['expected_tags']}, got {e['ctx']['tag']!r}"
        elif kind in _BOUNDS:
            op, limit = _BOUNDS[kind]
            items = " item(s)" if kind.startswith("too_") else ""
            msg = f"must {'hold' if items else 'be'} {op} {e['ctx'][limit]}{items}, got {e.get('input')!r}"
        elif kind in _EXPECTED:
            msg = f"expected {_EXPECTED[kind]}, got {e.get('input')!r}"
        elif kind in _KIND_TEXT:
            loc, msg = loc + (("name",) if kind == "union_tag_not_found" else ()), _KIND_TEXT[kind]
        elif isinstance(cause, ConfigError):  # a complete message from our own check
            msg = str(cause)
        else:
            msg = msg.removeprefix("Value error, ")
            msg = f"{msg[0].lower() + msg[1:]}, got {e.get('input')!r}"
        key = dotted(loc)
        if prefix:
            key = prefix + ("" if key.startswith("[") or not key else ".") + key
        out.append(Problem(key, kind, msg, e.get("input")))
    return out


def type_label(tp) -> str:
    """A short name of a field's type for help and error text ("a number", "one of 'a', 'b'")."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return type_label(args[0])
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_label(a) for a in args if a is not type(None)) + (
            " or null" if type(None) in args else "")
    if origin is list:
        return "a list"
    if origin is dict or tp is dict or hasattr(tp, "model_fields"):
        return "a mapping"
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}.get(tp, getattr(tp, "__name__", str(tp)))


def _model_of(tp):
    """The model class a field holds directly (also through Optional), else None."""
    if hasattr(tp, "model_fields"):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(tp) if hasattr(a, "model_fields")]
        return models[0] if len(models) == 1 and len(typing.get_args(tp)) <= 2 else None
    return None


def known_keys(model, key: str) -> list[str]:
    """The keys a model accepts beside the last part of dotted `key` (for "unknown key" hints);
    empty where the path leads into a list of non-models, a mapping or a union."""
    parts = [p for p in key.replace("[", ".[").split(".") if p and not p.startswith("[")]
    for part in parts[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        tp = field.annotation
        if typing.get_origin(tp) is list:
            tp = typing.get_args(tp)[0]
        model = _model_of(tp)
    return sorted(getattr(model, "model_fields", {}))


def leaf_settings(model, prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(dotted key, annotation, FieldInfo) of every setting that holds a value, sections walked
    into (lists, mappings and tagged unions are leaves: they are given whole, as YAML)."""
    for name, info in model.model_fields.items():
        key = f"{prefix}.{name}" if prefix else name
        sub = _model_of(info.annotation)
        if sub is not None and info.discriminator is None:
            yield from leaf_settings(sub, key)
        else:
            yield key, info.annotation, info


def raise_first(error, fmt, tagged_unions: tuple[str, ...] = (), prefix: str = "") -> typing.NoReturn:
    """Raise ConfigError for the first problem of a ValidationError, formatted by ``fmt(Problem)``."""
    raise ConfigError(fmt(problems(error, tagged_unions, prefix)[0])) from None
