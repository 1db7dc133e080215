"""Read a pod's status: why a studio cannot start, and what each start-up step means.

Pure functions over the pod dict that KubeSpawner's reflector holds (camelCase keys).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

STEP_TITLES = {
    "studio-sync-envs": "Syncing the image's conda environments into your home",
    "studio-user-env": "Building your conda environment",
    "studio-kernels": "Registering kernels",
}
IMAGE_WAITING = {
    "ErrImagePull": "could not be pulled",
    "ImagePullBackOff": "could not be pulled",
    "InvalidImageName": "has an invalid name",
    "ErrImageNeverPull": "is not on the node and may not be pulled",
}
PULL_RETRIED = frozenset({"ErrImagePull", "ImagePullBackOff"})
# A pull error whose message says the image or the right to pull it is missing will not heal.
PERMANENT_PULL = re.compile(
    r"not found|manifest unknown|does not exist|unauthorized|authentication required|"
    r"access denied|denied|forbidden|\b40[134]\b|no such host|invalid reference",
    re.IGNORECASE,
)
FATAL_WAITING = {
    "CreateContainerConfigError": "the container configuration is invalid",
    "CreateContainerError": "the container could not be created",
    "RunContainerError": "the container could not be run",
    "CrashLoopBackOff": "the container keeps crashing",
}


def _describe(name: str) -> str:
    title = STEP_TITLES.get(name)
    return f"start-up step '{title}'" if title else f"container '{name}'"


def _terminated_failure(name: str, terminated: dict[str, Any] | None) -> str | None:
    if not terminated or terminated.get("exitCode", 0) == 0:
        return None
    message = (terminated.get("message") or terminated.get("reason") or "").strip()
    failed = "failed (build failed)" if name == "studio-user-env" else "failed"
    text = f"{_describe(name)} {failed} with exit code {terminated['exitCode']}"
    return f"{text}: {message}" if message else text


@dataclass(frozen=True)
class Failure:
    """Why a pod cannot become ready; `transient` when waiting a little may still help (a
    registry that answered 429 or timed out)."""

    reason: str
    transient: bool = False

    def __str__(self) -> str:
        return self.reason


def _image_failure(status: dict[str, Any], waiting: dict[str, Any]) -> Failure:
    """Blame the image, not the start-up step whose container happened to pull it."""
    code = waiting["reason"]
    detail = (waiting.get("message") or "").strip()
    image = status.get("image")
    text = f"the image {image} {IMAGE_WAITING[code]}" if image else (
        f"the image {IMAGE_WAITING[code]}")
    text = f"{text} ({code}): {detail}" if detail else f"{text} ({code})"
    return Failure(text, code in PULL_RETRIED and not PERMANENT_PULL.search(detail))


def with_pull_events(failure: Failure, events: list[dict[str, Any]]) -> Failure:
    """A back-off (ImagePullBackOff) hides why the pull failed; the kubelet's last pull
    failure event says it: a permanent one ends the wait at once."""
    if not failure.transient:
        return failure
    for event in reversed(events):
        message = event.get("message") or ""
        if event.get("reason") == "Failed" and "pull" in message.lower():
            if PERMANENT_PULL.search(message):
                return Failure(f"{failure.reason}; {message}")
            break
    return failure


def _status_failure(status: dict[str, Any], init: bool) -> Failure | str | None:
    name = status.get("name", "?")
    state = status.get("state") or {}
    waiting = state.get("waiting") or {}
    if waiting.get("reason") in IMAGE_WAITING:
        return _image_failure(status, waiting)
    if waiting.get("reason") in FATAL_WAITING:
        detail = waiting.get("message") or ""
        last = (status.get("lastState") or {}).get("terminated")
        crashed = _terminated_failure(name, last)
        if crashed:
            return crashed
        text = f"{_describe(name)}: {FATAL_WAITING[waiting['reason']]} ({waiting['reason']})"
        return f"{text}: {detail}" if detail else text
    for terminated in (state.get("terminated"), (status.get("lastState") or {}).get("terminated")):
        failure = _terminated_failure(name, terminated)
        if failure:
            return failure
    if not init and state.get("terminated"):
        return f"{_describe(name)} exited before the server was ready"
    return None


def pod_failure(pod: dict[str, Any] | None) -> Failure | None:
    """Why this pod will not become ready, or None while it may still start."""
    if not pod:
        return None
    status = pod.get("status") or {}
    for key, init in (("initContainerStatuses", True), ("containerStatuses", False)):
        for container in status.get(key) or []:
            reason = _status_failure(container, init)
            if reason:
                return reason if isinstance(reason, Failure) else Failure(reason)
    if status.get("phase") == "Failed":
        text = f"the pod failed: {status.get('reason', '')} {status.get('message', '')}"
        return Failure(text.strip())
    return None


def pod_failure_reason(pod: dict[str, Any] | None) -> str | None:
    """The reason of pod_failure, as text."""
    failure = pod_failure(pod)
    return failure.reason if failure else None


def describe_event(event: dict[str, Any]) -> str | None:
    """A friendly progress message for a kubelet event about a start-up step, if it is one."""
    raw = event.get("raw_event") or {}
    field_path = (raw.get("involvedObject") or {}).get("fieldPath") or ""
    for name, title in STEP_TITLES.items():
        if field_path.endswith(f"{{{name}}}") and raw.get("reason") == "Started":
            return f"{title}…"
    return None
