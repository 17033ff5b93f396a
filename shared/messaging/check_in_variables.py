"""What a check-in message shows beyond the usual variables (shared/messaging/render.py): the
clinic's question and numbered answers (as planned, in the row's context), the emergency number
of the clinic's country, and for email one signed answer link per answer, minted at render time
(links are bearer credentials: the database never holds them)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from shared.config import Settings
from shared.domain.emergency import emergency_number
from shared.links import check_in_answer_token, check_in_answer_url

KIND = "check_in"


def check_in_variables(
    kind: str, context: Mapping[str, Any] | None, region: str, settings: Settings
) -> dict[str, Any]:
    if kind != KIND:
        return {}
    context = context or {}
    raw_answers = context.get("answers")
    answers: list[dict[str, Any]] = [
        {"digit": int(a["digit"]), "label": str(a["label"])}
        for a in (raw_answers if isinstance(raw_answers, list) else [])
        if isinstance(a, dict) and "digit" in a and "label" in a
    ]
    check_in_id = context.get("check_in_id")
    until = context.get("answer_until")
    if settings.secret_key and isinstance(check_in_id, int) and isinstance(until, str):
        expires_at = datetime.fromisoformat(until)
        for answer in answers:
            token = check_in_answer_token(
                settings.secret_key, check_in_id, int(answer["digit"]), expires_at=expires_at
            )
            answer["url"] = check_in_answer_url(settings.public_url, token)
    digits = [str(a["digit"]) for a in answers]
    return {
        "question": str(context.get("question") or ""),
        "answers": answers,
        "answer_digits": (", ".join(digits[:-1]) + " or " + digits[-1]) if digits else "",
        "nudge": bool(context.get("nudge")),
        "emergency_number": emergency_number(region),
    }
