"""The lifespan state of one running server: Hub models + policy + extensions + now."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from . import policy as p
from .store import ExtensionStore

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def parse_time(value: str | None) -> datetime | None:
    """Parse the Hub's ISO 8601 timestamps (``...Z``) into aware datetimes."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Studio:
    """One running server and when it must stop."""

    user: str
    server: str  # "" for the default server
    started: str | None
    ready: bool
    policy: p.Policy
    lifespan: p.Lifespan
    status: p.Status

    @property
    def key(self) -> str:
        return f"{self.user}/{self.server}"

    @property
    def label(self) -> str:
        return f"{self.user}/{self.server}" if self.server else f"{self.user} (default server)"

    def to_json(self, hour_seconds: float) -> dict[str, Any]:
        st, span, pol = self.status, self.lifespan, self.policy
        room = None
        if span.requested_hours is not None and pol.cap_hours is not None:
            room = max(pol.cap_hours - span.requested_hours - span.extension_hours, 0)
        return {
            "user": self.user,
            "server": self.server,
            "started": self.started,
            "ready": self.ready,
            "keep_running": span.keep_running,
            "lifespan_hours": span.requested_hours,
            "extension_hours": span.extension_hours,
            "total_hours": span.total_hours,
            "max_hours": pol.cap_hours,
            "can_extend_hours": room if span.requested_hours is not None else 0,
            "deadline": st.deadline.isoformat() if st.deadline else None,
            "seconds_left": st.seconds_left,
            "hours_left": None if st.seconds_left is None else st.seconds_left / hour_seconds,
            "warning": st.warning,
            "overdue": st.overdue,
            "reason": span.reason,
        }


class StudioRules:
    """Turns Hub user models into Studios, using the policies, the extension store and a clock."""

    def __init__(self, base: p.Policy, group_policies: Mapping[str, p.Policy],
                 store: ExtensionStore, *, hour_seconds: float = p.HOUR,
                 warning_seconds: float = 1800, clock: Clock = utcnow) -> None:
        self.base = base
        self.group_policies = dict(group_policies)
        self.store = store
        self.hour_seconds = hour_seconds
        self.warning_seconds = warning_seconds
        self.clock = clock

    def policy_for(self, user_model: Mapping[str, Any]) -> p.Policy:
        return p.resolve_policy(self.base, self.group_policies, user_model.get("groups") or [])

    def studio(self, user_model: Mapping[str, Any], server_model: Mapping[str, Any],
               now: datetime | None = None) -> Studio | None:
        """The studio for one server model; None if it has not started (no ``started``)."""
        started = server_model.get("started")
        started_at = parse_time(started)
        if started_at is None:
            return None
        pol = self.policy_for(user_model)
        user, server = user_model["name"], server_model.get("name", "")
        ext = self.store.hours(user, server, started)
        span = p.lifespan(server_model.get("user_options"), ext, pol)
        when = p.deadline(started_at, span, self.hour_seconds)
        st = p.status(when, now or self.clock(), self.warning_seconds)
        return Studio(user, server, started, bool(server_model.get("ready")), pol, span, st)

    def studios(self, user_model: Mapping[str, Any],
                now: datetime | None = None) -> Iterator[Studio]:
        now = now or self.clock()
        for server_model in (user_model.get("servers") or {}).values():
            studio = self.studio(user_model, server_model, now)
            if studio is not None:
                yield studio

    def extend(self, studio: Studio, hours: float) -> None:
        """Grant ``hours`` more to a studio, or PolicyError if the policy forbids it."""
        total = p.extension_allowed(studio.lifespan, studio.policy, hours)
        self.store.set_hours(studio.user, studio.server, studio.started, total)
