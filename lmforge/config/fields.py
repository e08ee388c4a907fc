"""Recipe and `--set` values -> typed dataclass fields: unknown keys refused with the valid ones listed,
strings coerced to each field's type, every error naming its key (`LmforgeError.field`)."""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

from lmforge.errors import LmforgeError


def typed_fields(cls: type, d: dict[str, Any], section: str) -> dict[str, Any]:
    """Reject keys the dataclass does not have, and coerce YAML/CLI strings to each field's type."""
    if not isinstance(d, dict):
        raise LmforgeError(f"recipe section {section!r} must be a mapping of key: value")
    known = {f.name: f for f in fields(cls)}
    out = {}
    for key, value in d.items():
        if key not in known:
            raise LmforgeError(f"unknown recipe key {section}.{key}; valid keys are {', '.join(sorted(known))}")
        out[key] = _coerce(value, known[key].type, f"{section}.{key}")
    return out


YES, NO = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def auto_or_bool(value: Any, where: str) -> str | bool:
    """"auto", or a yes/no as a recipe or `--set` gives it (true/false, yes/no, on/off, 1/0)."""
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if text in YES or text in NO:
        return text in YES
    raise LmforgeError("{setting} is not supported; use auto, true or false", where, value)


def _coerce(value: Any, type_name: Any, where: str) -> Any:
    t = str(type_name)
    if value is None:
        if "None" in t or "Any" in t:
            return None
        raise LmforgeError("{field} needs a value; give one after the = sign or leave the key out", where)
    try:
        if t.startswith("bool"):
            if isinstance(value, str):
                if value.lower() in YES or value.lower() in NO:
                    return value.lower() in YES
                raise ValueError(value)
            if not isinstance(value, (bool, int)):
                raise ValueError(value)
            return bool(value)
        if t.startswith("int"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(float(value)) if isinstance(value, str) else int(value)
        if t.startswith("float"):
            if isinstance(value, bool) or not math.isfinite(float(value)):
                raise ValueError(value)
            return float(value)
        if t.startswith("str"):
            if isinstance(value, bool):
                return "true" if value else "false"  # YAML reads `compile: true` as a bool
            if isinstance(value, (int, float)):
                return str(value)  # YAML reads a folder named 2024 as a number
            if not isinstance(value, str):
                raise ValueError(value)
    except (TypeError, ValueError, OverflowError):
        raise LmforgeError(f"{{setting}} is not a valid {t.split(' ')[0]}; give a value of that type", where,
                           value) from None
    return value
