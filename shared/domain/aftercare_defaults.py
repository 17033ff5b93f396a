"""The aftercare templates a clinic starts with: the "Aftercare" and "Check-ins and escalation"
sections of the clinical defaults (shared/clinical-defaults.md), as seed data. They are written
into `aftercare_template` for the demo treatments and for a clinic's new procedures, and from
then on they are the clinic's to edit (admin API); nothing reads this module at send time.

A consultation gets no template (there is nothing to look after), so nothing is sent for it.
"""

from __future__ import annotations

from shared.store.aftercare_templates import AftercareContent

# After scalp injections, as the handout lists them; dye waits 7 days (14 after PRP).
_NO_WASH = "Do not wash your hair for 24 hours."
_EXERCISE = "No heavy exercise or sweating for 24 to 48 hours."
_HEAT = "No sauna, swimming pool or steam room for 72 hours."
_SUN = "Keep your scalp out of direct sun for 48 hours (a loose hat is fine)."
_HATS = "No tight hats or helmets for 48 to 72 hours."
_SCRATCH = "Do not scratch or massage your scalp for 48 hours."


def _dye(days: int) -> str:
    return f"No hair dye or chemical hair treatments for {days} days."


_NORMAL = "Redness, small bumps, tenderness, mild swelling or bruising for 2 to 5 days."
# The urgent tier: a call to the clinic the same day.
_CALL_WHEN = [
    "A fever of 38 °C or more.",
    "Pus, or redness or red streaks spreading from where you were treated.",
    "Severe pain, or pain that keeps getting worse.",
    "A hot, swollen lump.",
    "Blisters, or skin turning dark or grey.",
    "Swelling or bruising that gets worse after 72 hours.",
]
# Late mycobacterial infections after mesotherapy appear 1 to 12 weeks later.
_LATE_LUMPS = (
    "In the weeks after: new lumps, nodules or draining spots, or patchy hair loss where you "
    "were injected."
)
# The emergency tier: call the emergency number.
EMERGENCY_SIGNS = [
    "Difficulty breathing, or tightness in your throat.",
    "Swelling of your lips, tongue or face.",
    "Fainting.",
    "Hives spreading over your body.",
]


def scalp_procedure(*, dye_days: int = 7) -> AftercareContent:
    """The default for a scalp procedure: a new treatment that needs a consultation first."""
    return AftercareContent(
        instructions=[_NO_WASH, _EXERCISE, _HEAT, _SUN, _HATS, _dye(dye_days), _SCRATCH],
        normal_course=_NORMAL,
        normal_days=5,
        call_when=list(_CALL_WHEN),
        emergency_signs=list(EMERGENCY_SIGNS),
    )


def mesotherapy() -> AftercareContent:
    base = scalp_procedure()
    return AftercareContent(
        instructions=base.instructions,
        normal_course=_NORMAL + " Swelling of the forehead for 1 to 4 days is normal too.",
        normal_days=5,
        call_when=[*base.call_when, _LATE_LUMPS],
        emergency_signs=base.emergency_signs,
    )


def prp() -> AftercareContent:
    return scalp_procedure(dye_days=14)


# The demo treatments' templates, by treatment code (the consultation has none).
DEMO_TEMPLATES = {
    "hair-mesotherapy": mesotherapy,
    "prp-hair": prp,
    "scalp-microneedling": scalp_procedure,
}


def default_for_new_treatment(*, needs_consultation: bool) -> AftercareContent | None:
    """What a treatment created through the admin API starts with: a procedure (one that needs
    a consultation first) gets the scalp-procedure template, anything else (a consultation, a
    review visit) none. Staff can add, change or remove it."""
    return scalp_procedure() if needs_consultation else None
