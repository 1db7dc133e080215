"""The spawner's own Kubernetes calls against the devcluster's real API server: retries and
timeouts like KubeSpawner's, and a pod-name conflict (409) that keeps the pull Secret."""

from __future__ import annotations

import asyncio
import time

import pytest
from kubernetes_asyncio import client, config
from kubespawner import clients
from traitlets.config import Config

from studio_spawner.cli import offline_spawner
from studio_spawner.spawner import StudioSpawner

from .conftest import CATALOG_CONFIG
from .lifespan.fault_proxy import FaultProxy

ECR_IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/studio:1"


def studio_config(**extra) -> Config:
    c = Config()
    for key, value in {**CATALOG_CONFIG, **extra}.items():
        setattr(c.StudioSpawner, key, value)
    c.StudioSpawner.namespace = "default"
    return c


@pytest.fixture
async def kube_default(devcluster):
    """Make the devcluster KubeSpawner's default cluster (its clients use the default
    configuration) for this test's event loop."""
    offline_spawner(Config())  # KubeSpawner's own one-time config loading comes first
    loop = asyncio.get_running_loop()
    for key in [key for key in clients._client_cache if key[0] is loop]:
        clients._client_cache.pop(key)  # its clients for this loop: made anew with ours
    previous = client.Configuration.get_default_copy()
    conf = client.Configuration()
    await config.load_kube_config(config_file=str(devcluster.kubeconfig),
                                  client_configuration=conf)
    client.Configuration.set_default(conf)
    yield conf
    await StudioSpawner._stop_all_reflectors()  # they live in this test's event loop
    client.Configuration.set_default(previous)


@pytest.fixture
async def admin_token(devcluster, kube_api):
    """A bearer token with cluster-admin rights (a ServiceAccount's)."""
    core, rbac = client.CoreV1Api(kube_api), client.RbacAuthorizationV1Api(kube_api)
    name = "studio-retry-test"
    try:
        await core.create_namespaced_service_account("default", {"metadata": {"name": name}})
        await rbac.create_cluster_role_binding({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "default"}]})
    except client.ApiException as error:
        if error.status != 409:
            raise
    token = await core.create_namespaced_service_account_token(
        name, "default", {"spec": {"expirationSeconds": 3600}})
    return token.status.token


async def secret_exists(kube_api, name: str) -> bool:
    try:
        await client.CoreV1Api(kube_api).read_namespaced_secret(name, "default")
    except client.ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


async def test_a_409_retry_keeps_the_pull_secret_it_just_made(kube_default, kube_api):
    spawner = offline_spawner(studio_config(allowed_registries=["*"]), "conflict-user", "s1")
    core = client.CoreV1Api(kube_api)
    try:
        spawner.user_options = {"name": "s", "image": ECR_IMAGE}
        spawner.apply_studio_options(spawner.parse(spawner.raw_options()))
        assert spawner.pull_secret_name == "jupyter-conflict-user--s1-pull"
        await spawner._replace_secret({"metadata": {"name": spawner.pull_secret_name},
                                       "type": "Opaque", "data": {}})
        pod = await spawner.get_pod_manifest()
        leftover = client.ApiClient().sanitize_for_serialization(pod)
        await core.create_namespaced_pod("default", leftover)  # a pod of the same name exists

        created = False
        deadline = time.monotonic() + 60
        while not created and time.monotonic() < deadline:  # KubeSpawner's exponential_backoff
            created = await spawner._make_create_pod_request(pod, 10)
        assert created
        assert await secret_exists(kube_api, spawner.pull_secret_name), \
            "the retry after the 409 still has its pull Secret"
    finally:
        await core.delete_namespaced_pod(spawner.pod_name, "default", grace_period_seconds=0)
        await spawner._delete_secret(spawner._pull_secret)
        await spawner.api.api_client.close()


async def test_secret_calls_are_retried_with_kubespawners_timeouts(
        devcluster, kube_api, admin_token):
    proxy = FaultProxy(devcluster.server, ca_certs=str(devcluster.ca_file)).start()
    conf = client.Configuration(host=proxy.url)
    conf.api_key = {"BearerToken": admin_token}
    conf.api_key_prefix = {"BearerToken": "Bearer"}
    spawner = offline_spawner(studio_config(k8s_api_request_timeout=1,
                                            k8s_api_request_retry_timeout=20), "retry-user", "")
    spawner.api = client.CoreV1Api(client.ApiClient(conf))
    body = {"metadata": {"name": "studio-retry-secret"}, "type": "Opaque", "data": {}}
    try:
        proxy.hang_next, proxy.hang_seconds = 1, 15  # one request never answers in time
        proxy.fail_next = 0
        started = time.monotonic()
        await spawner._replace_secret(body)
        assert time.monotonic() - started < 10, "a hung request is abandoned after 1 s"
        assert await secret_exists(kube_api, "studio-retry-secret")

        proxy.fail_next = 2  # two 503 answers
        await spawner._replace_secret(body)
        await spawner._delete_secret("studio-retry-secret")
        assert not await secret_exists(kube_api, "studio-retry-secret")
        assert proxy.fail_next == 0 and proxy.hang_next == 0, "the faults were hit"
    finally:
        proxy.stop()
        await spawner.api.api_client.close()


async def test_poll_keeps_a_running_studio_whose_container_restarted(kube_default, kube_api):
    """After a hub restart, poll() sees a pod whose notebook container was OOM-killed once and
    runs again: the studio keeps running (fail-fast is for starts only)."""
    from jupyterhub import orm

    spawner = offline_spawner(studio_config(), "poll-user", "s1")
    core = client.CoreV1Api(kube_api)
    spawner.user_options = {"name": "s"}
    spawner.apply_studio_options(spawner.parse(spawner.raw_options()))
    pod = client.ApiClient().sanitize_for_serialization(await spawner.get_pod_manifest())
    try:
        created = await core.create_namespaced_pod("default", pod)
        status = {"phase": "Running", "podIP": "10.0.0.7",
                  "conditions": [{"type": "Ready", "status": "True"}],
                  "containerStatuses": [{
                      "name": "notebook", "image": created.spec.containers[0].image,
                      "imageID": "", "ready": True, "restartCount": 1,
                      "state": {"running": {"startedAt": "2026-11-27T10:00:00Z"}},
                      "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}
        await core.patch_namespaced_pod_status(spawner.pod_name, "default", {"status": status})
        spawner.orm_spawner.server = orm.Server(proto="http", ip="10.0.0.7", port=8888,
                                                base_url="/user/poll-user/s1/",
                                                cookie_name="jupyterhub-user-poll-user")
        deadline = time.monotonic() + 20
        while True:  # until the reflector has seen the restart
            await spawner._start_watching_pods()
            seen = spawner.pod_reflector.pods.get(f"default/{spawner.pod_name}") or {}
            if (seen.get("status") or {}).get("containerStatuses"):
                break
            assert time.monotonic() < deadline, "the reflector did not see the status"
            await asyncio.sleep(0.2)
        assert await spawner.poll() is None, "the studio keeps running"
    finally:
        await core.delete_namespaced_pod(spawner.pod_name, "default", grace_period_seconds=0)
