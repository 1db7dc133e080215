"""Pod volumes as host directories, and each container's bind mounts.

- emptyDir: `<pod dir>/volumes/empty-dir/<name>`;
- secret, configMap, projected, downwardAPI: files written to `<pod dir>/volumes/<kind>/<name>`
  (always mounted read-only, as kubelet does);
- persistentVolumeClaim: `<state>/pvc/<namespace>/<claim>-<uid>`; when bound to a PV, the PV's
  `csi` directory (`<state>/csi/<driver>/<volumeHandle>`), `hostPath` or `local` path;
- csi (inline): `<state>/csi/<driver>/<volumeAttributes.volumeHandle or pod uid-volume>`;
- hostPath: the path itself.

A missing Secret/ConfigMap/claim raises `VolumeNotReady`: the kubelet retries, like a real one.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .fsplan import Bind
from .kube import Kube
from .podenv import expand, field_value, object_data


class VolumeNotReady(Exception):
    """A volume's source does not exist (yet); the message is the FailedMount event text."""


@dataclass(frozen=True)
class Volume:
    """A prepared volume: its host path; `readonly` when the kubelet always mounts it ro."""

    path: Path
    readonly: bool = False


def safe_name(text: str) -> str:
    """A file-name-safe version of `text`."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text) or "_"


def write_files(root: Path, files: Mapping[str, tuple[bytes, int]], gid: int | None) -> None:
    """Write `{relative path: (content, mode)}` under `root`, replacing what was there."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, (content, mode) in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        os.chmod(path, mode)
        if gid is not None:
            os.chown(path, -1, gid)


def project(data: Mapping[str, bytes], items: list | None, default_mode: int,
            what: str, optional: bool = False) -> dict[str, tuple[bytes, int]]:
    """Select and name files as a volume's `items` say (all keys when there are none)."""
    if not items:
        return {key: (value, default_mode) for key, value in data.items()}
    out = {}
    for item in items:
        if item["key"] not in data:
            if optional:
                continue
            raise VolumeNotReady(f"couldn't find key {item['key']} in {what}")
        out[item["path"]] = (data[item["key"]], item.get("mode", default_mode))
    return out


def fs_group_dir(path: Path, gid: int | None) -> None:
    """Give a writable volume to `fsGroup` as kubelet does: group owner, g+rw, setgid dirs."""
    if gid is None:
        return
    for dirpath, _dirnames, filenames in os.walk(path):
        os.chown(dirpath, -1, gid)
        os.chmod(dirpath, os.stat(dirpath).st_mode | 0o2070)
        for name in filenames:
            file = os.path.join(dirpath, name)
            if not os.path.islink(file):
                os.chown(file, -1, gid)
                os.chmod(file, os.stat(file).st_mode | 0o060)


