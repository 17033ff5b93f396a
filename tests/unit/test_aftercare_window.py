"""When aftercare is due: inside the clinic's messaging window in the clinic's zone, across
midnight windows and the clocks changing."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from shared import links
from shared.domain.aftercare import inside_window

LONDON = ZoneInfo("Europe/London")


def test_a_moment_inside_the_window_is_kept() -> None:
    moment = datetime(2026, 3, 2, 10, 15, tzinfo=UTC)
    assert inside_window(moment, LONDON, time(8), time(20)) == moment


def test_an_evening_completion_waits_for_08_00_local_on_the_night_the_clocks_go_forward() -> None:
    # Saturday 28 March 2026, 20:05 GMT; British Summer Time starts at 01:00 UTC on the 29th.
    evening = datetime(2026, 3, 28, 20, 5, tzinfo=UTC)
    due = inside_window(evening, LONDON, time(8), time(20))
    assert due.astimezone(LONDON) == datetime(2026, 3, 29, 8, 0, tzinfo=LONDON)
    assert due.astimezone(UTC) == datetime(2026, 3, 29, 7, 0, tzinfo=UTC)  # 08:00 BST


def test_before_the_window_opens_it_waits_for_the_same_mornings_opening() -> None:
    early = datetime(2026, 10, 25, 6, 30, tzinfo=UTC)  # the day the clocks go back: 06:30 GMT
    assert inside_window(early, LONDON, time(8), time(20)) == datetime(
        2026, 10, 25, 8, 0, tzinfo=LONDON
    )


def test_a_window_across_midnight_and_an_always_open_one() -> None:
    late = datetime(2026, 3, 2, 23, 30, tzinfo=UTC)
    assert inside_window(late, LONDON, time(22), time(6)) == late
    noon = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    assert inside_window(noon, LONDON, time(22), time(6)) == datetime(
        2026, 3, 2, 22, 0, tzinfo=LONDON
    )
    assert inside_window(noon, LONDON, time(8), time(8)) == noon


def test_an_aftercare_token_names_one_appointment_and_is_no_patient_link() -> None:
    secret = "s" * 40
    expires = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
    token = links.aftercare_link_token(secret, 42, 3, expires_at=expires)
    read = links.read_aftercare_link(secret, token)
    assert (read.appointment_id, read.version, read.expires_at) == (42, 3, expires)
    with pytest.raises(links.LinkInvalid):
        links.read_patient_link(secret, token)
    with pytest.raises(links.LinkInvalid):
        links.read_aftercare_link("t" * 40, token)
    with pytest.raises(links.LinkInvalid):
        links.read_aftercare_link(secret, links.patient_link_token(secret, 42, 3, now=expires))
