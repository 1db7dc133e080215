"""The devcluster itself: a real control plane and a real node (kubelet, containerd, runc).

These tests guard what every end-to-end test relies on: pods are scheduled, run the image's
ENTRYPOINT as the pod's user, get fsGroup-owned volumes from the provisioner and Secrets with
their modes, pull from the registries (with credentials where needed), are reachable from the
host on the bridge, and everything is removed on stop.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from devcluster import DevCluster
from devcluster.registry import PRIVATE_HOST
from tests.devcluster_fixtures import api_client_with_token, kube_api_client

from .studio_fixtures import NOPYTHON_IMAGE, STUDIO_IMAGE


async def _status(call: Awaitable[object]) -> int:
    """The HTTP status of an API call (200 when it succeeds)."""
    try:
        await call
    except ApiException as exc:
        return exc.status
    return 200


async def _eventually(check: Callable[[], Awaitable[object]], timeout: float = 60.0) -> object:
    """Retry ``check`` until it returns something true (or stops raising 403s)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            if result := await check():
                return result
        except ApiException as exc:
            if exc.status != 403:
                raise
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true after {timeout} s")
        await asyncio.sleep(0.3)


@pytest_asyncio.fixture
async def namespace(kube_api: client.ApiClient) -> AsyncIterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube_api)
    await core.create_namespace({"metadata": {"name": name}})
    await _eventually(lambda: _has_default_sa(core, name))
    yield name
    await core.delete_namespace(name)


async def _has_default_sa(core: client.CoreV1Api, namespace: str) -> bool:
    return await _status(core.read_namespaced_service_account("default", namespace)) == 200


def test_node_is_ready_with_the_control_plane_version(devcluster: DevCluster) -> None:
    assert devcluster.request("GET", "/readyz") == "ok"
    version = devcluster.request("GET", "/version")["gitVersion"]
    node = devcluster.request("GET", "/api/v1/nodes/devnode")
    assert node["status"]["nodeInfo"]["kubeletVersion"] == version
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conditions["Ready"] == "True"
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == devcluster.host_ip


async def test_a_pod_runs_as_the_z2jh_user_with_its_volumes(
        devcluster: DevCluster, kube_api: client.ApiClient, namespace: str) -> None:
    """Scheduled (no nodeName), uid 1000, fsGroup 100 on a provisioned claim, Secret modes,
    the image's ENTRYPOINT (tini, start hooks), logs and exec through the API server."""
    core = client.CoreV1Api(kube_api)
    await core.create_namespaced_secret(namespace, {"metadata": {"name": "files"},
                                                    "stringData": {"token": "s3cr3t"}})
    await core.create_namespaced_persistent_volume_claim(namespace, {
        "metadata": {"name": "home"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    script = ("id -u; id -G; ls -ldn /home/jovyan | cut -d' ' -f3,4; touch /home/jovyan/x && "
              "echo writable; stat -c %a /etc/files/..data/token; cat /etc/files/token; echo; "
              "echo hook=$STUDIO_IMAGE_HOOK_RAN; ps -o comm= -p 1; sleep 300")
    await core.create_namespaced_pod(namespace, {
        "metadata": {"name": "p"},
        "spec": {"securityContext": {"runAsUser": 1000, "fsGroup": 100},
                 "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "main", "image": STUDIO_IMAGE,
                                 "args": ["bash", "-c", script],
                                 "volumeMounts": [
                                     {"name": "home", "mountPath": "/home/jovyan"},
                                     {"name": "files", "mountPath": "/etc/files"}]}],
                 "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": "home"}},
                             {"name": "files", "secret": {"secretName": "files",
                                                          "defaultMode": 0o440}}]}})

    async def running() -> object:
        pod = await core.read_namespaced_pod("p", namespace)
        return pod if pod.status.phase == "Running" else None

    pod = await _eventually(running, 120)
    assert pod.spec.node_name == "devnode"
    claim = await core.read_namespaced_persistent_volume_claim("home", namespace)
    assert claim.status.phase == "Bound"

    async def logs() -> str:
        text = await core.read_namespaced_pod_log("p", namespace)
        return text if "tini" in text else ""

    text = str(await _eventually(logs, 30))
    assert "start.sh: sourcing /usr/local/bin/start-notebook.d/10-hello.sh" in text
    lines = text.split("10-hello.sh", 1)[1].split()
    assert lines[:2] == ["1000", "100"], lines
    assert lines[2:4] == ["0", "100"], "the home volume belongs to the fsGroup"
    assert "writable" in lines and "440" in lines and "s3cr3t" in lines
    assert "hook=1" in lines, "start.sh ran the image's start hooks"
    assert lines[-1] == "tini", "the image's ENTRYPOINT is PID 1"

    kubectl = devcluster.bin_dir / "kubectl"
    out = subprocess.run([str(kubectl), "--kubeconfig", str(devcluster.kubeconfig), "exec",
                          "-n", namespace, "p", "--", "id", "-un"],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "jovyan", out.stderr

    await core.delete_namespaced_pod("p", namespace)
    await core.delete_namespaced_persistent_volume_claim("home", namespace)

    async def released() -> bool:
        return await _status(core.read_namespaced_persistent_volume_claim("home",
                                                                          namespace)) == 404

    await _eventually(released, 60)  # pvc-protection held it until the pod was gone


async def test_owned_objects_are_garbage_collected(kube_api: client.ApiClient,
                                                   namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    owner = await core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    await core.create_namespaced_secret(namespace, {"metadata": {
        "name": "owned", "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap",
                                              "name": "owner", "uid": owner.metadata.uid}]}})
    await core.delete_namespaced_config_map("owner", namespace)

    async def collected() -> bool:
        return await _status(core.read_namespaced_secret("owned", namespace)) == 404

    await _eventually(collected, 60)


