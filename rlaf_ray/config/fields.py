"""Introspection of the configuration's fields: their types, bounds and dotted names.

Shared by the error messages (which bound was crossed, which types a field takes) and by the
Tune search space (which fields exist, which are numeric).
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, BeforeValidator
from pydantic.fields import FieldInfo


def _yaml_number(value: Any) -> Any:
    # PyYAML reads "4e-3" (no dot) as a string: accept it where a number is expected.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


# A float field as users write it in YAML and on the command line.
Number = Annotated[float, BeforeValidator(_yaml_number)]

BOUND_NAMES = ("gt", "ge", "lt", "le")


def is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def unannotated(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (typing.Union, types.UnionType)


def split_optional(annotation: Any) -> Any:
    """``X | None`` -> ``X`` (annotations stripped); a union of several types is kept."""
    annotation = unannotated(annotation)
    if is_union(annotation):
        options = [a for a in get_args(annotation) if a is not type(None)]
        if len(options) == 1:
            return unannotated(options[0])
    return annotation


def field_annotation(cls: type[BaseModel], name: str) -> Any:
    """The field's type with its constraints (``Field(ge=1)`` lands in ``FieldInfo.metadata``)."""
    info = cls.model_fields[name]
    return Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation


def constraints(annotation: Any) -> dict[str, Any]:
    """``{"gt": 0.0, "le": 1.0}`` for a bounded number field (through ``| None``)."""
    if is_union(unannotated(annotation)):
        options = [a for a in get_args(unannotated(annotation)) if a is not type(None)]
        if len(options) != 1:
            return {}
        annotation = options[0]
    bounds: dict[str, Any] = {}
    while get_origin(annotation) is Annotated:
        annotation, *metadata = get_args(annotation)
        for item in metadata:
            for part in (item.metadata if isinstance(item, FieldInfo) else [item]):
                for name in BOUND_NAMES:
                    if getattr(part, name, None) is not None:
                        bounds[name] = getattr(part, name)
    return bounds


def type_name(annotation: Any) -> str:
    annotation = unannotated(annotation)
    origin = get_origin(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(annotation))
    if is_union(annotation):
        return " or ".join(type_name(a) for a in get_args(annotation))
    if origin is list:
        return f"list of {type_name(get_args(annotation)[0])}"
    if origin is dict:
        return "mapping"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def numeric_kind(annotation: Any) -> str | None:
    """'int' or 'float' when the field holds one kind of number (null allowed), else None."""
    annotation = split_optional(annotation)
    return {int: "int", float: "float"}.get(annotation) if isinstance(annotation, type) else None


def leaf_fields(cls: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    """Every dotted leaf field below ``cls`` and its type (with constraints)."""
    out: dict[str, Any] = {}
    for name in cls.model_fields:
        annotation = field_annotation(cls, name)
        if is_model(unannotated(annotation)):
            out.update(leaf_fields(unannotated(annotation), f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = annotation
    return out


class Section(BaseModel):
    """A configuration section: unknown keys are errors, types are not silently converted
    (``"8"`` is not an integer), and every field documents itself (``--schema``)."""

    model_config = {"extra": "forbid", "strict": True}
