"""Pod status as a kubelet reports it: container states, conditions, phase. Pure functions."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

#: kubelet's limits for termination messages (pkg/kubelet/container)
MAX_MESSAGE_BYTES = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048


def now() -> str:
    """The current time as a Kubernetes RFC 3339 timestamp (second precision, UTC)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Terminated:
    """A finished container run."""

    exit_code: int
    reason: str
    started_at: str | None
    finished_at: str
    message: str | None = None
    signal: int | None = None
    container_id: str | None = None

    def to_json(self) -> dict:
        out = {"exitCode": self.exit_code, "reason": self.reason, "finishedAt": self.finished_at,
               "startedAt": self.started_at or self.finished_at}
        if self.message:
            out["message"] = self.message
        if self.signal:
            out["signal"] = self.signal
        if self.container_id:
            out["containerID"] = self.container_id
        return out


@dataclass
class ContainerRecord:
    """What the kubelet knows about one container of a pod."""

    name: str
    image: str
    image_id: str = ""
    state: str = "waiting"  # waiting | running | terminated
    reason: str | None = "ContainerCreating"
    message: str | None = None
    started_at: str | None = None
    terminated: Terminated | None = None
    last_terminated: Terminated | None = None
    restart_count: int = 0
    ready: bool = False
    container_id: str | None = None

    def wait(self, reason: str, message: str | None = None) -> None:
        """Enter the waiting state."""
        self.state, self.reason, self.message, self.ready = "waiting", reason, message, False

    def run(self, container_id: str) -> None:
        """Enter the running state now."""
        self.state, self.reason, self.message = "running", None, None
        self.started_at, self.container_id = now(), container_id

    def terminate(self, result: Terminated) -> None:
        """Enter the terminated state; the previous termination becomes `lastState`."""
        if self.terminated is not None:
            self.last_terminated = self.terminated
        self.state, self.terminated, self.ready = "terminated", result, False

    def restart_waiting(self, reason: str, message: str | None) -> None:
        """Waiting for a restart: the last run moves to `lastState`, the restart count grows."""
        if self.terminated is not None:
            self.last_terminated = self.terminated
            self.terminated = None
        self.restart_count += 1
        self.wait(reason, message)

    def to_json(self) -> dict:
        if self.state == "running":
            state = {"running": {"startedAt": self.started_at}}
        elif self.state == "terminated" and self.terminated is not None:
            state = {"terminated": self.terminated.to_json()}
        else:
            waiting = {"reason": self.reason} if self.reason else {}
            if self.message:
                waiting["message"] = self.message
            state = {"waiting": waiting}
        out = {
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "state": state,
            "lastState": {"terminated": self.last_terminated.to_json()}
            if self.last_terminated else {},
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": self.state == "running",
        }
        if self.container_id:
            out["containerID"] = self.container_id
        return out


def log_tail(data: bytes, lines: int = FALLBACK_LOG_LINES, max_bytes: int = FALLBACK_LOG_BYTES
             ) -> str:
    """The last `lines` lines of a log, then at most its last `max_bytes` bytes."""
    parts = data.splitlines(keepends=True)[-lines:]
    tail = b"".join(parts)[-max_bytes:]
    return tail.decode("utf-8", "replace")


def termination_message(message_file: bytes, log: bytes, policy: str | None, failed: bool
                        ) -> str | None:
    """The terminated state's message: the message file, or the log tail (FallbackToLogsOnError).

    Kubelet uses the log only when the container failed and wrote no termination message.
    """
    text = message_file[:MAX_MESSAGE_BYTES].decode("utf-8", "replace")
    if text.strip():
        return text
    if policy == "FallbackToLogsOnError" and failed:
        return log_tail(log) or None
    return None


def exit_reason(exit_code: int) -> str:
    """`Completed` for 0, `Error` otherwise (as containerd reports)."""
    return "Completed" if exit_code == 0 else "Error"


def should_restart(policy: str, exit_code: int) -> bool:
    """Whether a container that exited with `exit_code` restarts under the pod's policy."""
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


