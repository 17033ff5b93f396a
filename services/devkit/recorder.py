"""What the local stand-ins received: every SMS and email, kept in memory and, in `regimen dev`,
appended to a JSON-lines file so the dev inbox still shows them after a restart."""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal


@dataclass
class Sent:
    channel: Literal["sms", "email"]
    id: str
    at: datetime
    to: str
    sender: str
    body: str
    subject: str | None = None
    status: str = "received"
    direction: Literal["outbound", "inbound"] = "outbound"
    html: str | None = None
    attachments: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["at"] = self.at.isoformat()
        return data

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Sent:
        data = dict(data)
        data["at"] = datetime.fromisoformat(str(data["at"]))
        return cls(**data)  # type: ignore[arg-type]


class Recorder:
    """Thread-safe: aiosmtpd's Controller delivers mail from its own thread."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._items: list[Sent] = []
        if path is not None and path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    self._items.append(Sent.from_json(json.loads(line)))

    def add(self, item: Sent) -> None:
        with self._lock:
            self._items.append(item)
            self._append_to_file(item)

    def update_status(self, item_id: str, status: str) -> None:
        with self._lock:
            for item in self._items:
                if item.id == item_id:
                    item.status = status
                    self._append_to_file(item)

    def _append_to_file(self, item: Sent) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(item.to_json()) + "\n")

    def items(self, channel: str | None = None) -> list[Sent]:
        """Newest first; a later line for the same id (a status change) replaces the earlier."""
        with self._lock:
            latest: dict[str, Sent] = {}
            for item in self._items:
                latest[item.id] = item
        found = [i for i in latest.values() if channel is None or i.channel == channel]
        return sorted(found, key=lambda i: i.at, reverse=True)

    def emails_to(self, address: str) -> list[Sent]:
        return [i for i in self.items("email") if address in i.to]
