"""S3 data on the node: a stand-in for the Mountpoint for Amazon S3 CSI driver.

Studio Spawner's ``mountpoint`` data provisioning makes PersistentVolumes for the CSI driver
``s3.csi.aws.com``. The real driver needs FUSE and AWS; on the devcluster the ``s3-csi-standin``
binary (``cmd/s3-csi-standin``) registers with the kubelet under the same name and bind-mounts
``<data root>/<bucketName>/<prefix>`` instead, read-only as the volume says.
"""

from __future__ import annotations

import contextlib
import re
import time
import urllib.error
from pathlib import Path

from .controlplane import ControlPlane, DevClusterError
from .node import NODE_NAME, Node
from .processes import Processes

DRIVER = "s3.csi.aws.com"
PROCESS = "s3-csi"
BINARY = "s3-csi-standin"
# S3's rule for general purpose bucket names (the stand-in checks the same).
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def start_s3_standin(processes: Processes, node: Node, control: ControlPlane, data_root: Path,
                     timeout: float = 30.0) -> None:
    """Create the ``CSIDriver``, start the stand-in in the node's mount namespace and return
    once the node's ``CSINode`` lists the driver."""
    data_root.mkdir(parents=True, exist_ok=True)
    body = {"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver", "metadata": {"name": DRIVER},
            "spec": {"attachRequired": False, "podInfoOnMount": False,
                     "volumeLifecycleModes": ["Persistent"]}}
    try:
        control.request("POST", "/apis/storage.k8s.io/v1/csidrivers", body)
    except urllib.error.HTTPError as error:
        if error.code != 409:  # 409: a kept state dir has it already
            raise
    processes.start(PROCESS, node._in_namespace([
        str(node.bin_dir / BINARY), f"--kubelet-root={node.root / 'kubelet'}",
        f"--data-root={data_root}", f"--node-id={NODE_NAME}"]))
    deadline = time.monotonic() + timeout
    while not _registered(control):
        if not processes.alive(PROCESS):
            raise DevClusterError(f"{BINARY} exited:\n{processes.tail(PROCESS)}")
        if time.monotonic() > deadline:
            raise DevClusterError(f"the kubelet did not register {DRIVER} in {timeout:.0f} s:\n"
                                  f"{processes.tail(PROCESS)}")
        time.sleep(0.1)


def stop_s3_standin(processes: Processes) -> None:
    """Stop the stand-in (after the pods using its volumes are gone)."""
    processes.stop(PROCESS)


def bucket_dir(data_root: Path, bucket: str) -> Path:
    """The directory standing in for ``bucket`` (made if missing)."""
    if not BUCKET_NAME.fullmatch(bucket) or ".." in bucket:
        raise DevClusterError(f"bucket {bucket!r} is not an S3 bucket name: 3-63 of a-z, 0-9, "
                              "'.' and '-', starting and ending with a letter or digit")
    path = data_root / bucket
    path.mkdir(parents=True, exist_ok=True)
    return path


def _registered(control: ControlPlane) -> bool:
    with contextlib.suppress(urllib.error.URLError, OSError):
        csinode = control.request("GET", f"/apis/storage.k8s.io/v1/csinodes/{NODE_NAME}")
        return any(d["name"] == DRIVER for d in csinode["spec"].get("drivers") or [])
    return False
