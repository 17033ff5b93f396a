"""Validation errors name the request's own fields: pydantic's labels for the validator that
failed (a union member, a dict key) never reach the client as if they were fields."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, StrictBool, ValidationError

from services.booking.api.field_paths import field_path
from services.booking.api.fields import Body, Instant, ShortText


class Session(Body):
    start: Instant


class Visit(Body):
    room: int


class Request(Body):
    answers: dict[str, StrictBool | ShortText] = {}
    sessions: list[Session] = []
    either: Session | Visit | None = None


def _paths(data: dict[str, Any], model: type[BaseModel] = Request) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return [
        ".".join(map(str, field_path(model, error["loc"])))
        for error in caught.value.errors(include_url=False)
    ]


def test_a_union_answer_is_named_by_its_key_even_when_the_key_looks_like_a_label() -> None:
    # pydantic's: ('answers', 'bool', 'bool') and ('answers', 'bool', 'function-after[...]')
    assert (
        _paths({"answers": {"pregnant": 5, "bool": 7}})
        == ["answers.pregnant"] * 2 + ["answers.bool"] * 2
    )


def test_a_bad_key_is_named_without_pydantic_s_key_marker() -> None:
    class Keys(Body):
        answers: dict[Instant, bool]

    assert _paths({"answers": {"soon": True}}, Keys) == ["answers.soon"]


def test_list_positions_and_nested_fields_stay() -> None:
    sessions = [{"start": "2026-03-03T10:00:00Z"}, {"start": 1772442000}]
    assert _paths({"sessions": sessions}) == ["sessions.1.start"]


def test_a_union_of_models_names_the_field_inside_it_not_the_model() -> None:
    # pydantic: ('either', 'Session', 'start') and ('either', 'Visit', 'room')
    assert sorted(_paths({"either": {}})) == ["either.room", "either.start"]


def test_unknown_fields_are_named_as_sent() -> None:
    assert _paths({"bool": 1, "str": 2}) == ["bool", "str"]
