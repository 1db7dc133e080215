"""Read a pod's status: why a studio cannot start, and what each start-up step means.

Pure functions over the pod dict that KubeSpawner's reflector holds (camelCase keys).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

BUILD_STEP = "studio-user-env"  # the init container that builds the user's environment.yml
STEP_TITLES = {
    "studio-sync-envs": "Syncing the image's conda environments into your home",
    BUILD_STEP: "Building your conda environment",
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
CONNECT = "studio-connect"
CONTAINER_TITLES = {CONNECT: "the studio's proxy (studio-connect)"}


def _describe(name: str, tool: bool = False) -> str:
    title = STEP_TITLES.get(name)
    if title:
        return f"start-up step '{title}'"
    if tool and name == "notebook":
        return "the tool"
    return CONTAINER_TITLES.get(name, f"container '{name}'")


def _terminated_failure(
    name: str, terminated: dict[str, Any] | None, tool: bool = False
) -> str | None:
    if not terminated or terminated.get("exitCode", 0) == 0:
        return None
    message = (terminated.get("message") or terminated.get("reason") or "").strip()
    failed = "failed (build failed)" if name == BUILD_STEP else "failed"
    text = f"{_describe(name, tool)} {failed} with exit code {terminated['exitCode']}"
    return f"{text}: {message}" if message else text


@dataclass(frozen=True)
class PodFailure:
    """Why a pod will not become ready: the message; the container that ran and failed (None
    when none ran, e.g. the image could not be pulled); `transient` when waiting a little may
    still help (a registry that answered 429 or timed out)."""

    message: str
    container: str | None = None
    transient: bool = False

    @property
    def build_failed(self) -> bool:
        """The user's environment.yml did not build (the build step failed)."""
        return self.container == BUILD_STEP

    def __str__(self) -> str:
        return self.message


def _image_failure(status: dict[str, Any], waiting: dict[str, Any]) -> PodFailure:
    """Blame the image, not the start-up step whose container happened to pull it."""
    code = waiting["reason"]
    detail = (waiting.get("message") or "").strip()
    image = status.get("image")
    text = f"the image {image} {IMAGE_WAITING[code]}" if image else (
        f"the image {IMAGE_WAITING[code]}")
    text = f"{text} ({code}): {detail}" if detail else f"{text} ({code})"
    return PodFailure(text, transient=code in PULL_RETRIED and not PERMANENT_PULL.search(detail))


def with_pull_events(failure: PodFailure, events: list[dict[str, Any]]) -> PodFailure:
    """A back-off (ImagePullBackOff) hides why the pull failed; the kubelet's last pull
    failure event says it: a permanent one ends the wait at once."""
    if not failure.transient:
        return failure
    for event in reversed(events):
        message = event.get("message") or ""
        if event.get("reason") == "Failed" and "pull" in message.lower():
            if PERMANENT_PULL.search(message):
                return PodFailure(f"{failure.message}; {message}")
            break
    return failure


def _status_failure(
    status: dict[str, Any], init: bool, tool: bool = False
) -> PodFailure | None:
    name = status.get("name", "?")
    state = status.get("state") or {}
    waiting = state.get("waiting") or {}
    if waiting.get("reason") in IMAGE_WAITING:
        return _image_failure(status, waiting)
    if waiting.get("reason") in FATAL_WAITING:
        detail = waiting.get("message") or ""
        last = (status.get("lastState") or {}).get("terminated")
        crashed = _terminated_failure(name, last, tool)
        if crashed:
            return PodFailure(crashed, name)
        text = f"{_describe(name, tool)}: {FATAL_WAITING[waiting['reason']]} ({waiting['reason']})"
        return PodFailure(f"{text}: {detail}" if detail else text, name)
    for terminated in (state.get("terminated"), (status.get("lastState") or {}).get("terminated")):
        failure = _terminated_failure(name, terminated, tool)
        if failure:
            return PodFailure(failure, name)
    if not init and state.get("terminated"):
        text = f"{_describe(name, tool)} exited before the server was ready"
        output = (state["terminated"].get("message") or "").strip()
        return PodFailure(f"{text}: {output}" if output else text, name)
    return None


def pod_failure(pod: dict[str, Any] | None) -> PodFailure | None:
    """Why this pod will not become ready, or None while it may still start."""
    if not pod:
        return None
    status = pod.get("status") or {}
    containers = (pod.get("spec") or {}).get("containers") or []
    tool = any(c.get("name") == CONNECT for c in containers)
    for key, init in (("initContainerStatuses", True), ("containerStatuses", False)):
        for container in status.get(key) or []:
            failure = _status_failure(container, init, tool)
            if failure:
                return failure
    if status.get("phase") == "Failed":
        text = f"the pod failed: {status.get('reason', '')} {status.get('message', '')}"
        return PodFailure(text.strip())
    return None


def pod_failure_reason(pod: dict[str, Any] | None) -> str | None:
    """The message of ``pod_failure`` (None while the pod may still start)."""
    failure = pod_failure(pod)
    return failure.message if failure else None


def running_step(pod: dict[str, Any] | None) -> str | None:
    """The start-up step (init container) running now, if any."""
    for container in ((pod or {}).get("status") or {}).get("initContainerStatuses") or []:
        if (container.get("state") or {}).get("running"):
            return container.get("name")
    return None


def describe_event(event: dict[str, Any], tool_port: int | None = None) -> str | None:
    """A friendly progress message for a kubelet event about a start-up step (or, with
    `tool_port`, the tool's proxy), if it is one."""
    raw = event.get("raw_event") or {}
    field_path = (raw.get("involvedObject") or {}).get("fieldPath") or ""
    if tool_port and field_path.endswith(f"{{{CONNECT}}}") and raw.get("reason") == "Started":
        return f"Waiting for the tool to listen on port {tool_port}…"
    for name, title in STEP_TITLES.items():
        if field_path.endswith(f"{{{name}}}") and raw.get("reason") == "Started":
            return f"{title}…"
    return None