class VolumeManager:
    """Turns a pod's volumes into host directories (see the module docstring)."""

    def __init__(self, kube: Kube, state_dir: Path):
        self.kube = kube
        self.state_dir = Path(state_dir)

    async def _object(self, kind: str, namespace: str, name: str) -> dict | None:
        plural = "secrets" if kind == "Secret" else "configmaps"
        return await self.kube.get_or_none(f"/api/v1/namespaces/{namespace}/{plural}/{name}")

    async def _source_files(self, pod: dict, kind: str, source: dict, volume: str
                            ) -> dict[str, tuple[bytes, int]]:
        namespace = pod["metadata"]["namespace"]
        name = source.get("secretName") or source.get("name", "")
        obj = await self._object(kind, namespace, name)
        mode = source.get("defaultMode", 0o644)
        label = "secret" if kind == "Secret" else "configmap"
        if obj is None:
            if source.get("optional"):
                return {}
            raise VolumeNotReady(f'MountVolume.SetUp failed for volume "{volume}" : '
                                 f'{label} "{name}" not found')
        return project(object_data(obj, kind), source.get("items"), mode,
                       f"{kind} {namespace}/{name}", source.get("optional", False))

    async def _projected(self, pod: dict, source: dict, volume: str
                         ) -> dict[str, tuple[bytes, int]]:
        files: dict[str, tuple[bytes, int]] = {}
        mode = source.get("defaultMode", 0o644)
        for part in source.get("sources") or []:
            if "secret" in part:
                files.update(await self._source_files(
                    pod, "Secret", {"defaultMode": mode, **part["secret"]}, volume))
            elif "configMap" in part:
                files.update(await self._source_files(
                    pod, "ConfigMap", {"defaultMode": mode, **part["configMap"]}, volume))
            elif "downwardAPI" in part:
                files.update(self._downward(pod, {"defaultMode": mode, **part["downwardAPI"]}))
        return files

    def _downward(self, pod: dict, source: dict) -> dict[str, tuple[bytes, int]]:
        pod_ip = (pod.get("status") or {}).get("podIP")
        mode = source.get("defaultMode", 0o644)
        files = {}
        for item in source.get("items") or []:
            if "fieldRef" in item:
                value = field_value(pod, item["fieldRef"]["fieldPath"], pod_ip)
                files[item["path"]] = (value.encode(), item.get("mode", mode))
        return files

    async def _claim(self, pod: dict, claim_name: str, volume: str) -> Path:
        namespace = pod["metadata"]["namespace"]
        base = f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim_name}"
        claim = await self.kube.get_or_none(base)
        if claim is None:
            raise VolumeNotReady(f'persistentvolumeclaim "{claim_name}" not found')
        if claim["metadata"].get("deletionTimestamp"):
            raise VolumeNotReady(f'persistentvolumeclaim "{claim_name}" is being deleted')
        volume_name = claim.get("spec", {}).get("volumeName")
        path = None
        if volume_name:
            pv = await self.kube.get_or_none(f"/api/v1/persistentvolumes/{volume_name}")
            if pv is None:
                raise VolumeNotReady(f'persistentvolume "{volume_name}" not found')
            path = self.pv_path(pv)
        if path is None:
            uid = claim["metadata"]["uid"]
            path = self.state_dir / "pvc" / safe_name(namespace) / f"{safe_name(claim_name)}-{uid}"
        path.mkdir(parents=True, exist_ok=True)
        if (claim.get("status") or {}).get("phase") != "Bound":
            await self._mark_bound(base, claim)
        return path

    async def _mark_bound(self, path: str, claim: dict) -> None:
        """Stand in for the PV controller: report the claim Bound with its requested size."""
        spec = claim.get("spec") or {}
        storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
        status = {"phase": "Bound", "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                  "capacity": {"storage": storage}}
        with contextlib.suppress(Exception):  # a status nicety only
            await self.kube.patch(path + "/status", {"status": status})

    def pv_path(self, pv: dict) -> Path | None:
        """The host directory of a PersistentVolume, when its source is one we emulate."""
        spec = pv.get("spec") or {}
        if "csi" in spec:
            csi = spec["csi"]
            return self.csi_path(csi.get("driver", "csi"), csi["volumeHandle"])
        if "hostPath" in spec:
            return Path(spec["hostPath"]["path"])
        if "local" in spec:
            return Path(spec["local"]["path"])
        return self.state_dir / "pv" / safe_name(pv["metadata"]["name"])

    def csi_path(self, driver: str, handle: str) -> Path:
        """The directory standing in for a CSI volume."""
        return self.state_dir / "csi" / safe_name(driver) / safe_name(handle)

    async def prepare(self, pod: dict, pod_dir: Path) -> dict[str, Volume]:
        """Make every volume of `pod` exist on the host; `{volume name: Volume}`."""
        security = (pod["spec"].get("securityContext") or {})
        gid = security.get("fsGroup")
        out: dict[str, Volume] = {}
        for vol in pod["spec"].get("volumes") or []:
            name = vol["name"]
            files_dir = pod_dir / "volumes"
            if "emptyDir" in vol:
                path = files_dir / "empty-dir" / safe_name(name)
                fresh = not path.exists()
                path.mkdir(parents=True, exist_ok=True)
                if fresh:
                    os.chmod(path, 0o777)
                    fs_group_dir(path, gid)
                out[name] = Volume(path)
            elif "secret" in vol or "configMap" in vol or "projected" in vol \
                    or "downwardAPI" in vol:
                if "secret" in vol:
                    files = await self._source_files(pod, "Secret", vol["secret"], name)
                elif "configMap" in vol:
                    files = await self._source_files(pod, "ConfigMap", vol["configMap"], name)
                elif "projected" in vol:
                    files = await self._projected(pod, vol["projected"], name)
                else:
                    files = self._downward(pod, vol["downwardAPI"])
                kind = next(k for k in ("secret", "configMap", "projected", "downwardAPI")
                            if k in vol)
                path = files_dir / kind / safe_name(name)
                write_files(path, files, gid)
                out[name] = Volume(path, readonly=True)
            elif "persistentVolumeClaim" in vol:
                source = vol["persistentVolumeClaim"]
                path = await self._claim(pod, source["claimName"], name)
                fs_group_dir(path, gid)
                out[name] = Volume(path, readonly=bool(source.get("readOnly")))
            elif "csi" in vol:
                csi = vol["csi"]
                handle = (csi.get("volumeAttributes") or {}).get("volumeHandle") \
                    or f"{pod['metadata']['uid']}-{name}"
                path = self.csi_path(csi.get("driver", "csi"), handle)
                path.mkdir(parents=True, exist_ok=True)
                out[name] = Volume(path, readonly=bool(csi.get("readOnly")))
            elif "hostPath" in vol:
                path = Path(vol["hostPath"]["path"])
                if vol["hostPath"].get("type") == "DirectoryOrCreate":
                    path.mkdir(parents=True, exist_ok=True)
                if not path.exists():
                    raise VolumeNotReady(f'MountVolume.SetUp failed for volume "{name}" : '
                                         f"hostPath {path} does not exist")
                out[name] = Volume(path)
            else:  # nfs, iscsi, ...: an empty directory for the pod's lifetime
                path = files_dir / "other" / safe_name(name)
                path.mkdir(parents=True, exist_ok=True)
                out[name] = Volume(path)
        return out


def container_binds(container: dict, volumes: Mapping[str, Volume], env: Mapping[str, str]
                    ) -> list[Bind]:
    """The bind mounts for a container's `volumeMounts` (`subPath`/`subPathExpr` supported).

    Raises ValueError for a mount of an unknown volume or a sub path escaping its volume."""
    binds = []
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount["name"])
        if volume is None:
            raise ValueError(f"volume {mount['name']!r} not found in the pod")
        sub = mount.get("subPath") or ""
        if mount.get("subPathExpr"):
            sub = expand(mount["subPathExpr"], env)
        sub = posixpath.normpath(sub) if sub else ""
        if sub.startswith("..") or sub.startswith("/"):
            raise ValueError(f"subPath {sub!r} must be a relative path inside the volume")
        source = volume.path / sub if sub and sub != "." else volume.path
        binds.append(Bind(str(source), mount["mountPath"],
                          readonly=volume.readonly or bool(mount.get("readOnly"))))
    return binds
