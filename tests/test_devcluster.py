"""Tests against the devcluster: a real kube-apiserver backed by a real etcd."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from studio_spawner.devcluster import DevCluster
from tests.devcluster_fixtures import api_client_with_token, kube_api_client


def _pod(name: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "t"}},
        # A scheduler nobody runs: the pod stays unbound even while the kubelet fixture runs.
        "spec": {"schedulerName": "no-scheduler",
                 "containers": [{"name": "main", "image": "busybox:1.36",
                                 "command": ["sleep", "3600"]}]},
    }


def _pvc(name: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Gi"}}},
    }


async def _status(call: Awaitable[object]) -> int:
    """The HTTP status of an API call (200 when it succeeds)."""
    try:
        await call
    except ApiException as exc:
        return exc.status
    return 200


async def _forbidden_message(call: Awaitable[object]) -> str:
    """The message of the 403 answer to ``call`` (fails when the call is not forbidden)."""
    with pytest.raises(ApiException) as info:
        await call
    assert info.value.status == 403, info.value.body
    return json.loads(info.value.body)["message"]


async def _eventually_ok(call: Callable[[], Awaitable[object]], timeout: float = 10.0) -> None:
    """RBAC changes reach the authorizer's cache after a short delay: retry 403s."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await call()
            return
        except ApiException as exc:
            if exc.status != 403 or asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(0.2)


