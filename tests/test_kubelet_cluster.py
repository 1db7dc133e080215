"""The devcluster kubelet against a real kube-apiserver: pods become local processes."""

from __future__ import annotations

import asyncio
import base64
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from studio_spawner.devcluster.kube import ApiError, Kube
from tests.kubelet_fixtures import DEMO_IMAGE

NS = "kubelet-tests"
PODS = f"/api/v1/namespaces/{NS}/pods"
PY = "/usr/bin/python3"  # the host's Python serves as the images' Python


@pytest_asyncio.fixture
async def api(devcluster, kubelet) -> AsyncIterator[Kube]:  # noqa: F811
    kube = await Kube.from_kubeconfig(str(devcluster.kubeconfig))
    try:
        await kube.post("/api/v1/namespaces", {"metadata": {"name": NS}})
    except ApiError as exc:
        assert exc.status == 409
    yield kube
    await kube.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def pod_manifest(name: str, containers: list[dict], **spec: object) -> dict:
    for c in [*containers, *spec.get("initContainers", [])]:  # type: ignore[misc]
        c.setdefault("image", DEMO_IMAGE)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": containers, "automountServiceAccountToken": False, **spec}}


async def wait_pod(api: Kube, name: str, check: Callable[[dict], bool], timeout: float = 30
                   ) -> dict:
    """Poll the pod until `check(pod)` holds; fail with its last status otherwise."""
    deadline = time.monotonic() + timeout
    pod: dict = {}
    while time.monotonic() < deadline:
        pod = await api.get(f"{PODS}/{name}")
        if check(pod):
            return pod
        await asyncio.sleep(0.1)
    pytest.fail(f"pod {name} never matched; status: {pod.get('status')}")


def phase(*phases: str) -> Callable[[dict], bool]:
    return lambda pod: pod.get("status", {}).get("phase") in phases


def ready(pod: dict) -> bool:
    conds = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
    return conds.get("Ready") == "True"


def container(pod: dict, name: str, init: bool = False) -> dict:
    key = "initContainerStatuses" if init else "containerStatuses"
    return next(c for c in pod["status"].get(key, []) if c["name"] == name)


async def delete_pod(api: Kube, name: str) -> None:
    try:
        await api.delete(f"{PODS}/{name}", {"gracePeriodSeconds": 1})
    except ApiError as exc:
        assert exc.status == 404


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


async def get_text(url: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await asyncio.to_thread(http_get, url)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


SERVE = [PY, "-m", "http.server", "8888", "--bind", "0.0.0.0", "--directory", "/srv"]


async def test_init_then_server_on_pod_ip_ready(api: Kube) -> None:
    """An init container prepares a file; the server (asked for 0.0.0.0, like KubeSpawner's
    JUPYTERHUB_SERVICE_URL) listens on its own pod IP, so two pods share port 8888."""
    names = [unique("web"), unique("web")]
    created = time.monotonic()
    for name in names:
        manifest = pod_manifest(
            name, [{"name": "server", "command": SERVE,
                    "volumeMounts": [{"name": "site", "mountPath": "/srv"}]}],
            initContainers=[{"name": "prepare", "command": [
                "/bin/sh", "-c", "devdemo-hello > /srv/index.txt; echo $(POD) >> /srv/index.txt"],
                "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath":
                                                                   "metadata.name"}}}],
                "volumeMounts": [{"name": "site", "mountPath": "/srv"}]}],
            volumes=[{"name": "site", "emptyDir": {}}])
        await api.post(PODS, manifest)
    try:
        pods = [await wait_pod(api, n, lambda p: phase("Running")(p) and ready(p))
                for n in names]
        latency = time.monotonic() - created
        print(f"\ntwo pods created -> both Ready in {latency:.2f}s")
        ips = [p["status"]["podIP"] for p in pods]
        assert len(set(ips)) == 2 and all(ip.startswith("127.0.0.") for ip in ips)
        for name, ip, pod in zip(names, ips, pods):
            assert await get_text(f"http://{ip}:8888/index.txt") == \
                f"hello from the demo image\n{name}\n"
            init = container(pod, "prepare", init=True)["state"]["terminated"]
            assert init["exitCode"] == 0 and init["reason"] == "Completed"
            assert container(pod, "server")["ready"] is True
        events = await api.get(f"/api/v1/namespaces/{NS}/events",
                               fieldSelector=f"involvedObject.name={names[0]}")
        reasons = {e["reason"] for e in events["items"]}
        assert {"Scheduled", "Pulled", "Created", "Started"} <= reasons
    finally:
        for name in names:
            await delete_pod(api, name)