async def _waiting(core: client.CoreV1Api, namespace: str, name: str) -> dict:
    async def reason() -> dict:
        pod = await core.read_namespaced_pod(name, namespace)
        for status in pod.status.container_statuses or []:
            waiting = status.state.waiting
            if waiting and waiting.reason in ("ErrImagePull", "ImagePullBackOff"):
                return {"reason": waiting.reason, "message": waiting.message}
        return {}

    return await _eventually(reason, 60)


async def test_unknown_images_and_missing_credentials_fail_like_on_any_cluster(
        devcluster: DevCluster, kube_api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    private = f"{PRIVATE_HOST}/team/notebook:1"
    devcluster.push_image("nopython", private)
    for name, image in (("unknown", STUDIO_IMAGE.replace("notebook", "no-such-image")),
                        ("nocreds", private)):
        await core.create_namespaced_pod(namespace, {"metadata": {"name": name}, "spec": {
            "containers": [{"name": "c", "image": image}]}})
    unknown = await _waiting(core, namespace, "unknown")
    assert "not found" in unknown["message"], unknown
    nocreds = await _waiting(core, namespace, "nocreds")
    assert "401 Unauthorized" in nocreds["message"], nocreds

    await core.create_namespaced_secret(namespace, {
        "metadata": {"name": "pull"}, "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": json.dumps({"auths": {PRIVATE_HOST: {
            "username": "studio", "password": "wrong"}}})}})
    await core.create_namespaced_pod(namespace, {"metadata": {"name": "wrong"}, "spec": {
        "imagePullSecrets": [{"name": "pull"}], "containers": [{"name": "c", "image": private}]}})
    wrong = await _waiting(core, namespace, "wrong")
    assert "401 Unauthorized" in wrong["message"], wrong

    await core.replace_namespaced_secret("pull", namespace, {
        "metadata": {"name": "pull"}, "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": json.dumps({"auths": {PRIVATE_HOST: {
            "username": "studio", "password": "studio-pull-secret"}}})}})
    await core.create_namespaced_pod(namespace, {"metadata": {"name": "right"}, "spec": {
        "imagePullSecrets": [{"name": "pull"}], "securityContext": {"runAsUser": 1000},
        "containers": [{"name": "c", "image": private, "args": ["sleep", "60"]}]}})

    async def running() -> bool:
        pod = await core.read_namespaced_pod("right", namespace)
        return pod.status.phase == "Running"

    await _eventually(running, 60)


