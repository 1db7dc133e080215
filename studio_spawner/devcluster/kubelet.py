"""The devcluster "kubelet": a Node whose pods are local processes (and its scheduler).

    python -m studio_spawner.devcluster.kubelet --kubeconfig FILE --state-dir DIR --images FILE

It registers a Node and keeps its Lease fresh, binds unscheduled pods to it, runs them through
`runtime.PodWorker`, reports `pods/status`, emits Events, confirms deletions, removes the
`pvc-protection` finalizer of unused claims being deleted and garbage-collects Secrets,
ConfigMaps and Services owned by deleted pods. See docs/kubelet.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import platform
import signal
import threading
import time
from pathlib import Path
from typing import Any

from .images import ImageRegistry
from .kube import ApiError, Kube
from .podenv import IpPool
from .runtime import PodWorker, process_start_time
from .status import now
from .volumes import VolumeManager

log = logging.getLogger("studio_spawner.devcluster.kubelet")
VERSION = "v1.31.0-devcluster"
PVC_FINALIZER = "kubernetes.io/pvc-protection"
OWNED_KINDS = ("secrets", "configmaps", "services")


def micro_time() -> str:
    """A MicroTime timestamp (Leases)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _meminfo_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 1024**3


def _terminal(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


class Kubelet:
    """The node agent. `await start()` / `await stop()` in a loop, or `run_forever()`."""

    def __init__(
        self,
        kubeconfig: str | os.PathLike,
        state_dir: str | os.PathLike,
        images: str | os.PathLike | dict | None = None,
        node_name: str = "devnode",
        backoff_base: float = 10.0,
        backoff_max: float = 300.0,
        ip_range: tuple[str, str] = ("127.0.0.10", "127.0.0.254"),
        scheduler_names: list[str] | None = None,
        gc_interval: float = 10.0,
        max_pods: int = 110,
    ):
        self.kubeconfig = str(kubeconfig)
        self.state_dir = Path(state_dir).resolve()
        self.images = ImageRegistry(images)
        self.node_name = node_name
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.ips = IpPool(*ip_range)
        self.scheduler_names = scheduler_names
        self.gc_interval = gc_interval
        self.max_pods = max_pods
        self.kube: Kube = None  # type: ignore[assignment]
        self.volumes: VolumeManager = None  # type: ignore[assignment]
        self.workers: dict[str, PodWorker] = {}
        self.pods: dict[str, dict] = {}  # uid -> latest pod seen (all nodes)
        self.claims: dict[str, dict] = {}  # uid -> PVC
        self._binding: set[str] = set()
        self._confirming: set[str] = set()
        self._tasks: list[asyncio.Task] = []
        self._background: set[asyncio.Task] = set()
        self._synced = asyncio.Event()
        self._last_status: dict[str, str] = {}
        self._events: dict[tuple, tuple[str, int]] = {}
        self._report_locks: dict[str, asyncio.Lock] = {}

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect, register the node and start watching; returns after the first pod sync."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.kill_leftovers()
        self.kube = await Kube.from_kubeconfig(self.kubeconfig)
        self.volumes = VolumeManager(self.kube, self.state_dir)
        await self.register_node()
        for coro in (self._lease_loop(), self._node_status_loop(), self._pod_loop(),
                     self._claim_loop(), self._gc_loop()):
            self._tasks.append(asyncio.create_task(coro))
        await asyncio.wait_for(self._synced.wait(), timeout=60)
        log.info("kubelet: node %s ready (state %s)", self.node_name, self.state_dir)

    async def stop(self, grace: float = 2.0) -> None:
        """Stop watching and kill every pod's processes (the API objects are left alone)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for worker in list(self.workers.values()):
            worker.stopping.set()
            worker.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while any(w.procs for w in self.workers.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for worker in list(self.workers.values()):
            worker.signal(signal.SIGKILL)
            if worker.task is not None:
                await asyncio.wait({worker.task}, timeout=5)
        if self.kube is not None:
            await self.kube.close()

    async def run_forever(self) -> None:
        """Start, then run until cancelled or SIGTERM/SIGINT."""
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
        finally:
            await self.stop()

    def _spawn(self, coro: Any) -> None:
        """Run `coro` in the background, keeping a reference until it is done."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- processes left by a previous run --------------------------------------------------
    def _pid_file(self, worker: PodWorker, container: str) -> Path:
        return worker.dir / "containers" / container / "pid"

    def remember_process(self, worker: PodWorker, container: str, pid: int) -> None:
        self._pid_file(worker, container).write_text(f"{pid} {process_start_time(pid)}")

    def forget_process(self, worker: PodWorker, container: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._pid_file(worker, container).unlink()

    def kill_leftovers(self) -> None:
        """Kill container process groups recorded by an earlier kubelet on this state dir."""
        for pid_file in self.state_dir.glob("pods/*/containers/*/pid"):
            try:
                pid_text, start = pid_file.read_text().split()
                if process_start_time(int(pid_text)) == start:
                    os.killpg(int(pid_text), signal.SIGKILL)
            except (ValueError, OSError):
                pass
            pid_file.unlink(missing_ok=True)

    # -- node ------------------------------------------------------------------------------
    def node_status(self) -> dict:
        stamp = now()
        cpu = str(os.cpu_count() or 1)
        memory = f"{_meminfo_bytes() // 1024}Ki"
        capacity = {"cpu": cpu, "memory": memory, "pods": str(self.max_pods),
                    "ephemeral-storage": "100Gi"}

        def cond(kind: str, ok: bool, reason: str, message: str) -> dict:
            return {"type": kind, "status": "True" if ok else "False", "reason": reason,
                    "message": message, "lastHeartbeatTime": stamp,
                    "lastTransitionTime": self._started_at}

        return {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                cond("MemoryPressure", False, "KubeletHasSufficientMemory",
                     "kubelet has sufficient memory available"),
                cond("DiskPressure", False, "KubeletHasNoDiskPressure",
                     "kubelet has no disk pressure"),
                cond("PIDPressure", False, "KubeletHasSufficientPID",
                     "kubelet has sufficient PID available"),
                cond("Ready", True, "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": self.node_name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": _read("/etc/machine-id"), "systemUUID": self.node_name,
                "bootID": _read("/proc/sys/kernel/random/boot_id"),
                "kernelVersion": platform.release(), "osImage": "devcluster (host processes)",
                "containerRuntimeVersion": "devcluster://1.0", "kubeletVersion": VERSION,
                "kubeProxyVersion": VERSION, "operatingSystem": "linux",
                "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(
                    platform.machine(), platform.machine()),
            },
        }

    async def register_node(self) -> None:
        self._started_at = now()
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": self.node_name,
            "labels": {"kubernetes.io/hostname": self.node_name, "kubernetes.io/os": "linux",
                       "kubernetes.io/arch": "amd64", "node.kubernetes.io/instance-type":
                       "devcluster"}}}
        try:
            await self.kube.post("/api/v1/nodes", body)
        except ApiError as exc:
            if exc.status != 409:
                raise
        await self.kube.patch(f"/api/v1/nodes/{self.node_name}/status",
                              {"status": self.node_status()})

    async def _node_status_loop(self) -> None:
        while True:
            await asyncio.sleep(20)
            try:
                await self.kube.patch(f"/api/v1/nodes/{self.node_name}/status",
                                      {"status": self.node_status()})
            except Exception as exc:
                log.warning("node status update failed: %s", exc)

    async def _lease_loop(self) -> None:
        path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
        while True:
            try:
                spec = {"holderIdentity": self.node_name, "leaseDurationSeconds": 40,
                        "renewTime": micro_time()}
                try:
                    await self.kube.patch(f"{path}/{self.node_name}", {"spec": spec})
                except ApiError as exc:
                    if exc.status != 404:
                        raise
                    await self.kube.post(path, {"metadata": {"name": self.node_name},
                                                "spec": spec})
            except Exception as exc:
                log.warning("lease renewal failed: %s", exc)
            await asyncio.sleep(10)

    # -- pods ------------------------------------------------------------------------------
    async def _pod_loop(self) -> None:
        async for kind, obj in self.kube.list_and_watch("/api/v1/pods"):
            try:
                if kind == "SYNC":
                    listed = {p["metadata"]["uid"]: p for p in obj["items"]}
                    for uid in set(self.pods) - set(listed):
                        await self._gone(self.pods[uid])
                    for pod in listed.values():
                        await self._seen(pod)
                    self._synced.set()
                elif kind == "DELETED":
                    await self._gone(obj)
                else:
                    await self._seen(obj)
            except Exception:
                log.exception("handling pod event %s failed", kind)

    async def _seen(self, pod: dict) -> None:
        uid = pod["metadata"]["uid"]
        self.pods[uid] = pod
        node = pod["spec"].get("nodeName")
        if not node:
            if pod["metadata"].get("deletionTimestamp") or uid in self._binding:
                return
            scheduler = pod["spec"].get("schedulerName", "default-scheduler")
            if self.scheduler_names is None or scheduler in self.scheduler_names:
                self._binding.add(uid)
                self._spawn(self._bind(pod))
            return
        if node != self.node_name:
            return
        worker = self.workers.get(uid)
        deleting = pod["metadata"].get("deletionTimestamp")
        if worker is None:
            if deleting or _terminal(pod):
                if deleting:
                    self._spawn(self._confirm_deletion(pod, None))
                return
            worker = self.workers[uid] = PodWorker(self, pod)
            worker.start()
            return
        worker.pod = pod
        if deleting:
            grace = pod["metadata"].get("deletionGracePeriodSeconds", 30)
            self._spawn(self._confirm_deletion(pod, worker, grace))

    async def _bind(self, pod: dict) -> None:
        meta = pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding"
        body = {"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": meta["name"], "uid": meta["uid"]},
                "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name}}
        try:
            await self.kube.post(path, body)
            await self.event(pod, "Scheduled", f"Successfully assigned {meta['namespace']}/"
                             f"{meta['name']} to {self.node_name}", component="default-scheduler")
        except ApiError as exc:
            if exc.status not in (404, 409):
                log.warning("binding %s failed: %s", meta["name"], exc)
                await asyncio.sleep(1)
                self._binding.discard(meta["uid"])
                latest = self.pods.get(meta["uid"])
                if latest is not None:
                    await self._seen(latest)

    async def _confirm_deletion(self, pod: dict, worker: PodWorker | None,
                                grace: float = 0) -> None:
        uid = pod["metadata"]["uid"]
        if uid in self._confirming:
            return
        self._confirming.add(uid)
        try:
            if worker is not None:
                await worker.terminate(grace)
            meta = pod["metadata"]
            with contextlib.suppress(ApiError):
                await self.kube.delete(
                    f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                    {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}})
        finally:
            self._confirming.discard(uid)

    async def _gone(self, pod: dict) -> None:
        """The pod left the API: kill what is left, free its IP and files, collect garbage."""
        uid = pod["metadata"]["uid"]
        self.pods.pop(uid, None)
        self._binding.discard(uid)
        worker = self.workers.pop(uid, None)
        if worker is not None:
            await worker.terminate(0)
            self.ips.release(uid)
            self._last_status.pop(uid, None)
            self._report_locks.pop(uid, None)
            self._spawn(asyncio.to_thread(_rmtree, worker.dir))
        self._events = {k: v for k, v in self._events.items() if k[0] != uid}
        await self._collect_owned(pod["metadata"]["namespace"], {uid})
        await self._release_claims()

    async def report(self, worker: PodWorker) -> None:
        """PATCH the worker's status to `pods/status` when it changed."""
        lock = self._report_locks.setdefault(worker.uid, asyncio.Lock())
        async with lock:
            status = worker.state.to_status()
            text = json.dumps(status, sort_keys=True)
            if self._last_status.get(worker.uid) == text:
                return
            path = f"/api/v1/namespaces/{worker.namespace}/pods/{worker.name}/status"
            try:
                await self.kube.patch(path, {"status": status})
                self._last_status[worker.uid] = text
            except ApiError as exc:
                if exc.status != 404:
                    log.warning("status of %s: %s", worker.name, exc)
            except Exception as exc:
                log.warning("status of %s: %s", worker.name, exc)

    async def event(self, pod: dict, reason: str, message: str, kind: str = "Normal",
                    container: str | None = None, component: str = "kubelet") -> None:
        """Record a core/v1 Event about `pod` (repeats bump the count, like the recorder)."""
        meta = pod["metadata"]
        key = (meta["uid"], reason, message, container)
        stamp = now()
        base = f"/api/v1/namespaces/{meta['namespace']}/events"
        try:
            if key in self._events:
                name, count = self._events[key]
                self._events[key] = (name, count + 1)
                await self.kube.patch(f"{base}/{name}", {"count": count + 1,
                                                          "lastTimestamp": stamp})
                return
            name = f"{meta['name']}.{time.time_ns():x}"
            involved = {"apiVersion": "v1", "kind": "Pod", "name": meta["name"],
                        "namespace": meta["namespace"], "uid": meta["uid"],
                        "resourceVersion": meta.get("resourceVersion")}
            if container:
                section = "initContainers" if any(
                    c["name"] == container for c in pod["spec"].get("initContainers") or []
                ) else "containers"
                involved["fieldPath"] = f"spec.{section}{{{container}}}"
            body = {"apiVersion": "v1", "kind": "Event",
                    "metadata": {"name": name, "namespace": meta["namespace"]},
                    "involvedObject": involved, "reason": reason, "message": message,
                    "type": kind, "count": 1, "firstTimestamp": stamp, "lastTimestamp": stamp,
                    "source": {"component": component, "host": self.node_name},
                    "reportingComponent": component, "reportingInstance": self.node_name}
            self._events[key] = (name, 1)
            await self.kube.post(base, body)
        except Exception as exc:
            log.warning("event %s for %s failed: %s", reason, meta["name"], exc)

    # -- claims and garbage ----------------------------------------------------------------
    async def _claim_loop(self) -> None:
        async for kind, obj in self.kube.list_and_watch("/api/v1/persistentvolumeclaims"):
            if kind == "SYNC":
                self.claims = {c["metadata"]["uid"]: c for c in obj["items"]}
            elif kind == "DELETED":
                self.claims.pop(obj["metadata"]["uid"], None)
            else:
                self.claims[obj["metadata"]["uid"]] = obj
            try:
                await self._release_claims()
            except Exception:
                log.exception("pvc-protection failed")

    def _claim_in_use(self, namespace: str, name: str) -> bool:
        for pod in self.pods.values():
            if pod["metadata"]["namespace"] != namespace or _terminal(pod):
                continue
            for vol in pod["spec"].get("volumes") or []:
                if (vol.get("persistentVolumeClaim") or {}).get("claimName") == name:
                    return True
        return False

    async def _release_claims(self) -> None:
        """Remove `pvc-protection` from claims being deleted that no live pod uses."""
        for claim in list(self.claims.values()):
            meta = claim["metadata"]
            finalizers = meta.get("finalizers") or []
            if not meta.get("deletionTimestamp") or PVC_FINALIZER not in finalizers:
                continue
            if self._claim_in_use(meta["namespace"], meta["name"]):
                continue
            body = {"metadata": {"resourceVersion": meta["resourceVersion"],
                                 "finalizers": [f for f in finalizers if f != PVC_FINALIZER]}}
            with contextlib.suppress(ApiError):
                await self.kube.patch(f"/api/v1/namespaces/{meta['namespace']}/"
                                      f"persistentvolumeclaims/{meta['name']}", body)

    async def _collect_owned(self, namespace: str | None, uids: set[str] | None) -> None:
        """Delete Secrets/ConfigMaps/Services whose Pod owners are all gone.

        With `uids`, only objects owned by those (just deleted) pods are considered; otherwise
        every object owned by a pod unknown to the watch cache and to a direct GET."""
        scope = f"/api/v1/namespaces/{namespace}" if namespace else "/api/v1"
        live = set(self.pods)
        for plural in OWNED_KINDS:
            try:
                items = (await self.kube.get(f"{scope}/{plural}"))["items"]
            except Exception as exc:
                log.debug("gc list %s: %s", plural, exc)
                continue
            for obj in items:
                owners = obj["metadata"].get("ownerReferences") or []
                pod_owners = [o for o in owners if o.get("kind") == "Pod"]
                if not pod_owners or len(pod_owners) != len(owners):
                    continue
                if uids is not None:
                    if not all(o["uid"] in uids for o in pod_owners):
                        continue
                elif any(o["uid"] in live for o in pod_owners) or \
                        not await self._owners_gone(obj, pod_owners):
                    continue
                meta = obj["metadata"]
                with contextlib.suppress(ApiError):
                    await self.kube.delete(
                        f"/api/v1/namespaces/{meta['namespace']}/{plural}/{meta['name']}",
                        {"propagationPolicy": "Background",
                         "preconditions": {"uid": meta["uid"]}})

    async def _owners_gone(self, obj: dict, owners: list[dict]) -> bool:
        created = obj["metadata"].get("creationTimestamp", "")
        try:
            age = time.time() - dt.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=dt.timezone.utc).timestamp()
        except ValueError:
            age = 0
        if age < 10:  # its pod may be so new that the watch has not shown it yet
            return False
        namespace = obj["metadata"]["namespace"]
        for owner in owners:
            pod = await self.kube.get_or_none(f"/api/v1/namespaces/{namespace}/pods/"
                                              f"{owner['name']}")
            if pod is not None and pod["metadata"]["uid"] == owner["uid"]:
                return False
        return True

    async def _gc_loop(self) -> None:
        while True:
            await asyncio.sleep(self.gc_interval)
            try:
                await self._collect_owned(None, None)
                await self._release_claims()
            except Exception:
                log.exception("garbage collection failed")


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


