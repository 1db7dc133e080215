"""A studio's status (as Seqera Studios names them) and its last failure, kept in the state.

Pure: the spawner records a ``LastFailure`` in its state (``get_state``), so the hub can show
why a studio failed after its pod is gone; ``derive_status`` turns what the hub knows about a
server into one of ``STATUSES``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from .pod_status import BUILD_STEP

STATUSES = ("building", "build-failed", "starting", "running", "stopping", "stopped", "errored")
FAILURE_KEY = "studio_last_failure"
SAVED_KEY = "studio_saved"
REPORT_MAX = 16384  # characters of a build report kept in the state (the pod gives ≤ 4 KiB)
START_FAILED = "The studio could not start: "  # spawner.StudioStartError's lead-in
#: Form fields by the name the form shows, where a start failure's message names it so.
FIELD_LABELS = {"environment_yml": "Conda packages"}
LOG_DIR = "~/.local/state/studio/"  # <step>.log of each start-up step (studio_startup.py)
INIT_SCRIPT_FAILED = "Your init script "  # how the start-up program reports the init script


@dataclass(frozen=True)
class LastFailure:
    """Why the last start failed: a message, the start-up step, and when."""

    message: str
    step: str | None = None
    at: str = ""

    @property
    def build_failed(self) -> bool:
        return self.step == BUILD_STEP

    @property
    def summary(self) -> str:
        """The message without the hub's lead-in, for a one-line view."""
        return self.message.removeprefix(START_FAILED)

    @classmethod
    def now(cls, message: str, step: str | None = None) -> LastFailure:
        at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return cls(message[:REPORT_MAX], step, at)

    @classmethod
    def from_state(cls, state: Mapping[str, Any] | None) -> LastFailure | None:
        raw = (state or {}).get(FAILURE_KEY)
        if not isinstance(raw, Mapping) or not isinstance(raw.get("message"), str):
            return None
        step = raw.get("step") if isinstance(raw.get("step"), str) else None
        return cls(raw["message"], step, str(raw.get("at") or ""))

    def to_state(self) -> dict[str, Any]:
        return asdict(self)


def derive_status(
    *, active: bool, ready: bool, pending: str | None, step: str | None,
    failure: LastFailure | None,
) -> str:
    """One of ``STATUSES`` from the server's state in the hub.

    ``active``: the hub has a server (running or pending); ``pending``: the spawner's pending
    action (``spawn``/``stop``); ``step``: the start-up step running in the pod now.
    """
    if pending == "stop":
        return "stopping"
    if pending:
        return "building" if step == BUILD_STEP else "starting"
    if active:
        return "running" if ready else "starting"
    if failure:
        return "build-failed" if failure.build_failed else "errored"
    return "stopped"
