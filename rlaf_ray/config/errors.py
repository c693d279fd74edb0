"""Configuration problems as one line each, naming the dotted field and what was expected.

pydantic reports every problem of a configuration at once; ``problems_from`` turns its report
into the lines users read (``ppo.cliprange: 1.5 is out of range; allowed (0.0, 1.0]``), with
"did you mean" for unknown keys. Cross-field validators raise ``ValueError`` whose text is
already one line per problem, relative to the section they sit on.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError

from rlaf_ray.config.fields import (
    constraints,
    field_annotation,
    is_model,
    split_optional,
    type_name,
)


class ConfigError(ValueError):
    """Bad configuration. ``str(error)`` is one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


TYPE_MESSAGES = {
    "int_type": "expected an integer", "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number", "float_parsing": "expected a number",
    "bool_type": "expected true or false", "bool_parsing": "expected true or false",
    "string_type": "expected a string", "dict_type": "expected a mapping",
    "model_type": "expected a mapping", "model_attributes_type": "expected a mapping",
    "list_type": "expected a list",
}


RANGE_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _interval(bounds: dict[str, Any]) -> str:
    low = bounds.get("gt", bounds.get("ge"))
    high = bounds.get("lt", bounds.get("le"))
    return (f"{'(' if 'gt' in bounds else '['}{'-inf' if low is None else low}, "
            f"{'inf' if high is None else high}{')' if 'lt' in bounds else ']'}")


def _locate(root: type[BaseModel], loc: tuple) -> tuple[str, Any, type[BaseModel], int]:
    """Walk ``loc`` through the models: the dotted path to report, the annotation there, the
    innermost model class and how many ``loc`` parts were used. A union of several types stops
    the walk at its field: its members' tags (``int``, ``list[int]``) are pydantic's, not ours."""
    path, cls, annotation, used = "", root, root, 0
    for part in loc:
        inner = split_optional(annotation)
        if is_model(inner):
            cls = inner
            if part not in inner.model_fields:
                break
            annotation = field_annotation(inner, part)
            path = f"{path}.{part}" if path else str(part)
        elif isinstance(part, int) and getattr(inner, "__origin__", None) is list:
            annotation = inner.__args__[0]
            path += f"[{part}]"
        elif getattr(inner, "__origin__", None) is dict:
            annotation = inner.__args__[1]
            path += f".{part}"
        else:
            break
        used += 1
    return path, annotation, cls, used


def _line(root: type[BaseModel], error: dict) -> str:
    loc, kind, value = tuple(error["loc"]), error["type"], error.get("input")
    path, annotation, cls, used = _locate(root, loc)
    if kind == "extra_forbidden":
        key = str(loc[used]) if used < len(loc) else path
        where = f"{path}.{key}" if path else key
        names = list(cls.model_fields)
        close = difflib.get_close_matches(key, names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        return f"{where}: unknown key; {hint}valid keys in {path or 'the top level'}: {', '.join(names)}"
    if kind == "value_error":
        # Our own validators: lines relative to the section they validate.
        message = str(error["ctx"]["error"]) if "ctx" in error else error["msg"]
        return "\n".join(f"{path}.{line}" if path else line for line in message.splitlines())
    # Stopped before the end of loc: at a union, whose members' complaints are pydantic's.
    return _describe(path or "config", error, value, annotation, at_value=used == len(loc))


def _describe(where: str, error: dict, value: Any, annotation: Any, at_value: bool) -> str:
    """One line for a value of type ``annotation`` that failed; ``at_value``: the error is about
    the value itself (not one member of a union or an item inside it)."""
    kind = error["type"]
    if kind in RANGE_ERRORS:
        bounds = constraints(annotation) or dict(error.get("ctx", {}))
        return f"{where}: {value!r} is out of range; allowed {_interval(bounds)}"
    if kind == "literal_error":
        return f"{where}: expected one of {type_name(split_optional(annotation))}, got {value!r}"
    expected = TYPE_MESSAGES.get(kind) if at_value else None
    return f"{where}: {expected or 'expected ' + type_name(annotation)}, got {value!r}"


def problems_from(error: ValidationError, root: type[BaseModel]) -> list[str]:
    """One line per problem (a union's several complaints about one value become one line)."""
    lines: list[str] = []
    for item in error.errors(include_url=False):
        for line in _line(root, item).splitlines():
            if line not in lines:
                lines.append(line)
    return lines


def check_value(annotation: Any, value: Any, where: str) -> Any:
    """``value`` validated as a field of type ``annotation`` (strictly, as in a config file), or
    ``ValueError`` with one line naming ``where`` (used for values listed in a search space)."""
    from pydantic import TypeAdapter

    try:
        return TypeAdapter(annotation, config={"strict": True}).validate_python(value)
    except ValidationError as err:
        error = err.errors(include_url=False)[0]
        raise ValueError(_describe(where, error, value, annotation, at_value=not error["loc"])) from None