class KubeletThread:
    """Run a `Kubelet` on its own event loop in a background thread (sync callers, tests)."""

    def __init__(self, **kwargs: Any):
        self.kubelet = Kubelet(**kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="devcluster-kubelet")

    def start(self) -> KubeletThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.kubelet.start(), self._loop).result(90)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.kubelet.stop(), self._loop).result(60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> KubeletThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m studio_spawner.devcluster.kubelet",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", required=True, help="kubeconfig of a node/admin user")
    parser.add_argument("--state-dir", required=True, help="volumes, logs and pod files")
    parser.add_argument("--images", default=os.environ.get("STUDIO_DEVCLUSTER_IMAGES"),
                        help="images file (YAML/JSON); default $STUDIO_DEVCLUSTER_IMAGES")
    parser.add_argument("--node-name", default="devnode")
    parser.add_argument("--backoff", type=float, default=10.0,
                        help="first crash/image-pull back-off in seconds (kubelet: 10)")
    parser.add_argument("--backoff-max", type=float, default=300.0)
    parser.add_argument("--scheduler-name", action="append", dest="scheduler_names",
                        help="bind only pods with this schedulerName (repeatable; default all)")
    parser.add_argument("--pod-ips", default="127.0.0.10-127.0.0.254",
                        help="FIRST-LAST loopback addresses for pods (separate ranges let "
                        "two devclusters run side by side)")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kubelet = Kubelet(args.kubeconfig, args.state_dir, args.images, node_name=args.node_name,
                      backoff_base=args.backoff, backoff_max=args.backoff_max,
                      scheduler_names=args.scheduler_names,
                      ip_range=tuple(args.pod_ips.split("-", 1)))
    asyncio.run(kubelet.run_forever())


if __name__ == "__main__":
    main()
