"""Dynamic provisioning for the devcluster: ``local`` PersistentVolumes in the state dir.

The default StorageClass ``devcluster-local`` names this provisioner. For each pending claim
of that class it makes a directory and a ``local`` PV pre-bound to the claim (the
controller-manager's PV controller completes the binding); released PVs and their directories
are deleted. ``local`` volumes (unlike ``hostPath``) get the pod's fsGroup, as cloud disks do.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import urllib.error
from pathlib import Path

from .controlplane import ControlPlane

PROVISIONER = "devcluster.studio/local"
STORAGE_CLASS = "devcluster-local"


class LocalProvisioner:
    """A background thread that provisions and deletes ``local`` PVs for one node."""

    def __init__(self, control: ControlPlane, root: Path, node: str,
                 interval: float = 0.3) -> None:
        self.control = control
        self.root = root
        self.node = node
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="devcluster-provisioner",
                                        daemon=True)

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._create_storage_class()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _create_storage_class(self) -> None:
        body = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": STORAGE_CLASS, "annotations": {
                    "storageclass.kubernetes.io/is-default-class": "true"}},
                "provisioner": PROVISIONER, "reclaimPolicy": "Delete",
                "volumeBindingMode": "Immediate"}
        with contextlib.suppress(urllib.error.HTTPError):  # 409: kept state dir
            self.control.request("POST", "/apis/storage.k8s.io/v1/storageclasses", body)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(urllib.error.URLError, OSError, KeyError):
                self.sync()

    def sync(self) -> None:
        """One pass: provision pending claims, delete released volumes."""
        for pvc in self.control.request("GET", "/api/v1/persistentvolumeclaims")["items"]:
            spec = pvc["spec"]
            if (spec.get("storageClassName") == STORAGE_CLASS and not spec.get("volumeName")
                    and pvc["status"].get("phase") == "Pending"
                    and not pvc["metadata"].get("deletionTimestamp")):
                self._provision(pvc)
        for pv in self.control.request("GET", "/api/v1/persistentvolumes")["items"]:
            annotations = pv["metadata"].get("annotations") or {}
            if (annotations.get("pv.kubernetes.io/provisioned-by") == PROVISIONER
                    and pv["status"].get("phase") in ("Released", "Failed")):
                shutil.rmtree(self.root / pv["metadata"]["name"], ignore_errors=True)
                with contextlib.suppress(urllib.error.HTTPError):
                    self.control.request("DELETE",
                                         f"/api/v1/persistentvolumes/{pv['metadata']['name']}")

    def _provision(self, pvc: dict) -> None:
        meta = pvc["metadata"]
        name = f"pvc-{meta['uid']}"
        path = self.root / name
        path.mkdir(mode=0o755, exist_ok=True)
        size = pvc["spec"].get("resources", {}).get("requests", {}).get("storage", "1Gi")
        body = {
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name,
                         "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": pvc["spec"].get("accessModes") or ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": STORAGE_CLASS,
                "volumeMode": pvc["spec"].get("volumeMode", "Filesystem"),
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                             "namespace": meta["namespace"], "name": meta["name"],
                             "uid": meta["uid"]},
                "local": {"path": str(path)},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In",
                     "values": [self.node]}]}]}},
            },
        }
        with contextlib.suppress(urllib.error.HTTPError):  # 409: made in an earlier pass
            self.control.request("POST", "/api/v1/persistentvolumes", body)
