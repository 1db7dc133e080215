"""Pure lifespan policy: when must a studio stop, and how far may it be extended.

No I/O, no clock: callers pass ``started`` and ``now``. Durations are in *hours*; the caller
turns hours into seconds with its time unit (``hour_seconds``), so tests can use short hours
without changing this logic.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any

HOUR = 3600.0


class PolicyError(ValueError):
    """An extension the policy does not allow; the message is meant for the user."""


@dataclass(frozen=True)
class Policy:
    """The lifespan rules that apply to one user.

    - ``default_hours``: lifespan of a server with no ``lifespan_hours`` key in its options.
    - ``min_hours``: shortest lifespan honoured (a smaller stored value is raised to it).
    - ``max_hours``: a limited studio's lifespan plus extensions never exceeds this (None: no cap).
    - ``allow_keep_running``: whether a null lifespan ("keep running") is honoured; if not, such
      a studio gets ``max_hours`` (or ``default_hours`` when there is no ``max_hours``).
    - ``absolute_max_hours``: no studio, not even "keep running", runs longer (None: no limit).
    """

    default_hours: float = 8
    min_hours: float = 1
    max_hours: float | None = 120
    allow_keep_running: bool = False
    absolute_max_hours: float | None = None

    def __post_init__(self) -> None:
        for name in ("default_hours", "min_hours", "max_hours", "absolute_max_hours"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value <= 0):
                raise ValueError(f"lifespan policy: {name} must be a positive number, "
                                 f"not {value!r}")

    @property
    def cap_hours(self) -> float | None:
        """The largest total lifespan of a limited studio (None: unlimited)."""
        return _min_or_none(self.max_hours, self.absolute_max_hours)


GROUP_POLICY_KEYS = frozenset({"default_hours", "max_hours", "allow_keep_running",
                               "absolute_max_hours"})


def group_policy(base: Policy, overrides: Mapping[str, Any], group: str = "?") -> Policy:
    """The base policy with one group's overrides (unknown keys are an error naming the group)."""
    unknown = set(overrides) - GROUP_POLICY_KEYS
    if unknown:
        raise ValueError(f"lifespan group policy {group!r}: unknown keys {sorted(unknown)}; "
                         f"allowed: {sorted(GROUP_POLICY_KEYS)}")
    return replace(base, **overrides)


def resolve_policy(base: Policy, group_policies: Mapping[str, Policy],
                   groups: Iterable[str]) -> Policy:
    """The policy for a user in ``groups``: the most generous of their groups' policies.

    A user in no configured group gets ``base``. A user in several configured groups gets, field
    by field, the most generous value among those groups (larger hours, None = unlimited beats
    any number, keep-running allowed if any group allows it). ``min_hours`` is always the base's.
    """
    matching = [group_policies[g] for g in sorted(set(groups)) if g in group_policies]
    if not matching:
        return base
    return Policy(
        default_hours=max(p.default_hours for p in matching),
        min_hours=base.min_hours,
        max_hours=_max_or_none(p.max_hours for p in matching),
        allow_keep_running=any(p.allow_keep_running for p in matching),
        absolute_max_hours=_max_or_none(p.absolute_max_hours for p in matching),
    )


@dataclass(frozen=True)
class Lifespan:
    """What the policy makes of one server's stored options and extensions."""

    requested_hours: float | None  # the lifespan asked for (None: keep running)
    extension_hours: float  # extensions granted so far
    total_hours: float | None  # effective lifespan from ``started`` (None: no deadline)
    reason: str  # why the total is what it is, in words for logs and users

    @property
    def keep_running(self) -> bool:
        return self.total_hours is None


_WHOLE_HOURS = re.compile(r"[0-9]{1,6}")


def requested_hours(user_options: Mapping[str, Any] | None, policy: Policy) -> float | None:
    """The lifespan a server asked for, read from its ``user_options`` (None: keep running)."""
    options = user_options or {}
    if "lifespan_hours" not in options:
        return policy.default_hours
    value = options["lifespan_hours"]
    if value is None:
        return None
    if isinstance(value, str) and _WHOLE_HOURS.fullmatch(value.strip()):
        value = int(value)  # as the spawner's validator reads it (options stored by older versions)
    if not _is_number(value):
        return policy.default_hours  # not written by our form: fall back, never stop early
    return max(float(value), policy.min_hours)


def lifespan(user_options: Mapping[str, Any] | None, extension_hours: float,
             policy: Policy) -> Lifespan:
    """Combine requested lifespan, extensions and the policy into an effective lifespan."""
    requested = requested_hours(user_options, policy)
    if "lifespan_hours" not in (user_options or {}):
        origin = f"default lifespan {_h(requested)}"
    elif requested is None:
        origin = "keep running"
    else:
        origin = f"lifespan {_h(requested)}"
    if requested is None and not policy.allow_keep_running:
        requested = policy.max_hours or policy.default_hours
        origin = f"keep running not allowed, lifespan {_h(requested)}"
    if requested is None:
        cap = policy.absolute_max_hours
        reason = f"keep running, absolute maximum {_h(cap)}" if cap else "keep running"
        return Lifespan(None, 0, cap, reason)
    total = requested + extension_hours
    reason = origin + (f" + {_h(extension_hours)} extension" if extension_hours else "")
    cap = policy.cap_hours
    if cap is not None and total > cap:
        total = cap
        reason += f", capped at the maximum {_h(cap)}"
    return Lifespan(requested, extension_hours, total, reason)


def deadline(started: datetime, span: Lifespan, hour_seconds: float = HOUR) -> datetime | None:
    """When the studio must stop (None: never)."""
    if span.total_hours is None:
        return None
    try:
        return started + timedelta(seconds=span.total_hours * hour_seconds)
    except OverflowError:
        return None  # beyond any calendar: as good as never


def extension_allowed(span: Lifespan, policy: Policy, hours: float) -> float:
    """The new extension total after adding ``hours``, or PolicyError saying why not."""
    if not _is_number(hours) or hours <= 0:
        raise PolicyError("hours must be a positive number")
    if span.requested_hours is None:
        raise PolicyError("this studio keeps running; it needs no extension")
    cap = policy.cap_hours
    current = span.requested_hours + span.extension_hours
    if cap is not None and current + hours > cap:
        room = max(cap - current, 0)
        raise PolicyError(f"the maximum lifespan is {_h(cap)}; you can extend by at most "
                          f"{_h(room)}")
    return span.extension_hours + hours


@dataclass(frozen=True)
class Status:
    """Time left for a studio at one moment."""

    deadline: datetime | None
    seconds_left: float | None
    overdue: bool
    warning: bool


def status(deadline_at: datetime | None, now: datetime, warning_seconds: float) -> Status:
    """Time left, overdue (the deadline has passed) and warning (stop is near)."""
    if deadline_at is None:
        return Status(None, None, False, False)
    left = (deadline_at - now).total_seconds()
    return Status(deadline_at, max(left, 0.0), left <= 0, left <= warning_seconds)


def policy_field_names() -> list[str]:
    return [f.name for f in fields(Policy)]


def _is_number(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _h(hours: float | None) -> str:
    if hours is None:
        return "unlimited"
    return f"{hours:g} h"


def _min_or_none(*values: float | None) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _max_or_none(values: Iterable[float | None]) -> float | None:
    values = list(values)
    return None if any(v is None for v in values) else max(values)  # type: ignore[type-var]
