"""One studio as the studio home shows it: options, status, last failure, time left, rights.

Built from the hub's ORM row and, when the hub holds one, the live spawner (pending actions
and the start-up step running now). The lifespan comes from the same policy and extension
store the lifespan service enforces (``lifespan.studios.StudioRules``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jupyterhub import orm
from jupyterhub.utils import isoformat

from ..lifespan.studios import Studio, StudioRules
from ..studio_status import (
    FIELD_LABELS,
    INIT_SCRIPT_FAILED,
    LOG_DIR,
    LastFailure,
    derive_status,
)
from .servers import Permissions

DEFAULT_STUDIO_NAME = "Default studio"  # the default server ("") without a saved name
FIELD_OF_STEP = {"studio-user-env": "environment_yml"}  # a failed step → the field to fix


@dataclass(frozen=True)
class TimeLeft:
    """A running studio's deadline, for the page ("stops at 17:40 (in 2 h 10 min)")."""

    deadline: str | None  # ISO 8601 (UTC); None: keeps running
    seconds_left: float | None
    warning: bool
    can_extend_hours: float
    reason: str

    @classmethod
    def of(cls, studio: Studio, hour_seconds: float) -> TimeLeft:
        data = studio.to_json(hour_seconds)
        return cls(data["deadline"], data["seconds_left"], data["warning"],
                   data["can_extend_hours"] or 0, data["reason"])


@dataclass(frozen=True)
class StudioRow:
    """Everything the home shows about one studio."""

    owner: str
    server: str
    options: Mapping[str, Any]
    status: str
    failure: LastFailure | None
    started: str | None
    last_activity: str | None
    time_left: TimeLeft | None
    can: Permissions

    @property
    def display_name(self) -> str:
        return str(self.options.get("name") or self.server or DEFAULT_STUDIO_NAME)

    @property
    def private(self) -> bool:
        return bool(self.options.get("private"))

    @property
    def data(self) -> list[str]:
        return [str(d.get("name")) for d in self.options.get("data") or []
                if isinstance(d, Mapping)]

    @property
    def failure_field(self) -> str | None:
        """The form field a failure concerns, to show the message next to it."""
        return failure_field(self.failure, self.options)

    @property
    def failure_field_label(self) -> str | None:
        """The field the failure concerns, as the form names it."""
        field = self.failure_field
        return FIELD_LABELS.get(field, field) if field else None

    @property
    def log_dir(self) -> str:
        return LOG_DIR


def failure_field(failure: LastFailure | None, options: Mapping[str, Any]) -> str | None:
    """The form field a failure concerns: the build step, the init script, the image, or the
    field it names.

    ``options``: the saved options, or the form's values (with ``source``).
    """
    if failure is None:
        return None
    text = failure.summary
    if failure.step in FIELD_OF_STEP:
        return FIELD_OF_STEP[failure.step]
    if INIT_SCRIPT_FAILED in text:
        return "init_script"
    if failure.step is None and ("image" in text.split(":", 1)[0] or ": the image " in text):
        custom = options.get("source") == "custom" or not options.get("template")
        return "image" if custom else "template"
    head = text.split(":", 1)[0]
    head = next((field for field, label in FIELD_LABELS.items() if label == head), head)
    root = head.split("[", 1)[0].split(".", 1)[0]
    return root if root.isidentifier() and root in options else None


def _time(value: datetime | None) -> str | None:
    return isoformat(value) if value else None


def studio_row(
    orm_spawner: orm.Spawner, live: Any, can: Permissions, rules: StudioRules,
) -> StudioRow:
    """The row of one named server; ``live`` is the hub's Spawner object for it, if any."""
    owner = orm_spawner.user
    options = orm_spawner.user_options or {}
    active = orm_spawner.server is not None
    pending = getattr(live, "pending", None) if live is not None else None
    ready = active and not pending
    step = live.running_step() if pending == "spawn" and hasattr(live, "running_step") else None
    failure = (live.last_failure if live is not None and hasattr(live, "last_failure")
               else LastFailure.from_state(orm_spawner.state))
    status = derive_status(active=active, ready=ready, pending=pending, step=step,
                           failure=failure)
    if pending == "spawn" and hasattr(live, "failure_now"):  # failed, the hub not told yet
        failing = live.failure_now()
        if failing:
            failure = failing
            status = "build-failed" if failing.build_failed else "errored"
    started = _time(orm_spawner.started)
    time_left = None
    if status == "running" and started:
        user_model = {"name": owner.name, "groups": [g.name for g in owner.groups]}
        server_model = {"name": orm_spawner.name, "started": started, "ready": True,
                        "user_options": options}
        studio = rules.studio(user_model, server_model)
        time_left = TimeLeft.of(studio, rules.hour_seconds) if studio else None
    return StudioRow(
        owner=owner.name, server=orm_spawner.name, options=options, status=status,
        failure=failure if status in ("errored", "build-failed") else None,
        started=started, last_activity=_time(orm_spawner.last_activity),
        time_left=time_left, can=can,
    )