async def test_secret_volume_modes_and_read_only_mount(api: Kube) -> None:
    """The Secret may appear after the pod; files get their modes; ro mounts give EROFS."""
    name = unique("sec")
    script = (
        "import os, errno\n"
        "out = []\n"
        "for f in ('a', 'sub/b'):\n"
        "    p = '/etc/files/' + f\n"
        "    out.append(f'{f}={open(p).read()}:{oct(os.stat(p).st_mode & 0o777)}')\n"
        "for p in ('/etc/files/new', '/opt/ro-data/new'):\n"
        "    try:\n"
        "        open(p, 'w')\n"
        "        out.append('writable')\n"
        "    except OSError as e:\n"
        "        out.append(errno.errorcode[e.errno])\n"
        "open('/dev/termination-log', 'w').write(' '.join(out))\n")
    await api.post(PODS, pod_manifest(
        name, [{"name": "check", "command": [PY, "-c", script], "volumeMounts": [
            {"name": "files", "mountPath": "/etc/files"},
            {"name": "data", "mountPath": "/opt/ro-data", "readOnly": True}]}],
        restartPolicy="Never",
        volumes=[{"name": "files", "secret": {"secretName": f"{name}-files", "defaultMode": 0o440,
                                              "items": [{"key": "a", "path": "a"},
                                                        {"key": "b", "path": "sub/b",
                                                         "mode": 0o600}]}},
                 {"name": "data", "emptyDir": {}}]))
    try:
        await asyncio.sleep(1)  # like the product: the Secret comes right after the pod
        pod = await api.get(f"{PODS}/{name}")
        assert pod["status"]["phase"] == "Pending"
        data = {k: base64.b64encode(v.encode()).decode() for k, v in {"a": "A", "b": "B"}.items()}
        await api.post(f"/api/v1/namespaces/{NS}/secrets",
                       {"metadata": {"name": f"{name}-files"}, "data": data})
        pod = await wait_pod(api, name, phase("Succeeded", "Failed"))
        term = container(pod, "check")["state"]["terminated"]
        assert term["exitCode"] == 0
        assert term["message"] == "a=A:0o440 sub/b=B:0o600 EROFS EROFS"
    finally:
        await delete_pod(api, name)