def pod_phase(
    restart_policy: str,
    init_failed: bool,
    initialized: bool,
    containers: Sequence[ContainerRecord],
) -> str:
    """The pod phase from its containers, following kubelet's getPhase()."""
    if init_failed:
        return "Failed"
    if not initialized:
        return "Pending"
    running = sum(c.state == "running" for c in containers)
    waiting = sum(c.state == "waiting" for c in containers)
    stopped = [c for c in containers if c.state == "terminated"]
    succeeded = sum(c.terminated.exit_code == 0 for c in stopped if c.terminated)
    # a container waiting after having run once is restarting: it counts as running
    restarting = sum(c.state == "waiting" and c.last_terminated is not None for c in containers)
    if waiting - restarting > 0:
        return "Pending"
    if running or restarting:
        return "Running"
    if stopped and len(stopped) == len(containers):
        if restart_policy == "Always":
            return "Running"
        return "Succeeded" if succeeded == len(stopped) else "Failed"
    return "Pending"


def _condition(kind: str, ok: bool, transitions: dict[str, tuple[bool, str]],
               reason: str | None = None, message: str | None = None) -> dict:
    previous = transitions.get(kind)
    if previous is None or previous[0] != ok:
        transitions[kind] = (ok, now())
    cond = {"type": kind, "status": "True" if ok else "False", "lastProbeTime": None,
            "lastTransitionTime": transitions[kind][1]}
    if not ok and reason:
        cond["reason"] = reason
        if message:
            cond["message"] = message
    return cond


@dataclass
class PodState:
    """A pod as the kubelet tracks it; `to_status()` builds the `status` for `pods/status`."""

    restart_policy: str
    init_containers: list[ContainerRecord]
    containers: list[ContainerRecord]
    pod_ip: str | None = None
    host_ip: str = "127.0.0.1"
    start_time: str = field(default_factory=now)
    sandbox_ready: bool = False
    init_failed: bool = False
    terminal: str | None = None  # forced final phase (e.g. after a kill on deletion)
    message: str | None = None
    reason: str | None = None
    transitions: dict[str, tuple[bool, str]] = field(default_factory=dict)

    @property
    def initialized(self) -> bool:
        return all(c.state == "terminated" and c.terminated and c.terminated.exit_code == 0
                   for c in self.init_containers)

    def phase(self) -> str:
        if self.terminal:
            return self.terminal
        return pod_phase(self.restart_policy, self.init_failed, self.initialized, self.containers)

    def to_status(self) -> dict:
        phase = self.phase()
        done = phase in ("Succeeded", "Failed")
        pending_init = [c.name for c in self.init_containers
                        if not (c.state == "terminated" and c.terminated
                                and c.terminated.exit_code == 0)]
        unready = [c.name for c in self.containers if not c.ready]
        ready = not unready and not done
        not_ready_reason = "PodCompleted" if done else "ContainersNotReady"
        unready_msg = f"containers with unready status: [{' '.join(unready)}]"
        t = self.transitions
        conditions = [
            _condition("PodReadyToStartContainers", self.sandbox_ready and not done, t),
            _condition("Initialized", not pending_init, t,
                       "PodCompleted" if done else "ContainersNotInitialized",
                       f"containers with incomplete status: [{' '.join(pending_init)}]"),
            _condition("Ready", ready, t, not_ready_reason, unready_msg),
            _condition("ContainersReady", ready, t, not_ready_reason, unready_msg),
            _condition("PodScheduled", True, t),
        ]
        status: dict = {
            "phase": phase,
            "conditions": conditions,
            "hostIP": self.host_ip,
            "hostIPs": [{"ip": self.host_ip}],
            "startTime": self.start_time,
            "containerStatuses": [c.to_json() for c in self.containers],
        }
        if self.init_containers:
            status["initContainerStatuses"] = [c.to_json() for c in self.init_containers]
        if self.pod_ip:
            status["podIP"] = self.pod_ip
            status["podIPs"] = [{"ip": self.pod_ip}]
        if self.reason:
            status["reason"] = self.reason
        if self.message:
            status["message"] = self.message
        return status
