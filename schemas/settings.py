"""Helpers for settings declared as typed models (pydantic v2), shared by the trainer and pipeline.

Both sides declare their settings as pydantic models and need the same two things from them: a
validation failure turned into `ConfigError` messages that name the dotted setting
(``distill.alpha.peak``, ``data.streams[0].uri``), and the list of settings for generated
command-line flags and ``--help``. Neither needs pydantic imported here: a ValidationError is read
through its ``errors()`` list and a model class through ``model_fields``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from schemas.errors import ConfigError

__all__ = [
    "Problem",
    "Refused",
    "Setting",
    "problems",
    "raise_first",
    "dotted",
    "known_keys",
    "leaf_settings",
    "type_label",
    "file_problem",
]


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


_KIND_TEXT = {
    "missing": "required key is missing",
    "union_tag_not_found": "required key is missing",
    "extra_forbidden": "unknown key",
    "unexpected_keyword_argument": "unknown key",
}
_BOUNDS = {
    "greater_than": (">", "gt"),
    "greater_than_equal": (">=", "ge"),
    "less_than": ("<", "lt"),
    "less_than_equal": ("<=", "le"),
    "too_short": ("at least", "min_length"),
    "too_long": ("at most", "max_length"),
}
_EXPECTED = {
    "int_type": "an integer",
    "int_from_float": "an integer",
    "int_parsing": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "a boolean",
    "bool_parsing": "a boolean",
    "string_type": "a string",
    "list_type": "a list",
    **dict.fromkeys(("model_type", "dict_type", "dataclass_type", "model_attributes_type"), "a mapping"),
}


def problems(error, tagged_unions: tuple[str, ...] = (), prefix: str = "") -> list[Problem]:
    """The failures of a pydantic ``ValidationError`` with dotted keys and readable messages.

    ``tagged_unions`` lists the dotted keys of discriminated unions ("" for a union at the top):
    pydantic puts the chosen tag in the location (``distill.alpha.wsd.peak``); it is dropped, and a
    bad or missing tag is reported as ``<key>.name``. ``prefix`` goes before every key."""
    out = []
    for e in error.errors(include_url=False):
        loc, kind, msg = tuple(e["loc"]), e["type"], e["msg"]
        cut = [i for i in range(len(loc)) if dotted(loc[:i]) in tagged_unions]
        tag = None
        if cut and not kind.startswith("union_tag_") and cut[0] < len(loc):
            tag, loc = loc[cut[0]], loc[: cut[0]] + loc[cut[0] + 1 :]
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
            if tag is not None and msg == "unknown key":
                msg = f"unknown key for name {tag!r} (each name takes its own keys)"
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
        labels = dict.fromkeys(type_label(a) for a in args if a is not type(None))  # in order, once each
        return " or ".join(labels) + (" or null" if type(None) in args else "")
    if origin is list:
        return "a list"
    if origin is dict or tp is dict or _fields(tp):
        return "a mapping"
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


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


@dataclass(frozen=True)
class Setting:
    """One setting as the command line offers it: dotted key, type, default (if any) and help."""

    key: str
    annotation: Any
    has_default: bool
    default: Any
    description: str


def _fields(cls) -> dict:
    """A model's or pydantic dataclass's FieldInfos by name."""
    return getattr(cls, "model_fields", None) or getattr(cls, "__pydantic_fields__", None) or {}


def _tagged_members(info) -> list:
    """The member classes of a tagged-union field (also inside Optional[Annotated[...]]), else []."""
    tp = info.annotation
    if not info.discriminator:
        args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        inner = args[0]
        if (
            len(args) != 1
            or typing.get_origin(inner) is not typing.Annotated
            or not any(getattr(m, "discriminator", None) for m in typing.get_args(inner)[1:])
        ):
            return []
        tp = typing.get_args(inner)[0]
    return [c for c in typing.get_args(tp) if _fields(c)]


def _setting(key: str, info, note: str = "") -> Setting:
    required = info.is_required()
    default = None if required else info.get_default(call_default_factory=True)
    return Setting(key, info.annotation, not required, default, note + (info.description or ""))


def leaf_settings(model, prefix: str = "") -> Iterator[Setting]:
    """Every setting that holds a value, sections walked into; a tagged union (a schedule picked by
    its `name`) is offered whole and by each of its members' keys. Lists and mappings are leaves."""
    for name, info in _fields(model).items():
        key = f"{prefix}.{name}" if prefix else name
        sub = _model_of(info.annotation)
        members = _tagged_members(info)
        if sub is not None and not info.discriminator:
            yield from leaf_settings(sub, key)
            continue
        yield _setting(key, info)
        by_name: dict[str, list] = {}
        for member in members:
            tag = typing.get_args(_fields(member)["name"].annotation)[0]
            for field, finfo in _fields(member).items():
                by_name.setdefault(field, []).append((tag, finfo))
        for field, uses in by_name.items():
            tags = [t for t, _ in uses]
            if field == "name":
                yield Setting(f"{key}.name", Literal[tuple(tags)], False, None, "picks the schedule and its keys")
            else:
                st = _setting(f"{key}.{field}", uses[0][1], f"for name {'|'.join(tags)}. ")
                agree = len({repr(_setting(key, f).default) for _, f in uses}) == 1
                yield dataclasses.replace(st, has_default=st.has_default and agree, description=st.description.strip())


def raise_first(error, fmt, tagged_unions: tuple[str, ...] = (), prefix: str = "") -> typing.NoReturn:
    """Raise ConfigError for the first problem of a ValidationError, formatted by ``fmt(Problem)``."""
    raise ConfigError(fmt(problems(error, tagged_unions, prefix)[0])) from None


def file_problem(error: Exception) -> str:
    """One line saying why a settings file could not be read or parsed: the OS's reason, a YAML
    error's problem and line/column (PyYAML's own message spans lines with a caret), or bytes
    that are not UTF-8. Read through attributes, so yaml is not imported here."""
    if isinstance(error, OSError):
        return error.strerror or type(error).__name__
    if isinstance(error, UnicodeDecodeError):
        return f"not UTF-8 text (byte {error.start})"
    problem, mark = getattr(error, "problem", None), getattr(error, "problem_mark", None)
    if problem and mark is not None:
        return f"not valid YAML: {problem} at line {mark.line + 1}, column {mark.column + 1}"
    return "not valid YAML: " + " ".join(str(error).split())