async def test_claim_directory_persists_across_pods(api: Kube) -> None:
    claim = unique("home")
    await api.post(f"/api/v1/namespaces/{NS}/persistentvolumeclaims", {
        "metadata": {"name": claim},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    mount = [{"name": "home", "mountPath": "/home/jovyan"}]
    volumes = [{"name": "home", "persistentVolumeClaim": {"claimName": claim}}]
    first, second = unique("writer"), unique("reader")
    try:
        await api.post(PODS, pod_manifest(first, [{"name": "c", "command": [
            "/bin/sh", "-c", "echo kept > /home/jovyan/note"], "volumeMounts": mount}],
            restartPolicy="Never", volumes=volumes))
        await wait_pod(api, first, phase("Succeeded"))
        await api.post(PODS, pod_manifest(second, [{"name": "c", "command": [
            "/bin/sh", "-c", "cat /home/jovyan/note > /dev/termination-log"],
            "volumeMounts": mount}], restartPolicy="Never", volumes=volumes))
        pod = await wait_pod(api, second, phase("Succeeded"))
        assert container(pod, "c")["state"]["terminated"]["message"] == "kept\n"
        pvc = await api.get(f"/api/v1/namespaces/{NS}/persistentvolumeclaims/{claim}")
        assert pvc["status"]["phase"] == "Bound"
    finally:
        await delete_pod(api, first)
        await delete_pod(api, second)
    # pvc-protection: the claim goes once no pod uses it
    await api.delete(f"/api/v1/namespaces/{NS}/persistentvolumeclaims/{claim}")
    deadline = time.monotonic() + 20
    while await api.get_or_none(f"/api/v1/namespaces/{NS}/persistentvolumeclaims/{claim}"):
        assert time.monotonic() < deadline, "claim kept its pvc-protection finalizer"
        await asyncio.sleep(0.2)


async def test_unknown_image_is_err_image_pull(api: Kube) -> None:
    name = unique("noimg")
    await api.post(PODS, pod_manifest(name, [{"name": "c", "image": "example.org/nope:1",
                                              "command": ["true"]}]))
    try:
        pod = await wait_pod(api, name, lambda p: any(
            c["state"].get("waiting", {}).get("reason") in ("ErrImagePull", "ImagePullBackOff")
            for c in p.get("status", {}).get("containerStatuses", [])))
        waiting = container(pod, "c")["state"]["waiting"]
        assert "example.org/nope:1" in waiting["message"]
        assert pod["status"]["phase"] == "Pending"
        pod = await wait_pod(api, name, lambda p: container(p, "c")["state"].get(
            "waiting", {}).get("reason") == "ImagePullBackOff")
        events = await api.get(f"/api/v1/namespaces/{NS}/events",
                               fieldSelector=f"involvedObject.name={name}")
        assert any(e["reason"] == "Failed" and "not found" in e["message"]
                   for e in events["items"])
    finally:
        await delete_pod(api, name)


FAIL_SCRIPT = "for i in $(seq 1 100); do echo line $i; done; echo boom >&2; exit 3"


async def test_failing_init_container_fails_pod_with_log_tail(api: Kube) -> None:
    name = unique("initfail")
    await api.post(PODS, pod_manifest(
        name, [{"name": "main", "command": ["true"]}], restartPolicy="Never",
        initContainers=[{"name": "setup", "command": ["/bin/sh", "-c", FAIL_SCRIPT],
                         "terminationMessagePolicy": "FallbackToLogsOnError"}]))
    try:
        pod = await wait_pod(api, name, phase("Failed"))
        term = container(pod, "setup", init=True)["state"]["terminated"]
        assert term["exitCode"] == 3 and term["reason"] == "Error"
        assert term["message"].endswith("line 100\nboom\n")
        assert "line 20\n" not in term["message"]  # only the last 80 lines
        assert container(pod, "main")["state"]["waiting"]["reason"] == "PodInitializing"
    finally:
        await delete_pod(api, name)


async def test_failing_init_container_restarts_under_on_failure(api: Kube) -> None:
    """KubeSpawner's default restartPolicy: the init container is retried with back-off."""
    name = unique("initretry")
    await api.post(PODS, pod_manifest(
        name, [{"name": "main", "command": ["true"]}], restartPolicy="OnFailure",
        initContainers=[{"name": "setup", "command": ["/bin/sh", "-c", FAIL_SCRIPT],
                         "terminationMessagePolicy": "FallbackToLogsOnError"}]))
    try:
        pod = await wait_pod(api, name, lambda p: p.get("status", {}).get(
            "initContainerStatuses", [{}])[0].get("restartCount", 0) >= 1)
        setup = container(pod, "setup", init=True)
        assert pod["status"]["phase"] == "Pending"
        assert setup["lastState"]["terminated"]["exitCode"] == 3
        assert "boom" in setup["lastState"]["terminated"]["message"]
    finally:
        await delete_pod(api, name)


async def test_crashing_container_crash_loops(api: Kube) -> None:
    name = unique("crash")
    await api.post(PODS, pod_manifest(name, [{
        "name": "c", "command": ["/bin/sh", "-c", "echo starting; echo fatal: no config; exit 1"],
        "terminationMessagePolicy": "FallbackToLogsOnError"}]))
    try:
        pod = await wait_pod(api, name, lambda p: any(
            c["restartCount"] >= 1 and c["state"].get("waiting", {}).get("reason")
            == "CrashLoopBackOff" for c in p.get("status", {}).get("containerStatuses", [])))
        status = container(pod, "c")
        assert status["lastState"]["terminated"]["exitCode"] == 1
        assert status["lastState"]["terminated"]["message"] == "starting\nfatal: no config\n"
        assert pod["status"]["phase"] == "Running"
    finally:
        await delete_pod(api, name)


async def test_delete_sigterms_collects_owned_secret_and_confirms(api: Kube, tmp_path) -> None:
    name = unique("term")
    script = "trap 'echo got-term > /out/signal; exit 0' TERM; while :; do sleep 0.1; done"
    pod = await api.post(PODS, pod_manifest(
        name, [{"name": "c", "command": ["/bin/sh", "-c", script],
                "volumeMounts": [{"name": "out", "mountPath": "/out"}]}],
        volumes=[{"name": "out", "hostPath": {"path": str(tmp_path)}}]))
    owner = {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": pod["metadata"]["uid"]}
    await api.post(f"/api/v1/namespaces/{NS}/secrets",
                   {"metadata": {"name": f"{name}-files", "ownerReferences": [owner]},
                    "stringData": {"k": "v"}})
    await wait_pod(api, name, phase("Running"))
    await asyncio.sleep(0.3)  # let the shell install its trap
    await api.delete(f"{PODS}/{name}", {"gracePeriodSeconds": 10})
    deadline = time.monotonic() + 15
    while await api.get_or_none(f"{PODS}/{name}") is not None:
        assert time.monotonic() < deadline, "the pod was never removed"
        await asyncio.sleep(0.1)
    assert (tmp_path / "signal").read_text() == "got-term\n"
    deadline = time.monotonic() + 10
    while await api.get_or_none(f"/api/v1/namespaces/{NS}/secrets/{name}-files"):
        assert time.monotonic() < deadline, "the pod's Secret was not garbage-collected"
        await asyncio.sleep(0.1)


async def test_kubespawner_pod_serves_on_its_pod_ip(api: Kube, tmp_path) -> None:
    """A pod from KubeSpawner's own `make_pod` (restartPolicy OnFailure, uid/fsGroup, a
    JUPYTERHUB_SERVICE_URL on 0.0.0.0) starts, and its server answers on the pod IP."""
    from kubernetes_asyncio.client import ApiClient
    from kubespawner.objects import make_pod

    name = unique("jupyter")
    server = ("import os, http.server, urllib.parse\n"
              "url = urllib.parse.urlparse(os.environ['JUPYTERHUB_SERVICE_URL'])\n"
              "http.server.HTTPServer((url.hostname, url.port),"
              " http.server.SimpleHTTPRequestHandler).serve_forever()\n")
    pod = make_pod(name, [PY, "-c", server], 8888, DEMO_IMAGE,
                   image_pull_policy="IfNotPresent", uid=1000, gid=100, fs_gid=100,
                   env={"JUPYTERHUB_SERVICE_URL": "http://0.0.0.0:8888/user/ann/"},
                   working_dir="/home/jovyan",
                   volumes=[{"name": "home", "emptyDir": {}}],
                   volume_mounts=[{"name": "home", "mountPath": "/home/jovyan"}])
    manifest = ApiClient().sanitize_for_serialization(pod)
    assert manifest["spec"]["restartPolicy"] == "OnFailure"
    await api.post(PODS, manifest)
    try:
        pod = await wait_pod(api, name, lambda p: phase("Running")(p) and ready(p))
        ip = pod["status"]["podIP"]
        assert "Directory listing" in await get_text(f"http://{ip}:8888/")
    finally:
        await delete_pod(api, name)


async def test_missing_command_is_a_start_error(api: Kube) -> None:
    name = unique("noexec")
    await api.post(PODS, pod_manifest(name, [{"name": "c", "command": ["no-such-tool"]}],
                                      restartPolicy="Never"))
    try:
        pod = await wait_pod(api, name, phase("Failed"))
        term = container(pod, "c")["state"]["terminated"]
        assert term["exitCode"] == 128 and term["reason"] == "StartError"
        assert 'exec: "no-such-tool": executable file not found in $PATH' in term["message"]
    finally:
        await delete_pod(api, name)
