"""One pod's life on the devcluster node: volumes, init containers, containers, restarts, kill.

A `PodWorker` runs each container through `container_exec.py` (a private mount namespace with
the image overlaid and the volumes bind-mounted), writes the output to a log file, keeps a
`PodState` and reports it through its kubelet's `report()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pwd
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from .fsplan import Bind, plan_filesystem
from .images import Image
from .podenv import (
    ConfigError,
    container_argv,
    container_env,
    object_data,
    referenced_objects,
)
from .status import (
    ContainerRecord,
    PodState,
    Terminated,
    exit_reason,
    now,
    should_restart,
    termination_message,
)
from .volumes import Volume, VolumeNotReady, container_binds

if TYPE_CHECKING:
    from .kubelet import Kubelet

log = logging.getLogger(__name__)
HELPER = str(Path(__file__).with_name("container_exec.py"))
#: a container that ran this long has its crash back-off reset (as kubelet does)
BACKOFF_RESET_SECONDS = 600


class Stopping(Exception):
    """The pod is being killed; unwind whatever was in progress."""


def process_start_time(pid: int) -> str | None:
    """The start time of a process (field 22 of /proc/PID/stat), to detect PID reuse."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


class PodWorker:
    """Runs one pod. Create, `start()`, then `terminate(grace)` when it is deleted."""

    def __init__(self, kubelet: Kubelet, pod: dict):
        self.kubelet = kubelet
        self.pod = pod
        meta, spec = pod["metadata"], pod["spec"]
        self.uid, self.name, self.namespace = meta["uid"], meta["name"], meta["namespace"]
        self.dir = kubelet.state_dir / "pods" / f"{self.namespace}_{self.name}_{self.uid}"
        self.log_dir = kubelet.state_dir / "logs" / f"{self.namespace}_{self.name}_{self.uid}"
        self.init_specs = list(spec.get("initContainers") or [])
        self.specs = list(spec.get("containers") or [])
        first = "PodInitializing" if self.init_specs else "ContainerCreating"
        self.state = PodState(
            restart_policy=spec.get("restartPolicy", "Always"),
            init_containers=[ContainerRecord(c["name"], c["image"], reason="PodInitializing")
                             for c in self.init_specs],
            containers=[ContainerRecord(c["name"], c["image"], reason=first)
                        for c in self.specs],
        )
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.volumes: dict[str, Volume] = {}
        self.stopping = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.done = asyncio.Event()
        self._terminating: asyncio.Task | None = None

    # -- helpers ---------------------------------------------------------------------------
    @property
    def ref(self) -> str:
        return f"{self.name}_{self.namespace}({self.uid})"

    async def report(self) -> None:
        await self.kubelet.report(self)

    async def event(self, reason: str, message: str, kind: str = "Normal",
                    container: str | None = None) -> None:
        await self.kubelet.event(self.pod, reason, message, kind, container)

    async def sleep(self, seconds: float) -> None:
        """Sleep, or raise `Stopping` as soon as the pod is being killed."""
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            return
        raise Stopping()

    def check(self) -> None:
        if self.stopping.is_set():
            raise Stopping()

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"pod {self.namespace}/{self.name}")

    async def _run(self) -> None:
        try:
            previous = (self.pod.get("status") or {}).get("podIP")
            self.state.pod_ip = self.kubelet.ips.allocate(self.uid, previous)
            self.state.sandbox_ready = True
            self.dir.mkdir(parents=True, exist_ok=True)
            self.log_dir.mkdir(parents=True, exist_ok=True)
            await self.report()
            await self._mount_volumes()
            for spec, rec in zip(self.init_specs, self.state.init_containers):
                if not await self._run_init(spec, rec):
                    return
            for rec in self.state.containers:
                rec.wait("ContainerCreating")
            await self.report()
            await asyncio.gather(*(self._supervise(spec, rec)
                                   for spec, rec in zip(self.specs, self.state.containers)))
        except Stopping:
            pass
        except Exception as exc:  # a bug or a broken host: show it on the pod
            log.exception("pod %s/%s failed", self.namespace, self.name)
            self.state.reason, self.state.message = "KubeletError", str(exc)
        finally:
            self.done.set()
            if not self.stopping.is_set():
                await self.report()

    async def _mount_volumes(self) -> None:
        warned = None
        started = time.monotonic()
        while True:
            self.check()
            try:
                self.volumes = await self.kubelet.volumes.prepare(self.pod, self.dir)
                return
            except VolumeNotReady as exc:
                # kubelet reports FailedMount only after a while; a just-created Secret is normal
                if str(exc) != warned and time.monotonic() - started > 5:
                    warned = str(exc)
                    await self.event("FailedMount", str(exc), "Warning")
            await self.sleep(0.5)

    async def _run_init(self, spec: dict, rec: ContainerRecord) -> bool:
        """Run an init container to success (True), or to a final failure (False)."""
        backoff = self.kubelet.backoff_base
        while True:
            result, ran = await self._run_once(spec, rec)
            rec.terminate(result)
            self.check()
            if result.exit_code == 0:
                await self.report()
                return True
            if self.state.restart_policy == "Never":
                self.state.init_failed = True
                await self.report()
                return False
            backoff = await self._crash_backoff(rec, backoff, ran)

    async def _supervise(self, spec: dict, rec: ContainerRecord) -> None:
        """Run a container, restarting it per the pod's restart policy with back-off."""
        backoff = self.kubelet.backoff_base
        while True:
            result, ran = await self._run_once(spec, rec)
            rec.terminate(result)
            self.check()
            if not should_restart(self.state.restart_policy, result.exit_code):
                await self.report()
                return
            backoff = await self._crash_backoff(rec, backoff, ran)

    async def _crash_backoff(self, rec: ContainerRecord, backoff: float, ran: float) -> float:
        if ran > BACKOFF_RESET_SECONDS:
            backoff = self.kubelet.backoff_base
        await self.report()
        rec.restart_waiting(
            "CrashLoopBackOff",
            f"back-off {backoff:g}s restarting failed container={rec.name} pod={self.ref}")
        await self.event("BackOff", f"Back-off restarting failed container {rec.name} in pod "
                         f"{self.ref}", "Warning", rec.name)
        await self.report()
        await self.sleep(backoff)
        return min(backoff * 2, self.kubelet.backoff_max)

    async def _pull(self, spec: dict, rec: ContainerRecord) -> Image:
        """Resolve the image, with ErrImagePull / ImagePullBackOff while it is unknown."""
        ref = spec["image"]
        backoff = self.kubelet.backoff_base
        while True:
            self.check()
            image = self.kubelet.images.lookup(ref)
            denied = image is not None and not await self._authorized(image)
            if image is not None and not denied:
                rec.image_id = image.image_id
                if spec.get("imagePullPolicy") == "Always":
                    await self.event("Pulling", f'Pulling image "{ref}"', container=rec.name)
                    await self.event("Pulled", f'Successfully pulled image "{ref}" in 0s',
                                     container=rec.name)
                else:
                    await self.event("Pulled", f'Container image "{ref}" already present on '
                                     "machine", container=rec.name)
                return image
            await self.event("Pulling", f'Pulling image "{ref}"', container=rec.name)
            message = (f"rpc error: code = NotFound desc = failed to pull and unpack image "
                       f'"{ref}": failed to resolve reference "{ref}": {ref}: not found')
            if denied:
                message = (f'rpc error: code = Unknown desc = failed to pull and unpack image '
                           f'"{ref}": failed to authorize: 401 Unauthorized')
            await self.event("Failed", f'Failed to pull image "{ref}": {message}', "Warning",
                             rec.name)
            await self.event("Failed", "Error: ErrImagePull", "Warning", rec.name)
            rec.wait("ErrImagePull", message)
            await self.report()
            await self.sleep(min(1.0, backoff))
            rec.wait("ImagePullBackOff", f'Back-off pulling image "{ref}"')
            await self.event("BackOff", f'Back-off pulling image "{ref}"', "Normal", rec.name)
            await self.event("Failed", "Error: ImagePullBackOff", "Warning", rec.name)
            await self.report()
            await self.sleep(backoff)
            backoff = min(backoff * 2, self.kubelet.backoff_max)

    async def _authorized(self, image: Image) -> bool:
        """A private image needs a dockerconfigjson pull secret with the registry's user."""
        if not image.pull_username:
            return True
        namespace = self.pod["metadata"]["namespace"]
        for ref in self.pod["spec"].get("imagePullSecrets") or []:
            secret = await self.kubelet.kube.get_or_none(
                f"/api/v1/namespaces/{namespace}/secrets/{ref['name']}")
            if secret is None or secret.get("type") != "kubernetes.io/dockerconfigjson":
                continue
            config = json.loads(object_data(secret, "Secret").get(".dockerconfigjson", b"{}"))
            auth = config.get("auths", {}).get(image.registry) or {}
            if auth.get("username") == image.pull_username and auth.get("password"):
                return True
        return False

    async def _config(self, spec: dict, rec: ContainerRecord, image: Image
                      ) -> tuple[dict, list[str], list[Bind]]:
        """Environment, argv and binds; waits (CreateContainerConfigError) for missing refs."""
        warned = None
        while True:
            self.check()
            objects = {}
            for kind, name in referenced_objects(spec):
                plural = "secrets" if kind == "Secret" else "configmaps"
                objects[(kind, name)] = await self.kubelet.kube.get_or_none(
                    f"/api/v1/namespaces/{self.namespace}/{plural}/{name}")
            try:
                env = container_env(self.pod, spec, image.env, objects, self.state.pod_ip,
                                    base=self._base_env(spec, image))
                argv = container_argv(spec, image.command, image.args, env, self.state.pod_ip)
                binds = container_binds(spec, self.volumes, env)
                return env, argv, binds
            except (ConfigError, ValueError) as exc:
                if str(exc) != warned:
                    warned = str(exc)
                    rec.wait("CreateContainerConfigError", str(exc))
                    await self.event("Failed", f"Error: {exc}", "Warning", rec.name)
                    await self.report()
            await self.sleep(1.0)

    def _ids(self, spec: dict, image: Image) -> tuple[int | None, int | None, list[int]]:
        pod_sc = self.pod["spec"].get("securityContext") or {}
        sc = spec.get("securityContext") or {}
        uid = sc.get("runAsUser", pod_sc.get("runAsUser", image.user))
        gid = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
        if gid is None and uid is not None:
            try:
                gid = pwd.getpwuid(uid).pw_gid
            except KeyError:
                gid = 0
        groups = list(pod_sc.get("supplementalGroups") or [])
        if pod_sc.get("fsGroup") is not None:
            groups.append(pod_sc["fsGroup"])
        return uid, gid, groups

    def _base_env(self, spec: dict, image: Image) -> dict[str, str]:
        uid, _, _ = self._ids(spec, image)
        try:
            home = pwd.getpwuid(uid if uid is not None else 0).pw_dir
        except KeyError:
            home = "/"
        return {"HOSTNAME": self.hostname, "HOME": home}

    @property
    def hostname(self) -> str:
        return (self.pod["spec"].get("hostname") or self.name)[:63]

    def _hosts_file(self) -> Path:
        path = self.dir / "etc-hosts"
        if not path.exists():
            try:
                base = Path("/etc/hosts").read_text()
            except OSError:
                base = "127.0.0.1\tlocalhost\n"
            path.write_text(f"# Kubernetes-managed hosts file (devcluster).\n{base.rstrip()}\n"
                            f"{self.state.pod_ip}\t{self.hostname}\n")
        return path

    async def _run_once(self, spec: dict, rec: ContainerRecord) -> tuple[Terminated, float]:
        """Start the container once and wait for it; returns its result and run time."""
        image = await self._pull(spec, rec)
        env, argv, binds = await self._config(spec, rec, image)
        self.check()
        uid, gid, groups = self._ids(spec, image)
        run = rec.restart_count
        cdir = self.dir / "containers" / rec.name
        cdir.mkdir(parents=True, exist_ok=True)
        term = cdir / f"termination-log.{run}"
        term.write_bytes(b"")
        if uid is not None:
            os.chown(term, uid, gid if gid is not None else -1)
        binds = [*binds, Bind(str(term), spec.get("terminationMessagePath",
                                                  "/dev/termination-log")),
                 Bind(str(self._hosts_file()), "/etc/hosts")]
        for bind in binds:  # kubelet creates a missing subPath directory in its volume
            if not os.path.exists(bind.source):
                os.makedirs(bind.source, exist_ok=True)
        plan = plan_filesystem(image.path, binds, cdir / f"rootfs.{run}")
        workdir = spec.get("workingDir") or image.working_dir or "/"
        error_file = cdir / f"start-error.{run}"
        launch = {**plan.to_json(), "hostname": self.hostname, "uid": uid, "gid": gid,
                  "groups": groups, "cwd": workdir, "argv": argv, "env": env,
                  "error_file": str(error_file), "parent_pid": os.getpid()}
        spec_file = cdir / f"launch.{run}.json"
        spec_file.write_text(json.dumps(launch, indent=1))
        log_path = self.log_dir / rec.name / f"{run}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        container_id = f"devcluster://{uuid.uuid4().hex}"
        with open(log_path, "ab") as out:
            sync_read, sync_write = os.pipe()
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-I", HELPER, str(spec_file), str(sync_write),
                    stdin=asyncio.subprocess.DEVNULL, stdout=out,
                    stderr=asyncio.subprocess.STDOUT, start_new_session=True,
                    pass_fds=(sync_write,))
            finally:
                os.close(sync_write)
        self.procs[rec.name] = proc
        if self.stopping.is_set():  # killed while starting
            self.signal(signal.SIGKILL)
        self.kubelet.remember_process(self, rec.name, proc.pid)
        try:  # the helper's copy closes at exec (or when it fails): then the container runs
            await asyncio.to_thread(os.read, sync_read, 1)
        finally:
            os.close(sync_read)
        start_failed = error_file.exists() and error_file.stat().st_size > 0
        if not start_failed:
            rec.run(container_id)
            rec.ready = True  # no readiness probes: a running container is ready
            await self.event("Created", f"Created container {rec.name}", container=rec.name)
            await self.event("Started", f"Started container {rec.name}", container=rec.name)
            await self.report()
        started = time.monotonic()
        code = await proc.wait()
        self.procs.pop(rec.name, None)
        self.kubelet.forget_process(self, rec.name)
        ran = time.monotonic() - started
        signal_no = -code if code < 0 else None
        exit_code = 128 + signal_no if signal_no else code
        start_error = error_file.read_text() if error_file.exists() else ""
        if exit_code == 128 and start_error:
            result = Terminated(128, "StartError", rec.started_at, now(), start_error,
                                container_id=container_id)
            await self.event("Failed", f"Error: {start_error}", "Warning", rec.name)
        else:
            policy = spec.get("terminationMessagePolicy", "File")
            message = termination_message(term.read_bytes(), _read_tail(log_path), policy,
                                          exit_code != 0)
            result = Terminated(exit_code, exit_reason(exit_code), rec.started_at, now(),
                                message, container_id=container_id)
        return result, ran

    # -- termination -----------------------------------------------------------------------
    def terminate(self, grace: float) -> asyncio.Task:
        """Kill the pod (SIGTERM, then SIGKILL after `grace` seconds); idempotent."""
        if self._terminating is None:
            self._terminating = asyncio.create_task(self._terminate(grace))
        return self._terminating

    async def _terminate(self, grace: float) -> None:
        self.stopping.set()
        for name in list(self.procs):
            await self.event("Killing", f"Stopping container {name}", container=name)
        self.signal(signal.SIGTERM)
        if self.procs:
            deadline = time.monotonic() + grace
            while self.procs and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            self.signal(signal.SIGKILL)
        if self.task is not None:
            await asyncio.wait({self.task}, timeout=10)
        for rec in self.state.init_containers + self.state.containers:
            if rec.state == "running":
                rec.terminate(Terminated(137, "Error", rec.started_at, now()))
        codes = [r.terminated.exit_code for r in self.state.containers
                 if r.state == "terminated" and r.terminated]
        all_ok = len(codes) == len(self.state.containers) and not any(codes)
        if self.state.phase() not in ("Succeeded", "Failed"):
            self.state.terminal = "Succeeded" if all_ok else "Failed"
        await self.report()

    def signal(self, signum: int) -> None:
        """Send `signum` to the process group of every running container."""
        for proc in list(self.procs.values()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signum)


def _read_tail(path: Path, limit: int = 65536) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            return f.read()
    except OSError:
        return b""
