"""S3 data repositories and ECR images on the devcluster, with moto as S3 and ECR.

The Mountpoint CSI driver cannot run here (no FUSE, no AWS): the devcluster's node runs a
stand-in CSI node plugin under the same driver name that bind-mounts one directory per bucket,
read-only when the volume is. So these tests check what the spawner controls (the PV, claim and
mount modes, the checks, the pull Secret) and that the kernel refuses writes on read-only
mounts, not Mountpoint itself. ECR images are served by the devcluster's private registry under
the ECR host names; it accepts exactly the credentials moto's GetAuthorizationToken returns.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes_asyncio import client

from devcluster.registry import PUBLIC_HOST
from studio_spawner.catalog import DataRepository
from studio_spawner.data import DataUnavailable, MountpointSettings, ensure_volumes, plan_volumes
from studio_spawner.options import DataMount, StudioOptions

from .aws_fixtures import CREDENTIALS, Moto, ecr_host
from .devcluster_fixtures import kube_api_client
from .hub_fixtures import Hub, start_hub
from .studio_fixtures import home_file, studio_hub_config, wait_for_server
from .test_e2e_devcluster import gone, spawn_failure

RBAC_MANIFEST = Path(__file__).parents[1] / "helm-values" / "rbac-s3-mountpoint.yaml"
# The chart's hub Role (DESIGN.md): no PersistentVolumes, no patch.
Z2JH_HUB_RULES = [
    {"apiGroups": [""], "resources": ["pods", "persistentvolumeclaims", "secrets", "services"],
     "verbs": ["get", "watch", "list", "create", "delete"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "watch", "list"]},
]


async def test_hub_role_needs_the_shipped_cluster_role_to_provision(devcluster, kube_api):
    namespace, user = f"s3-{uuid.uuid4().hex[:6]}", f"hub-{uuid.uuid4().hex[:6]}"
    core, rbac = client.CoreV1Api(kube_api), client.RbacAuthorizationV1Api(kube_api)
    await core.create_namespace({"metadata": {"name": namespace}})
    await rbac.create_namespaced_role(namespace, {"metadata": {"name": "hub"},
                                                  "rules": Z2JH_HUB_RULES})
    await rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "hub"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "hub"},
        "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
    })
    repositories = {"ref": DataRepository(name="ref", bucket="ref-bucket", region="eu-west-1"),
                    "scratch": DataRepository(name="scratch", bucket="scratch-b", writable=True)}
    options = StudioOptions(name="n", image="i", data=(DataMount("ref"),
                                                       DataMount("scratch", writable=True)))
    planned = plan_volumes(options, repositories, MountpointSettings(namespace, 1000, 100))

    async with await kube_api_client(devcluster.issue_kubeconfig(user)) as hub_api:
        hub_core = client.CoreV1Api(hub_api)
        with pytest.raises(DataUnavailable, match=r"data\[0\]: the hub may not create the "
                           r"PersistentVolume for 'ref'; apply helm-values/rbac-s3-mountpoint"):
            await ensure_volumes(hub_core, planned)

        role, binding = yaml.safe_load_all(RBAC_MANIFEST.read_text())
        for document in (role, binding):
            document["metadata"]["name"] += f"-{user}"
        binding["roleRef"]["name"] = role["metadata"]["name"]
        binding["subjects"] = [{"kind": "User", "name": user,
                                "apiGroup": "rbac.authorization.k8s.io"}]
        await rbac.create_cluster_role(role)
        await rbac.create_cluster_role_binding(binding)
        for _ in range(50):  # the authorizer's cache follows the new binding within moments
            try:
                await ensure_volumes(hub_core, planned)
                break
            except DataUnavailable:
                await asyncio.sleep(0.1)
        await ensure_volumes(hub_core, planned)  # again: existing objects are kept

    for volume in planned:
        pv_manifest, pvc_manifest = volume.manifests
        pv = await core.read_persistent_volume(pv_manifest["metadata"]["name"])
        assert pv.spec.csi.driver == "s3.csi.aws.com"
        assert pv.spec.mount_options == pv_manifest["spec"]["mountOptions"]
        pvc = await core.read_namespaced_persistent_volume_claim(volume.claim, namespace)
        assert pvc.spec.volume_name == pv.metadata.name
    assert "read-only" in planned[0].manifests[0]["spec"]["mountOptions"]
    assert "allow-delete" in planned[1].manifests[0]["spec"]["mountOptions"]


@pytest.fixture(scope="session")
def ecr_repository(moto_server: Moto, devcluster) -> str:
    """An ECR repository with tag 1.0 in moto, in the private registry (pulled with a secret)."""
    repository, _ = moto_server.ecr_image(tag="1.0")
    devcluster.push_image("notebook", f"{ecr_host()}/{repository}:1.0")
    return repository


@pytest.fixture(scope="session")
def aws_hub(devcluster, moto_server, ecr_repository, tmp_path_factory) -> Iterator[Hub]:
    """A hub spawning studios with S3 data repositories and ECR images checked in moto."""
    reference, scratch = moto_server.bucket(), moto_server.bucket()
    config = studio_hub_config(devcluster) + f"""
