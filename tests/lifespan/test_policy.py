"""Pure deadline logic: lifespans, caps, keep running, group policies, extensions."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from studio_spawner.lifespan import policy as p

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def total(options: dict | None, ext: float = 0, **policy: object) -> float | None:
    return p.lifespan(options, ext, p.Policy(**policy)).total_hours


def test_requested_lifespan_plus_extensions() -> None:
    assert total({"lifespan_hours": 3}) == 3
    assert total({"lifespan_hours": 3}, 2) == 5


def test_missing_key_uses_default_and_bad_values_never_stop_early() -> None:
    assert total({}, default_hours=6) == 6
    assert total(None, default_hours=6) == 6
    assert total({"lifespan_hours": "3"}, default_hours=6) == 3, "read as the validator reads it"
    assert total({"lifespan_hours": "3h"}, default_hours=6) == 6
    assert total({"lifespan_hours": True}, default_hours=6) == 6
    assert total({"lifespan_hours": 0}, min_hours=1) == 1
    assert total({"lifespan_hours": float("nan")}, default_hours=6) == 6
    huge = p.lifespan({"lifespan_hours": 1e300}, 0, p.Policy(max_hours=None))
    assert p.deadline(T0, huge) is None


def test_admin_maximum_caps_lifespan_and_extensions() -> None:
    assert total({"lifespan_hours": 200}, max_hours=120) == 120
    assert total({"lifespan_hours": 100}, 50, max_hours=120) == 120
    assert total({"lifespan_hours": 100}, 50, max_hours=120, absolute_max_hours=24) == 24
    assert total({"lifespan_hours": 100}, 50, max_hours=None) == 150


def test_keep_running() -> None:
    assert total({"lifespan_hours": None}, allow_keep_running=True) is None
    assert total({"lifespan_hours": None}, allow_keep_running=True, absolute_max_hours=48) == 48
    # not allowed for this user: the maximum, never "forever"
    assert total({"lifespan_hours": None}, allow_keep_running=False, max_hours=10) == 10
    assert total({"lifespan_hours": None}, max_hours=None, default_hours=7) == 7


def test_deadline_and_status_use_the_time_unit() -> None:
    span = p.lifespan({"lifespan_hours": 2}, 1, p.Policy())
    when = p.deadline(T0, span, hour_seconds=10)
    assert when == T0 + timedelta(seconds=30)
    assert not p.status(when, T0 + timedelta(seconds=29.9), 5).overdue
    assert p.status(when, T0 + timedelta(seconds=30), 5).overdue
    assert p.status(when, T0 + timedelta(seconds=26), 5).warning
    assert not p.status(when, T0 + timedelta(seconds=24), 5).warning
    assert p.deadline(T0, p.lifespan({"lifespan_hours": None}, 0,
                                     p.Policy(allow_keep_running=True))) is None


def test_group_policies_most_generous_wins_and_others_get_base() -> None:
    base = p.Policy(max_hours=12, default_hours=4)
    groups = {
        "gpu": p.group_policy(base, {"max_hours": 24, "allow_keep_running": True}, "gpu"),
        "long": p.group_policy(base, {"max_hours": 72}, "long"),
        "free": p.group_policy(base, {"max_hours": None}, "free"),
    }
    assert p.resolve_policy(base, groups, []) == base
    assert p.resolve_policy(base, groups, ["other"]) == base
    both = p.resolve_policy(base, groups, ["gpu", "long"])
    assert both.max_hours == 72 and both.allow_keep_running and both.default_hours == 4
    assert p.resolve_policy(base, groups, ["long", "free"]).max_hours is None


def test_group_policy_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="'gpu'.*min_hours"):
        p.group_policy(p.Policy(), {"min_hours": 2}, "gpu")


def test_extension_within_maximum_only() -> None:
    pol = p.Policy(max_hours=10)
    span = p.lifespan({"lifespan_hours": 6}, 1, pol)
    assert p.extension_allowed(span, pol, 3) == 4
    with pytest.raises(p.PolicyError, match="at most 3 h"):
        p.extension_allowed(span, pol, 4)
    for bad in (0, -1, "2", True, None, float("nan"), float("inf")):
        with pytest.raises(p.PolicyError):
            p.extension_allowed(span, pol, bad)  # type: ignore[arg-type]
    keep = p.Policy(allow_keep_running=True)
    with pytest.raises(p.PolicyError, match="keeps running"):
        p.extension_allowed(p.lifespan({"lifespan_hours": None}, 0, keep), keep, 1)
