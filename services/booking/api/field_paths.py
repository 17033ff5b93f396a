"""Where in a request a validation error is: pydantic's error locations as the request's own
field names, dict keys and list indices.

Pydantic adds its own labels to a location: the union member that failed ("bool",
"function-after[storable(), constrained-str]", a model's name) and "[key]" for a dict key that
failed. A client cannot act on those, and a path like `patient.screening.pregnant.function-after[
storable(), constrained-str]` reads as if the form had sent a field of that name. `field_path`
drops them by walking the model's own fields along the location, so that a dict key a client
chose ("bool", say) is never mistaken for a label. This module registers no routes.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, TypeAdapter

# How pydantic labels the validator that failed, where it adds one to an error's location: a
# union member ("bool", "function-after[storable(), constrained-str]", a model's name) and a
# dict key that failed ("[key]"). Used when the model's structure does not say which it is.
_LABEL = re.compile(r"\[key\]|[a-z][a-z-]*\[.*\]|constrained-[a-z]+")


def field_path(model: Any, loc: Sequence[int | str]) -> list[int | str]:
    """An error's location as the request's own field names, dict keys and list indices:
    pydantic's labels of union members and dict keys are dropped, found by walking `model`'s
    fields along the location, so that a dict key a client chose is never mistaken for one."""
    path: list[int | str] = []
    shape: Any = model
    after_key = False
    for part in loc:
        shape = _resolved(shape)
        if after_key and part == "[key]":  # the key itself is what failed
            after_key = False
            continue
        after_key = False
        members = _choices(shape)
        if members is not None:
            chosen = next((m for m in members if _label(m) == part), None)
            if chosen is not None or (isinstance(part, str) and _LABEL.fullmatch(part)):
                shape = chosen
                continue
        if shape is None and isinstance(part, str) and _LABEL.fullmatch(part):
            continue
        path.append(part)
        shape, after_key = _child(shape, part)
    return path


def _resolved(shape: Any) -> Any:
    """`shape` without Annotated metadata and without `| None` around a single type."""
    while True:
        if typing.get_origin(shape) is typing.Annotated:
            shape = typing.get_args(shape)[0]
            continue
        members = _union_members(shape)
        if members is not None and len(members) == 1:
            shape = members[0]
            continue
        return shape


def _union_members(shape: Any) -> list[Any] | None:
    if typing.get_origin(shape) in (typing.Union, types.UnionType):
        return [m for m in typing.get_args(shape) if m is not type(None)]
    return None


def _choices(shape: Any) -> list[Any] | None:
    members = _union_members(shape)
    return members if members is not None and len(members) > 1 else None


def _label(member: Any) -> str | None:
    try:
        return _cached_label(member)
    except TypeError:  # unhashable metadata: work it out every time (errors only)
        return _label_of(member)


@lru_cache(maxsize=256)
def _cached_label(member: Any) -> str | None:
    return _label_of(member)


def _label_of(member: Any) -> str | None:
    try:
        return str(TypeAdapter(member).validator.title)  # what pydantic puts in the location
    except Exception:  # a type pydantic cannot build alone: fall back to _LABEL
        return None


def _child(shape: Any, part: int | str) -> tuple[Any, bool]:
    """The shape inside `shape` at `part`, and whether `part` was a dict key."""
    if isinstance(shape, type) and issubclass(shape, BaseModel):
        for name, info in shape.model_fields.items():
            if part in (name, info.alias, info.validation_alias):
                return info.annotation, False
        return None, False
    origin = typing.get_origin(shape)
    args = typing.get_args(shape)
    if origin in (list, set, frozenset, Sequence) and args and isinstance(part, int):
        return args[0], False
    if origin is tuple and args and isinstance(part, int):
        return (args[0] if args[-1] is Ellipsis or part >= len(args) else args[part]), False
    if origin in (dict, Mapping) and len(args) == 2:
        return args[1], True
    return None, False
