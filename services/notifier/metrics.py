"""The notifier's Prometheus metrics: how much waits, how late it leaves, what the providers say.

Registered on the app's own registry (`/metrics` of that process). Provider codes are labels:
Twilio's and SMTP's codes are a small closed set, so they cannot blow up the label space.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Waiting and in-flight states: the rest are final, and counting them would scan the whole table.
QUEUE_STATUSES = ("scheduled", "sending", "unknown")
# From a fraction of a second (the lag target is 1 s at p99) to an hour (a provider outage).
RECORD_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30)
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


@dataclass(frozen=True)
class NotifierMetrics:
    queue: Gauge
    overdue: Gauge
    lag: Histogram
    sends: Counter
    failures: Counter
    # From a call's return to its outcome's commit: a crash inside it resends an accepted email.
    record_wait: Histogram
    # Patients' SMS replies by what was made of them (confirmed, opted_out, inbox, emergency...).
    replies: Counter

    def provider_call(self, channel: str, outcome: str, code: int | None = None) -> None:
        """One provider call and how it ended (sent, temporary, permanent, ambiguous)."""
        self.sends.labels(channel, outcome, _code(code)).inc()

    def failed(self, channel: str, code: int | None, stage: str) -> None:
        """A message that failed for good, at send time or in delivery."""
        self.failures.labels(channel, _code(code), stage).inc()

    def set_queue(self, by_status: dict[str, int], overdue: int) -> None:
        for status in QUEUE_STATUSES:
            self.queue.labels(status).set(by_status.get(status, 0))
        self.overdue.set(overdue)


def _code(code: int | None) -> str:
    return "" if code is None else str(code)


def create_metrics(registry: CollectorRegistry) -> NotifierMetrics:
    return NotifierMetrics(
        queue=Gauge(
            "regimen_notification_queue",
            "Notifications waiting or in flight, by status (refreshed by a sweep)",
            ["status"],
            registry=registry,
        ),
        overdue=Gauge(
            "regimen_notification_overdue",
            "Scheduled notifications already due (refreshed by a sweep)",
            registry=registry,
        ),
        lag=Histogram(
            "regimen_notification_lag_seconds",
            "From a notification's due time to the provider accepting it",
            ["channel"],
            buckets=LAG_BUCKETS,
            registry=registry,
        ),
        sends=Counter(
            "regimen_notification_sends",
            "Provider calls by channel, outcome and provider code",
            ["channel", "outcome", "code"],
            registry=registry,
        ),
        failures=Counter(
            "regimen_notification_failures",
            "Notifications that failed for good, by channel, provider code and stage",
            ["channel", "code", "stage"],
            registry=registry,
        ),
        record_wait=Histogram(
            "regimen_notifier_outcome_record_seconds",
            "From a provider call's return to the commit of its outcome",
            ["channel"],
            buckets=RECORD_BUCKETS,
            registry=registry,
        ),
        replies=Counter(
            "regimen_sms_replies",
            "Patients' SMS replies handled, by what was made of them",
            ["handled_as"],
            registry=registry,
        ),
    )


METRICS = web.AppKey("notifier_metrics", NotifierMetrics)
