"""Every transition of the appointment state machine, allowed and refused."""

from __future__ import annotations

import itertools

import pytest

from shared.domain.appointment_states import (
    ACTIVE,
    STATUSES,
    IllegalTransition,
    check_transition,
    check_undo_no_show,
)

ALLOWED = {
    ("held", "booked"),
    ("held", "cancelled"),
    ("booked", "confirmed"),
    ("booked", "checked_in"),
    ("booked", "cancelled"),
    ("booked", "no_show"),
    ("confirmed", "checked_in"),
    ("confirmed", "cancelled"),
    ("confirmed", "no_show"),
    ("checked_in", "completed"),
    ("checked_in", "cancelled"),
}


@pytest.mark.parametrize(("current", "wanted"), list(itertools.product(STATUSES, STATUSES)))
def test_transition(current: str, wanted: str) -> None:
    if (current, wanted) in ALLOWED:
        check_transition(current, wanted)  # type: ignore[arg-type]
    else:
        with pytest.raises(IllegalTransition) as caught:
            check_transition(current, wanted)  # type: ignore[arg-type]
        assert caught.value.current == current


def test_every_active_state_can_be_cancelled() -> None:
    for status in ACTIVE:
        check_transition(status, "cancelled")


@pytest.mark.parametrize(("current", "wanted"), list(itertools.product(STATUSES, STATUSES)))
def test_only_the_undo_leaves_no_show_and_only_for_booked_confirmed_or_checked_in(
    current: str, wanted: str
) -> None:
    """The undo of a wrong no-show is its own rule, not a hole in the state machine."""
    if current == "no_show" and wanted in ("booked", "confirmed", "checked_in"):
        check_undo_no_show(current, wanted)  # type: ignore[arg-type]
        with pytest.raises(IllegalTransition):
            check_transition(current, wanted)  # type: ignore[arg-type]
    else:
        with pytest.raises(IllegalTransition):
            check_undo_no_show(current, wanted)  # type: ignore[arg-type]