@pytest_asyncio.fixture
async def namespace(kube_api: client.ApiClient) -> AsyncIterator[str]:  # noqa: F811
    """A fresh namespace (deletion only marks it Terminating: no namespace controller)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube_api)
    await core.create_namespace({"metadata": {"name": name}})
    yield name
    await core.delete_namespace(name)


def test_server_is_ready_and_versioned(devcluster: DevCluster) -> None:  # noqa: F811
    assert devcluster.request("GET", "/readyz") == "ok"
    version = devcluster.request("GET", "/version")
    assert version["gitVersion"].startswith("v1.") and int(version["minor"]) >= 32
    namespaces = devcluster.request("GET", "/api/v1/namespaces")["items"]
    names = {n["metadata"]["name"] for n in namespaces}
    assert {"default", "kube-system"} <= names
    assert devcluster.kubeconfig.is_file() and devcluster.server.startswith("https://127.0.0.1:")


async def test_namespace_lifecycle(kube_api: client.ApiClient) -> None:  # noqa: F811
    core = client.CoreV1Api(kube_api)
    name = f"t-{uuid.uuid4().hex[:8]}"
    created = await core.create_namespace({"metadata": {"name": name, "labels": {"x": "y"}}})
    assert created.status.phase == "Active"
    assert (await core.read_namespace(name)).metadata.labels["x"] == "y"
    await core.delete_namespace(name)
    assert (await core.read_namespace(name)).status.phase == "Terminating"


async def test_pod_roundtrip(kube_api: client.ApiClient, namespace: str) -> None:  # noqa: F811
    core = client.CoreV1Api(kube_api)
    dry = await core.create_namespaced_pod(namespace, _pod("dry"), dry_run="All")
    assert dry.metadata.name == "dry" and dry.spec.containers[0].image == "busybox:1.36"
    assert await _status(core.read_namespaced_pod("dry", namespace)) == 404

    await core.create_namespaced_pod(namespace, _pod("p1"))
    pod = await core.read_namespaced_pod("p1", namespace)
    assert pod.status.phase == "Pending" and pod.spec.node_name is None
    assert pod.spec.service_account_name is None  # ServiceAccount admission is disabled
    listed = await core.list_namespaced_pod(namespace, label_selector="app=t")
    assert [p.metadata.name for p in listed.items] == ["p1"]
    assert await _status(core.create_namespaced_pod(namespace, _pod("p1"))) == 409

    await core.delete_namespaced_pod("p1", namespace)  # unbound: deleted at once
    assert await _status(core.read_namespaced_pod("p1", namespace)) == 404


async def test_secret_roundtrip(kube_api: client.ApiClient, namespace: str) -> None:  # noqa: F811
    core = client.CoreV1Api(kube_api)
    body = {"metadata": {"name": "s1"}, "stringData": {"options.json": '{"a": 1}'}}
    await core.create_namespaced_secret(namespace, body)
    secret = await core.read_namespaced_secret("s1", namespace)
    assert secret.data == {"options.json": "eyJhIjogMX0="}  # base64 of '{"a": 1}'
    assert secret.type == "Opaque"
    await core.delete_namespaced_secret("s1", namespace)
    assert await _status(core.read_namespaced_secret("s1", namespace)) == 404


async def test_pvc_dry_run_and_protection_finalizer(
    kube_api: client.ApiClient, namespace: str  # noqa: F811
) -> None:
    core = client.CoreV1Api(kube_api)
    dry = await core.create_namespaced_persistent_volume_claim(namespace, _pvc("home"),
                                                               dry_run="All")
    assert dry.spec.resources.requests["storage"] == "1Gi"
    assert await _status(core.read_namespaced_persistent_volume_claim("home", namespace)) == 404

    await core.create_namespaced_persistent_volume_claim(namespace, _pvc("home"))
    pvc = await core.read_namespaced_persistent_volume_claim("home", namespace)
    assert pvc.status.phase == "Pending"
    assert "kubernetes.io/pvc-protection" in pvc.metadata.finalizers

    # No controller-manager: deletion waits on the finalizer until someone removes it (the
    # devcluster kubelet does, when it runs in the same session; otherwise this test does).
    await core.delete_namespaced_persistent_volume_claim("home", namespace)
    try:
        pvc = await core.read_namespaced_persistent_volume_claim("home", namespace)
    except ApiException as exc:
        assert exc.status == 404
    else:
        assert pvc.metadata.deletion_timestamp is not None
        patched = await _status(core.patch_namespaced_persistent_volume_claim(
            "home", namespace, {"metadata": {"finalizers": None}}))
        assert patched in (200, 404)  # 404: the kubelet removed the finalizer first
    assert await _status(core.read_namespaced_persistent_volume_claim("home", namespace)) == 404


async def test_rbac_service_account_token(
    devcluster: DevCluster, kube_api: client.ApiClient, namespace: str  # noqa: F811
) -> None:
    core, rbac = client.CoreV1Api(kube_api), client.RbacAuthorizationV1Api(kube_api)
    await core.create_namespaced_service_account(namespace, {"metadata": {"name": "bot"}})
    token = (await core.create_namespaced_service_account_token(
        "bot", namespace, {"spec": {"audiences": [], "expirationSeconds": 600}})).status.token
    assert token.count(".") == 2  # a JWT signed with the service-account key

    async with api_client_with_token(devcluster, token) as bot_api:
        bot = client.CoreV1Api(bot_api)
        message = await _forbidden_message(bot.list_namespaced_pod(namespace))
        assert f'User "system:serviceaccount:{namespace}:bot" cannot list' in message

        await rbac.create_namespaced_role(namespace, {
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
        })
        await rbac.create_namespaced_role_binding(namespace, {
            "metadata": {"name": "bot-reads-pods"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": "pod-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "bot", "namespace": namespace}],
        })
        await _eventually_ok(lambda: bot.list_namespaced_pod(namespace))
        # Only what the Role grants: no create, no other namespace.
        assert await _status(bot.create_namespaced_pod(namespace, _pod("x"))) == 403
        assert await _status(bot.list_namespaced_pod("default")) == 403


async def test_rbac_client_certificate_user(
    devcluster: DevCluster, kube_api: client.ApiClient, namespace: str  # noqa: F811
) -> None:
    kubeconfig = devcluster.issue_kubeconfig("alice", groups=["studio-devs"])
    async with await kube_api_client(kubeconfig) as alice_api:
        alice = client.CoreV1Api(alice_api)
        message = await _forbidden_message(alice.list_namespaced_secret(namespace))
        assert 'User "alice" cannot list resource "secrets"' in message

        await client.RbacAuthorizationV1Api(kube_api).create_namespaced_role_binding(namespace, {
            "metadata": {"name": "devs-edit"},  # "edit" is aggregated by DevCluster.start()
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "edit"},
            "subjects": [{"kind": "Group", "name": "studio-devs",
                          "apiGroup": "rbac.authorization.k8s.io"}],
        })
        await _eventually_ok(lambda: alice.list_namespaced_secret(namespace))
        await alice.create_namespaced_secret(namespace, {"metadata": {"name": "mine"}})
        assert await _status(alice.list_namespace()) == 403  # cluster scope not granted


def test_stop_kills_processes_and_removes_temp_state(devcluster: DevCluster) -> None:  # noqa: F811
    cluster = DevCluster().start()
    state, pids = cluster.state_dir, list(cluster.pids.values())
    assert cluster.running() and cluster.port != devcluster.port
    cluster.stop()
    assert not state.exists() and not cluster.running()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_state_dir_is_kept_and_reused(devcluster: DevCluster, tmp_path) -> None:  # noqa: F811
    body = {"metadata": {"name": "kept"}, "data": {"k": "v"}}
    with DevCluster(tmp_path / "dc") as cluster:
        cluster.request("POST", "/api/v1/namespaces/default/configmaps", body)
        port = cluster.port
    assert (tmp_path / "dc" / "logs" / "kube-apiserver.log").stat().st_size > 0
    with DevCluster(tmp_path / "dc") as cluster:
        assert cluster.port == port  # same ports, same certs: old kubeconfigs keep working
        cm = cluster.request("GET", "/api/v1/namespaces/default/configmaps/kept")
        assert cm["data"] == {"k": "v"}