c.StudioSpawner.allowed_registries = ["{PUBLIC_HOST}/**", "*.dkr.ecr.*.amazonaws.com/**"]
c.StudioSpawner.ecr_allowed_regions = ["eu-west-1"]
c.StudioSpawner.aws_endpoint_url = "{moto_server.url}"
c.StudioSpawner.data_provisioning = "mountpoint"
c.StudioSpawner.data_repositories = [
    {{"name": "reference", "bucket": "{reference}", "region": "eu-west-1"}},
    {{"name": "scratch", "bucket": "{scratch}", "region": "eu-west-1", "writable": True}},
    {{"name": "gone", "bucket": "studio-bucket-that-was-deleted"}},
]
"""
    env = {"KUBECONFIG": str(devcluster.kubeconfig), **CREDENTIALS}
    yield from start_hub(tmp_path_factory.mktemp("aws-hub"), config, env=env)


PROBE = """
touch /workspace/data/reference/new 2> $HOME/reference.err; echo $? > $HOME/reference.rc
echo written > /workspace/data/scratch/new 2> $HOME/scratch.err; echo $? > $HOME/scratch.rc
"""


def test_buckets_mount_read_only_unless_writable(aws_hub, devcluster):
    hub = aws_hub
    hub.api("POST", "/users", json={"usernames": ["sam"]})
    options = {"name": "Data", "template": "demo", "init_script": PROBE,
               "data": [{"name": "reference"}, {"name": "scratch", "writable": True}]}
    response = hub.api("POST", "/users/sam/servers/data", json=options)
    assert response.status_code in (201, 202), response.text
    assert wait_for_server(hub, "sam", "data").get("ready"), hub.log.read_text()[-3000:]

    assert home_file(hub, "sam", "data", "reference.rc").strip() != "0"
    assert "Read-only file system" in home_file(hub, "sam", "data", "reference.err")
    assert home_file(hub, "sam", "data", "scratch.rc").strip() == "0"
    pod = devcluster.request("GET", "/api/v1/namespaces/default/pods/jupyter-sam--data")
    claims = {v["name"]: v["persistentVolumeClaim"] for v in pod["spec"]["volumes"]
              if v["name"].startswith("data-")}
    assert claims["data-reference"]["readOnly"] is True
    assert claims["data-scratch"].get("readOnly", False) is False
    pv_name = devcluster.request(
        "GET", f"/api/v1/namespaces/default/persistentvolumeclaims/"
        f"{claims['data-reference']['claimName']}")["spec"]["volumeName"]
    pv = devcluster.request("GET", f"/api/v1/persistentvolumes/{pv_name}")
    assert pv["spec"]["csi"]["driver"] == "s3.csi.aws.com"
    assert "read-only" in pv["spec"]["mountOptions"]
    hub.api("DELETE", "/users/sam/servers/data")


def test_a_missing_bucket_fails_the_spawn_before_any_pod(aws_hub, devcluster):
    seconds, message = spawn_failure(aws_hub, "tia", "gone", {
        "name": "x", "template": "demo", "data": [{"name": "gone"}]})
    assert seconds < 15, f"took {seconds:.1f} s"
    assert "data[0]: data repository 'gone' (bucket studio-bucket-that-was-deleted) does not " \
           "exist" in message, message
    assert gone(devcluster, "/api/v1/namespaces/default/pods/jupyter-tia--gone", timeout=1)


def test_private_ecr_image_gets_a_pull_secret_and_runs(aws_hub, devcluster, ecr_repository):
    hub = aws_hub
    hub.api("POST", "/users", json={"usernames": ["uma"]})
    image = f"{ecr_host()}/{ecr_repository}:1.0"
    response = hub.api("POST", "/users/uma/servers/ecr", json={"name": "ECR", "image": image})
    assert response.status_code in (201, 202), response.text
    assert wait_for_server(hub, "uma", "ecr").get("ready"), hub.log.read_text()[-3000:]
    pod = devcluster.request("GET", "/api/v1/namespaces/default/pods/jupyter-uma--ecr")
    assert pod["spec"]["imagePullSecrets"] == [{"name": "jupyter-uma--ecr-pull"}]
    secret_path = "/api/v1/namespaces/default/secrets/jupyter-uma--ecr-pull"
    assert devcluster.request("GET", secret_path)["type"] == "kubernetes.io/dockerconfigjson"
    hub.api("DELETE", "/users/uma/servers/ecr")
    assert gone(devcluster, secret_path), "the pull secret is deleted with the studio"


def test_missing_ecr_tag_fails_the_spawn_before_any_pod(aws_hub, devcluster, ecr_repository):
    image = f"{ecr_host()}/{ecr_repository}:9.9"
    seconds, message = spawn_failure(aws_hub, "vic", "ecr", {"name": "x", "image": image})
    assert seconds < 15, f"took {seconds:.1f} s"
    assert f"image: {ecr_host()}/{ecr_repository} has no image with tag 9.9" in message, message
    assert gone(devcluster, "/api/v1/namespaces/default/pods/jupyter-vic--ecr", timeout=1)


def test_ecr_region_outside_the_policy_is_refused_with_400(aws_hub, ecr_repository):
    aws_hub.api("POST", "/users", json={"usernames": ["wes"]})
    image = f"{ecr_host('us-east-1')}/{ecr_repository}:1.0"
    response = aws_hub.api("POST", "/users/wes/servers/x", json={"name": "x", "image": image})
    assert response.status_code == 400
    assert "image: Amazon ECR region us-east-1 is not allowed here" in response.json()["message"]


def test_the_node_refuses_the_private_image_without_a_pull_secret(devcluster, ecr_repository):
    """Guards the other tests: without our Secret the pull really fails."""
    name = f"nosecret-{uuid.uuid4().hex[:6]}"
    devcluster.request("POST", "/api/v1/namespaces/default/pods", {
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": f"{ecr_host()}/{ecr_repository}:1.0",
                                 "command": ["sleep", "60"]}]},
    })
    deadline = time.monotonic() + 30
    waiting = {}
    while time.monotonic() < deadline and "401" not in waiting.get("message", ""):
        status = devcluster.request("GET", f"/api/v1/namespaces/default/pods/{name}")["status"]
        waiting = ((status.get("containerStatuses") or [{}])[0].get("state") or {}).get(
            "waiting") or {}
        time.sleep(0.3)
    devcluster.request("DELETE", f"/api/v1/namespaces/default/pods/{name}")
    assert waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff"), waiting
    assert "401 Unauthorized" in waiting["message"], waiting
