"""The appointment state machine. Transitions are explicit: anything not listed is refused."""

from __future__ import annotations

from typing import Literal

from shared.domain.errors import Conflict

Status = Literal["held", "booked", "confirmed", "checked_in", "completed", "cancelled", "no_show"]

STATUSES: tuple[Status, ...] = (
    "held",
    "booked",
    "confirmed",
    "checked_in",
    "completed",
    "cancelled",
    "no_show",
)

# Active appointments occupy their practitioner's time (the exclusion constraint's WHERE clause).
ACTIVE: frozenset[Status] = frozenset({"held", "booked", "confirmed", "checked_in"})
TERMINAL: frozenset[Status] = frozenset({"completed", "cancelled", "no_show"})

TRANSITIONS: dict[Status, frozenset[Status]] = {
    "held": frozenset({"booked", "cancelled"}),
    "booked": frozenset({"confirmed", "checked_in", "cancelled", "no_show"}),
    "confirmed": frozenset({"checked_in", "cancelled", "no_show"}),
    "checked_in": frozenset({"completed", "cancelled"}),
    "completed": frozenset(),
    "cancelled": frozenset(),
    "no_show": frozenset(),
}


class IllegalTransition(Conflict):
    code = "illegal-transition"

    def __init__(self, current: Status, wanted: Status) -> None:
        super().__init__(
            f"an appointment that is {current} cannot become {wanted}", current_status=current
        )
        self.current = current
        self.wanted = wanted


def check_transition(current: Status, wanted: Status) -> None:
    if wanted not in TRANSITIONS[current]:
        raise IllegalTransition(current, wanted)


# Undoing a no-show that staff recorded by mistake takes the appointment back to the status it
# had before (booked or confirmed), or to checked_in when staff say the patient did come (the
# check-in window has closed by then, and the session must still be completed and recorded).
# It is not in TRANSITIONS: no ordinary change may leave no_show; only the undo action
# (services/booking/domain/actions.py `undo_no_show`) checks this.
UNDO_NO_SHOW_TO: frozenset[Status] = frozenset({"booked", "confirmed", "checked_in"})


def check_undo_no_show(current: Status, wanted: Status) -> None:
    """The one way out of no_show: back to booked or confirmed (or checked in: the patient
    came), by the undo action alone."""
    if current != "no_show" or wanted not in UNDO_NO_SHOW_TO:
        raise IllegalTransition(current, wanted)
