"""Data repositories: S3 buckets mounted at /workspace/data/<name>.

Two ways to provide each repository's volume (``StudioSpawner.data_provisioning``):

- ``claims``: the admin creates the PersistentVolumeClaims (read-only and, for writable
  repositories, read-write); the spawner only mounts them by name.
- ``mountpoint``: the spawner creates a PersistentVolume for the Mountpoint for Amazon S3 CSI
  driver and its claim, named after a hash of their content, so a changed catalogue entry gets
  new objects and running studios keep theirs. Needs the extra RBAC in helm-values/.

`plan_volumes` and `mountpoint_manifests` are pure; `check_buckets` calls S3 and
`ensure_volumes` the Kubernetes API.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio.client.rest import ApiException

from .aws import AwsAccess, AwsCallError
from .catalog import DataRepository
from .options import StudioOptions

DATA_ROOT = "/workspace/data"
MOUNTPOINT_DRIVER = "s3.csi.aws.com"
# The API requires a size; Mountpoint ignores it.
NOMINAL_SIZE = "1200Gi"
MANAGED_BY = {"app.kubernetes.io/managed-by": "studio-spawner"}


class DataUnavailable(Exception):
    """A chosen repository cannot be mounted; the message names the field and the fix."""


@dataclass(frozen=True)
class DataVolume:
    """One chosen repository as the pod mounts it."""

    index: int
    repository: DataRepository
    writable: bool
    claim: str
    manifests: tuple[dict[str, Any], ...] = ()

    @property
    def mount_path(self) -> str:
        return f"{DATA_ROOT}/{self.repository.name}"

    @property
    def field(self) -> str:
        return f"data[{self.index}]"


@dataclass(frozen=True)
class MountpointSettings:
    """How the spawner provisions Mountpoint volumes."""

    namespace: str
    uid: int | None = None
    gid: int | None = None
    extra_options: tuple[str, ...] = ()


def admin_claim(repository: DataRepository, writable: bool) -> str:
    """The admin-provisioned claim for a repository in the given mode."""
    if writable:
        return repository.writable_claim or f"studio-data-{repository.name}-rw"
    return repository.claim or f"studio-data-{repository.name}-ro"


def plan_volumes(
    options: StudioOptions,
    repositories: Mapping[str, DataRepository],
    mountpoint: MountpointSettings | None,
) -> list[DataVolume]:
    """The volumes for the studio's data mounts; `mountpoint` None means admin claims.

    Write access needs both the user's choice and the catalogue's permission, whatever the
    options say (they were validated, but this is where the pod's mode is decided).
    """
    planned = []
    for index, mount in enumerate(options.data):
        repository = repositories[mount.name]
        writable = mount.writable and repository.writable is True
        if mountpoint is None:
            planned.append(DataVolume(index, repository, writable,
                                      admin_claim(repository, writable)))
        else:
            pv, pvc = mountpoint_manifests(repository, writable, mountpoint)
            planned.append(DataVolume(index, repository, writable, pvc["metadata"]["name"],
                                      (pv, pvc)))
    return planned


def mount_options(repository: DataRepository, writable: bool,
                  settings: MountpointSettings) -> list[str]:
    """Mountpoint's options: read-only unless writable; deletes and overwrites only then."""
    options = list(settings.extra_options)
    if repository.region:
        options.append(f"region {repository.region}")
    if repository.prefix:
        options.append(f"prefix {repository.prefix}")
    if settings.uid is not None:
        options.append(f"uid={settings.uid}")
    if settings.gid is not None:
        options.append(f"gid={settings.gid}")
    options.append("allow-other")  # the studio's user is not the user that mounts
    options += ["allow-delete", "allow-overwrite"] if writable else ["read-only"]
    return options


def mountpoint_manifests(repository: DataRepository, writable: bool,
                         settings: MountpointSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Mountpoint PersistentVolume and the claim bound to it, named by a content hash."""
    mode = "rw" if writable else "ro"
    access = "ReadWriteMany" if writable else "ReadOnlyMany"
    options = mount_options(repository, writable, settings)
    content = json.dumps([settings.namespace, repository.bucket, options], sort_keys=True)
    digest = hashlib.sha256(content.encode()).hexdigest()[:10]
    claim = f"studio-data-{repository.name}-{mode}-{digest}"
    volume = f"studio-data-{settings.namespace}-{repository.name}-{mode}-{digest}"
    labels = {**MANAGED_BY, "studio.jupyter.org/data": repository.name}
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": volume, "labels": labels},
        "spec": {
            "capacity": {"storage": NOMINAL_SIZE},
            "accessModes": [access],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "mountOptions": options,
            "claimRef": {"namespace": settings.namespace, "name": claim},
            "csi": {
                "driver": MOUNTPOINT_DRIVER,
                "volumeHandle": volume,
                "readOnly": not writable,
                "volumeAttributes": {"bucketName": repository.bucket},
            },
        },
    }
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim, "namespace": settings.namespace, "labels": labels},
        "spec": {
            "accessModes": [access],
            "storageClassName": "",
            "volumeName": volume,
            "resources": {"requests": {"storage": NOMINAL_SIZE}},
        },
    }
    return pv, pvc


def pod_volumes(planned: Sequence[DataVolume]) -> tuple[list[dict], list[dict]]:
    """The pod's volumes and the main container's mounts for the planned data volumes."""
    volumes, mounts = [], []
    for data in planned:
        name = f"data-{data.repository.name}"
        read_only = not data.writable
        volumes.append({"name": name, "persistentVolumeClaim": {"claimName": data.claim,
                                                                 "readOnly": read_only}})
        mounts.append({"name": name, "mountPath": data.mount_path, "readOnly": read_only})
    return volumes, mounts


async def check_buckets(aws: AwsAccess, planned: Sequence[DataVolume]) -> None:
    """Raise DataUnavailable unless every chosen bucket exists, is reachable and is where the
    catalogue says (the buckets are checked concurrently)."""
    found = await asyncio.gather(*(_bucket_problem(aws, data) for data in planned))
    problems = [problem for problem in found if problem]
    if problems:
        raise DataUnavailable("; ".join(problems))


async def _bucket_problem(aws: AwsAccess, data: DataVolume) -> str | None:
    repository = data.repository
    where = f"{data.field}: data repository '{repository.name}' (bucket {repository.bucket})"
    try:
        head = await aws.call("s3", "head_bucket", region=repository.region,
                              Bucket=repository.bucket)
    except AwsCallError as error:
        return f"{where} {_bucket_failure(error)}"
    actual = head.get("BucketRegion") or head.get("ResponseMetadata", {}).get(
        "HTTPHeaders", {}).get("x-amz-bucket-region")
    if repository.region and actual and actual != repository.region:
        return (f"{where} is in region {actual}, not {repository.region}; the administrator "
                "must fix its region in StudioSpawner.data_repositories")
    return None


def _bucket_failure(error: AwsCallError) -> str:
    if error.status == 404 or error.code in ("404", "NoSuchBucket"):
        return ("does not exist; choose another repository or ask the administrator to fix "
                "StudioSpawner.data_repositories")
    if error.status == 403 or error.code in ("403", "AccessDenied"):
        return "is not reachable with the hub's AWS credentials (access denied)"
    if error.status == 301 or error.code == "PermanentRedirect":
        return "is in another region than the catalogue says; the administrator must fix it"
    return f"could not be checked ({error})"


async def _direct(call: Callable[[], Awaitable[Any]], _what: str) -> Any:
    return await call()


async def ensure_volumes(
    core: Any,
    planned: Sequence[DataVolume],
    attempt: Callable[[Callable[[], Awaitable[Any]], str], Awaitable[Any]] = _direct,
) -> None:
    """Create the Mountpoint PVs and claims that do not exist yet (existing ones are kept).

    `attempt(call, what)` runs each API call (the spawner's retries and timeouts)."""
    for data in planned:
        for manifest in data.manifests:

            async def create(manifest: dict[str, Any] = manifest) -> None:
                if manifest["kind"] == "PersistentVolume":
                    await core.create_persistent_volume(manifest)
                else:
                    await core.create_namespaced_persistent_volume_claim(
                        manifest["metadata"]["namespace"], manifest)

            try:
                await attempt(create, f"Creating the {manifest['kind']} "
                                      f"{manifest['metadata']['name']}")
            except ApiException as error:
                if error.status == 409:
                    continue
                if error.status == 403:
                    raise DataUnavailable(
                        f"{data.field}: the hub may not create the {manifest['kind']} for "
                        f"'{data.repository.name}'; apply helm-values/rbac-s3-mountpoint.yaml "
                        "or set StudioSpawner.data_provisioning = 'claims'"
                    ) from error
                raise
