"""The URLs Twilio is given: status callbacks and the inbound SMS webhook follow
REGIMEN_TWILIO_CALLBACK_URL, which follows REGIMEN_PUBLIC_URL when unset."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from services.notifier.status_callbacks import parse_notification_id
from shared.config import load_settings
from shared.providers.sms import inbound_sms_url, status_callback_url

PUBLIC = {"REGIMEN_PUBLIC_URL": "https://book.example-clinic.com"}


def test_one_public_url_carries_twilios_callbacks_to_booking() -> None:
    settings = load_settings(PUBLIC)
    assert status_callback_url(settings, 42) == (
        "https://book.example-clinic.com/twilio/status?n=42"
    )
    assert inbound_sms_url(settings) == "https://book.example-clinic.com/twilio/sms"


def test_a_callback_url_set_apart_takes_the_callbacks_off_the_public_url() -> None:
    settings = load_settings(
        {**PUBLIC, "REGIMEN_TWILIO_CALLBACK_URL": "https://notify.example-clinic.com/"}
    )
    url = status_callback_url(settings, 42)
    assert url == "https://notify.example-clinic.com/twilio/status?n=42"
    assert inbound_sms_url(settings) == "https://notify.example-clinic.com/twilio/sms"
    # The id the notifier reads back from the callback is the one given.
    [n] = parse_qs(urlsplit(url).query)["n"]
    assert parse_notification_id(n) == 42


def test_dev_routes_twilios_calls_as_a_load_balancer_would() -> None:
    from services.devkit.dev import webhook_router

    ports = {"REGIMEN_BOOKING_PORT": "18080", "REGIMEN_NOTIFIER_PORT": "18082"}
    single = webhook_router(load_settings({**ports, **PUBLIC}))
    # One public URL: booking gets the callback (and forwards it).
    assert single("https://book.example-clinic.com/twilio/status?n=4") == (
        "http://127.0.0.1:18080/twilio/status?n=4"
    )
    apart = webhook_router(
        load_settings(
            {**ports, **PUBLIC, "REGIMEN_TWILIO_CALLBACK_URL": "https://notify.example-clinic.com"}
        )
    )
    assert apart("https://notify.example-clinic.com/twilio/status?n=4") == (
        "http://127.0.0.1:18082/twilio/status?n=4"
    )
    assert apart("https://book.example-clinic.com/twilio/sms") == (
        "http://127.0.0.1:18080/twilio/sms"
    )
