"""Read a pod's status: why a studio cannot start, and what each start-up step means.

Pure functions over the pod dict that KubeSpawner's reflector holds (camelCase keys).
"""

from __future__ import annotations

from typing import Any

STEP_TITLES = {
    "studio-sync-envs": "Syncing the image's conda environments into your home",
    "studio-user-env": "Building your conda environment",
    "studio-kernels": "Registering kernels",
}
FATAL_WAITING = {
    "ErrImagePull": "the image could not be pulled",
    "ImagePullBackOff": "the image could not be pulled",
    "InvalidImageName": "the image name is invalid",
    "ErrImageNeverPull": "the image is not on the node and may not be pulled",
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
    failed = "failed (build failed)" if name == "studio-user-env" else "failed"
    text = f"{_describe(name, tool)} {failed} with exit code {terminated['exitCode']}"
    return f"{text}: {message}" if message else text


def _status_failure(status: dict[str, Any], init: bool, tool: bool = False) -> str | None:
    name = status.get("name", "?")
    state = status.get("state") or {}
    waiting = state.get("waiting") or {}
    if waiting.get("reason") in FATAL_WAITING:
        detail = waiting.get("message") or ""
        last = (status.get("lastState") or {}).get("terminated")
        crashed = _terminated_failure(name, last, tool)
        if crashed:
            return crashed
        text = f"{_describe(name, tool)}: {FATAL_WAITING[waiting['reason']]} ({waiting['reason']})"
        return f"{text}: {detail}" if detail else text
    for terminated in (state.get("terminated"), (status.get("lastState") or {}).get("terminated")):
        failure = _terminated_failure(name, terminated, tool)
        if failure:
            return failure
    if not init and state.get("terminated"):
        text = f"{_describe(name, tool)} exited before the server was ready"
        output = (state["terminated"].get("message") or "").strip()
        return f"{text}: {output}" if output else text
    return None


def pod_failure_reason(pod: dict[str, Any] | None) -> str | None:
    """Why this pod will not become ready, or None while it may still start."""
    if not pod:
        return None
    status = pod.get("status") or {}
    containers = (pod.get("spec") or {}).get("containers") or []
    tool = any(c.get("name") == CONNECT for c in containers)
    for key, init in (("initContainerStatuses", True), ("containerStatuses", False)):
        for container in status.get(key) or []:
            reason = _status_failure(container, init, tool)
            if reason:
                return reason
    if status.get("phase") == "Failed":
        return f"the pod failed: {status.get('reason', '')} {status.get('message', '')}".strip()
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
