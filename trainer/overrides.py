"""Dotted overrides on a raw config: ``"distill.tau=1.0"``, ``data.streams.0.uri=...`` (or
``streams[0]``), each value parsed with ``yaml.safe_load`` the way the config file would be. Applied
to the plain dict before validation, so an override is checked exactly like the same key in the file;
a key that cannot address the dict is refused by name."""

from __future__ import annotations

import copy
import re
from typing import Any

import yaml

from schemas.errors import ConfigError
from schemas.settings import file_problem


def _parse_key(path: str) -> list:
    parts = []
    for p in path.split("."):
        # "streams[0]" and "streams.0" both address list items
        m = re.fullmatch(r"([^\[\]]+)((\[\d+\])*)", p)
        if not m or not p:
            raise ConfigError(f"{path}: malformed override key")
        parts.append(m.group(1))
        parts.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    return [int(p) if isinstance(p, str) and p.isdigit() else p for p in parts]


def apply_overrides(raw: dict, overrides: list[str] | None) -> dict:
    """Return a copy of ``raw`` with ``"a.b=value"`` overrides applied (value: yaml.safe_load)."""
    out = copy.deepcopy(raw) if raw else {}
    for ov in overrides or []:
        if not isinstance(ov, str) or "=" not in ov:
            raise ConfigError(f"{ov}: an override must look like key.path=value")
        key, text = ov.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{key}: cannot parse override value {text!r} ({file_problem(e)})") from None
        path = _parse_key(key)
        node: Any = out
        for i, part in enumerate(path[:-1]):
            where = ".".join(str(p) for p in path[: i + 1])
            if isinstance(part, int):
                if not isinstance(node, list) or part >= len(node):
                    raise ConfigError(f"{where}: no such list item to override")
                node = node[part]
            else:
                if not isinstance(node, dict):
                    raise ConfigError(f"{where}: cannot override inside a non-mapping")
                if node.get(part) is None:
                    node[part] = [] if isinstance(path[i + 1], int) else {}
                node = node[part]
        last = path[-1]
        if isinstance(last, int):
            if not isinstance(node, list) or last > len(node):
                raise ConfigError(f"{key}: no such list item to override")
            if last == len(node):
                node.append(value)
            else:
                node[last] = value
        else:
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: cannot override inside a non-mapping")
            node[last] = value
    return out