async def test_nodes_own_rights_only(devcluster: DevCluster, kube_api: client.ApiClient,
                                     namespace: str) -> None:
    """Node authorization + NodeRestriction: the kubelet's identity cannot read any Secret."""
    core = client.CoreV1Api(kube_api)
    await core.create_namespaced_secret(namespace, {"metadata": {"name": "unrelated"}})
    node_kubeconfig = devcluster.state_dir / "node" / "kubeconfig"
    async with await kube_api_client(node_kubeconfig) as node_api:
        as_node = client.CoreV1Api(node_api)
        assert await _status(as_node.read_namespaced_secret("unrelated", namespace)) == 403
        assert await _status(as_node.read_node("devnode")) == 200


async def test_service_account_tokens_and_rbac(
        devcluster: DevCluster, kube_api: client.ApiClient, namespace: str) -> None:
    core, rbac = client.CoreV1Api(kube_api), client.RbacAuthorizationV1Api(kube_api)
    await core.create_namespaced_service_account(namespace, {"metadata": {"name": "bot"}})
    token = (await core.create_namespaced_service_account_token(
        "bot", namespace, {"spec": {"audiences": [], "expirationSeconds": 600}})).status.token
    async with api_client_with_token(devcluster, token) as bot_api:
        bot = client.CoreV1Api(bot_api)
        assert await _status(bot.list_namespaced_pod(namespace)) == 403
        await rbac.create_namespaced_role_binding(namespace, {
            "metadata": {"name": "bot-view"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "view"},  # aggregated by the controller-manager
            "subjects": [{"kind": "ServiceAccount", "name": "bot", "namespace": namespace}]})
        await _eventually(lambda: bot.list_namespaced_pod(namespace), 30)
        assert await _status(bot.list_namespaced_secret(namespace)) == 403


def test_a_second_devcluster_runs_beside_and_leaves_nothing(devcluster: DevCluster) -> None:
    cluster = DevCluster().start()
    try:
        assert cluster.host_ip != devcluster.host_ip
        assert cluster.server != devcluster.server
        assert cluster.node and cluster.node.ready() and devcluster.node.ready()
        state, bridge = cluster.state_dir, cluster.network.bridge
        pids = [cluster._processes.pid(name) for name in
                ("kubelet", "containerd", "namespace", "kube-apiserver", "etcd")]
        cgroup = Path("/sys/fs/cgroup/memory") / cluster.node.cgroup_root.lstrip("/")
        assert cgroup.is_dir()
    finally:
        cluster.stop()
    assert not state.exists()
    assert subprocess.run(["ip", "link", "show", bridge], capture_output=True).returncode != 0
    assert not cgroup.exists()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert devcluster.node.ready(), "the first devcluster is untouched"


def test_control_plane_state_dir_is_kept_and_reused(tmp_path: Path) -> None:
    body = {"metadata": {"name": "kept"}, "data": {"k": "v"}}
    with DevCluster(tmp_path / "dc", node=False) as cluster:
        cluster.request("POST", "/api/v1/namespaces/default/configmaps", body)
        server = cluster.server
    with DevCluster(tmp_path / "dc", node=False) as cluster:
        assert cluster.server == server  # same ports, same certs: old kubeconfigs keep working
        assert cluster.request("GET", "/api/v1/namespaces/default/configmaps/kept")["data"] == {
            "k": "v"}


def test_images_are_cached_by_content(devcluster: DevCluster) -> None:
    started = time.monotonic()
    images = devcluster.builder.images()
    assert time.monotonic() - started < 10, "nothing changed: no rebuild"
    assert set(images) >= {"pause", "notebook", "tool", "nopython"}
    assert NOPYTHON_IMAGE.endswith("nopython:1")
