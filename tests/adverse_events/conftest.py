"""The appointment tests' desk (the demo clinic, a patient, appointments written with the
store) serves the adverse-event tests too."""

from tests.appointments.conftest import desk

__all__ = ["desk"]
