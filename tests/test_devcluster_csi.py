"""S3 data on the devcluster: the stand-in for the Mountpoint for Amazon S3 CSI driver.

The volumes are exactly what the spawner makes for ``data_provisioning = "mountpoint"``
(``plan_volumes``, ``ensure_volumes``, ``pod_volumes``); the stand-in bind-mounts the bucket's
directory (``DevCluster.bucket_dir``) where the real driver would mount S3.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from devcluster import DevCluster, DevClusterError
from devcluster.controlplane import GO_MODULE_DIR
from devcluster.csi import bucket_dir
from studio_spawner.catalog import DataRepository
from studio_spawner.data import (
    MOUNTPOINT_DRIVER,
    MountpointSettings,
    ensure_volumes,
    plan_volumes,
    pod_volumes,
)
from studio_spawner.options import DataMount, StudioOptions

from .studio_fixtures import NOPYTHON_IMAGE

REPOSITORIES = {
    "reference": DataRepository(name="reference", bucket="csi-reference", prefix="genomes/v1/",
                                region="eu-west-1"),
    "results": DataRepository(name="results", bucket="csi-results", prefix="team/",
                              writable=True),
}


async def _until(check: Callable[[], Awaitable[object]], timeout: float = 120.0) -> object:
    """Poll ``check`` until it returns something true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (result := await check()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true after {timeout} s")
        await asyncio.sleep(0.3)
    return result


def _csi_mounts(cluster: DevCluster) -> dict[str, str]:
    """CSI volume mounts under the kubelet's root in the node's mount namespace: the mount
    point and its options."""
    assert cluster.node is not None
    namespace_pid = cluster.node.processes.pid("namespace")
    pods = str(cluster.node.root / "kubelet" / "pods")
    mounts = {}
    for line in Path(f"/proc/{namespace_pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4].startswith(pods) and "/kubernetes.io~csi/" in fields[4]:
            mounts[fields[4]] = fields[5]
    return mounts


def test_the_plugin_over_its_sockets() -> None:
    """The stand-in's Go tests: registration, identity, publish/unpublish as the kubelet calls
    them (mounts only as root, in a private mount namespace)."""
    go = shutil.which("go")
    if go is None:  # the devcluster fixture needs Go too; CI (.ci/run) always has it
        pytest.fail("Go is needed for the stand-in's tests") if os.environ.get("CI") else \
            pytest.skip(reason="Go is not installed (CI fails here instead)")
    proc = subprocess.run([go, "test", "-count=1", "./cmd/s3-csi-standin"], cwd=GO_MODULE_DIR,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("bucket", ["..", "a/b", "a..b", "Upper", "ab", "-ab", "x" * 64])
def test_bucket_dirs_are_s3_bucket_names(tmp_path: Path, bucket: str) -> None:
    with pytest.raises(DevClusterError, match="is not an S3 bucket name"):
        bucket_dir(tmp_path, bucket)
    assert list(tmp_path.iterdir()) == []
    assert bucket_dir(tmp_path, "my.bucket-1") == tmp_path / "my.bucket-1"
    assert (tmp_path / "my.bucket-1").is_dir()


async def test_mountpoint_volumes_are_bucket_directories(devcluster: DevCluster,
                                                         kube_api: client.ApiClient) -> None:
    """Read-only and writable data as uid 1000 / fsGroup 100; unmounted when the pod goes."""
    driver = devcluster.request("GET", f"/apis/storage.k8s.io/v1/csidrivers/{MOUNTPOINT_DRIVER}")
    assert driver["spec"]["attachRequired"] is False
    core = client.CoreV1Api(kube_api)
    namespace = f"csi-{uuid.uuid4().hex[:8]}"
    await core.create_namespace({"metadata": {"name": namespace}})
    options = StudioOptions(name="s", image=NOPYTHON_IMAGE, data=(
        DataMount("reference"), DataMount("results", writable=True)))
    planned = plan_volumes(options, REPOSITORIES,
                           MountpointSettings(namespace=namespace, uid=1000, gid=100))
    reference = devcluster.bucket_dir("csi-reference") / "genomes" / "v1"
    reference.mkdir(parents=True, exist_ok=True)
    (reference / "chr1.fa").write_text(">chr1\nACGT\n")
    try:
        await ensure_volumes(core, planned)
        volumes, mounts = pod_volumes(planned)
        script = ("cat /workspace/data/reference/chr1.fa; "
                  "echo 42 > /workspace/data/results/answer.txt && echo wrote; "
                  "touch /workspace/data/reference/new 2>&1; echo checked; sleep 300")
        await _until(lambda: _default_service_account(core, namespace), 60)
        await core.create_namespaced_pod(namespace, {
            "metadata": {"name": "studio"},
            "spec": {"securityContext": {"runAsUser": 1000, "fsGroup": 100},
                     "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "main", "image": NOPYTHON_IMAGE,
                                     "args": ["sh", "-c", script],
                                     "volumeMounts": mounts}],
                     "volumes": volumes}})

        async def logs() -> str:
            with contextlib.suppress(ApiException):  # 400 while the container is creating
                text = await core.read_namespaced_pod_log("studio", namespace) or ""
                return text if "checked" in text else ""
            return ""

        try:
            text = str(await _until(logs))
        except AssertionError:
            pod = await core.read_namespaced_pod("studio", namespace)
            raise AssertionError(f"the pod did not run its checks: {pod.status}") from None
        assert ">chr1\nACGT\n" in text, text
        assert "wrote" in text, text
        assert "Read-only file system" in text, text
        answer = devcluster.bucket_dir("csi-results") / "team" / "answer.txt"
        assert answer.read_text() == "42\n"
        assert answer.stat().st_uid == 1000, "the studio's user owns what it writes"
        assert answer.parent.stat().st_uid == 1000 and answer.parent.stat().st_gid == 100
        assert not (reference / "new").exists()

        pod = await core.read_namespaced_pod("studio", namespace)
        by_pv = {Path(point).parent.name: opts for point, opts in _csi_mounts(devcluster).items()
                 if f"/{pod.metadata.uid}/" in point}
        ro, rw = (v.manifests[0]["metadata"]["name"] for v in planned)
        assert by_pv[ro].split(",")[0] == "ro" and by_pv[rw].split(",")[0] == "rw", by_pv

        await core.delete_namespaced_pod("studio", namespace, grace_period_seconds=1)
        await _until(lambda: _gone(core.read_namespaced_pod("studio", namespace)))
        # The kubelet deletes the pod once its volumes are unmounted, its directory soon after.
        assert not [p for p in _csi_mounts(devcluster) if pod.metadata.uid in p]
        pod_dir = devcluster.node.root / "kubelet" / "pods" / pod.metadata.uid
        await _until(lambda: _false(pod_dir.exists()), 30)
    finally:
        for volume in planned:
            pv, pvc = volume.manifests
            with contextlib.suppress(ApiException):
                await core.delete_namespaced_persistent_volume_claim(pvc["metadata"]["name"],
                                                                    namespace)
            with contextlib.suppress(ApiException):
                await core.delete_persistent_volume(pv["metadata"]["name"])
        await core.delete_namespace(namespace)


async def _default_service_account(core: client.CoreV1Api, namespace: str) -> bool:
    return not await _gone(core.read_namespaced_service_account("default", namespace))


async def _false(value: bool) -> bool:
    return not value


async def _gone(call: Awaitable[object]) -> bool:
    try:
        await call
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False
