"""OCI images without a container engine: reproducible layers, a config, and a registry push."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..controlplane import DevClusterError
from ..registry import Registry

EPOCH = 1700000000  # every file time in a layer (reproducible builds)
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"


@dataclass(frozen=True)
class Blob:
    """A content-addressed file in the blob store."""

    path: Path
    digest: str
    size: int
    diff_id: str = ""  # sha256 of the uncompressed tar, for layers


class BlobStore:
    """Layers and configs by digest under one directory, shared by every build."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def add_bytes(self, data: bytes) -> Blob:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = self.root / digest.replace(":", "-")
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return Blob(path, digest, len(data))

    def layer_from_tar(self, tar_path: Path) -> Blob:
        """Gzip an uncompressed layer tar (deterministically) into the store."""
        diff = hashlib.sha256()
        tmp = self.root / f"layer-{os.getpid()}.tmp"
        with open(tar_path, "rb") as src, open(tmp, "wb") as raw, \
                gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=3) as out:
            while chunk := src.read(1 << 20):
                diff.update(chunk)
                out.write(chunk)
        data_digest = hashlib.sha256()
        with open(tmp, "rb") as f:
            while chunk := f.read(1 << 20):
                data_digest.update(chunk)
        digest = "sha256:" + data_digest.hexdigest()
        path = self.root / digest.replace(":", "-")
        tmp.replace(path)
        return Blob(path, digest, path.stat().st_size, "sha256:" + diff.hexdigest())


def tar_directory(source: Path, out: Path, prefix: str = "",
                  owners: Mapping[str, tuple[int, int]] | None = None) -> Path:
    """Write ``source`` as an uncompressed layer tar: sorted, fixed times, files' owners kept.

    ``owners`` overrides the owner of paths (relative to the layer root) and everything below.
    """
    owners = dict(owners or {})

    def owner(rel: str, st: os.stat_result) -> tuple[int, int]:
        for path, ids in owners.items():
            if rel == path or rel.startswith(path + "/"):
                return ids
        return st.st_uid, st.st_gid

    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for directory, dirs, files in os.walk(source):
            dirs.sort()
            for entry in [*sorted(dirs), *sorted(files)]:
                full = Path(directory, entry)
                rel = str(Path(prefix, full.relative_to(source)))
                info = tar.gettarinfo(str(full), arcname=rel)
                info.mtime = min(int(info.mtime), EPOCH)
                info.uid, info.gid = owner(rel, full.lstat())
                info.uname = info.gname = ""
                if info.isreg():
                    with open(full, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return out


@dataclass
class Image:
    """Layers (bottom first) and the image config (Entrypoint, Cmd, Env, User, …)."""

    layers: list[Blob]
    config: dict[str, Any]
    labels: dict[str, str] = field(default_factory=dict)

    def config_blob(self, store: BlobStore) -> Blob:
        body = {
            "created": "2023-11-14T22:13:20Z", "architecture": "amd64", "os": "linux",
            "config": {**self.config, "Labels": self.labels},
            "rootfs": {"type": "layers", "diff_ids": [b.diff_id for b in self.layers]},
            "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "devcluster"}
                        for _ in self.layers],
        }
        return store.add_bytes(json.dumps(body, sort_keys=True).encode())

    def manifest(self, store: BlobStore) -> bytes:
        config = self.config_blob(store)
        return json.dumps({
            "schemaVersion": 2, "mediaType": MANIFEST,
            "config": {"mediaType": CONFIG, "digest": config.digest, "size": config.size},
            "layers": [{"mediaType": LAYER, "digest": b.digest, "size": b.size}
                       for b in self.layers],
        }, sort_keys=True).encode()

    def digest(self, store: BlobStore) -> str:
        return "sha256:" + hashlib.sha256(self.manifest(store)).hexdigest()

    def push(self, store: BlobStore, registry: Registry, repository: str,
             tags: Iterable[str]) -> str:
        """Upload missing blobs, then the manifest under each tag; return the digest."""
        config = self.config_blob(store)
        for blob in [*self.layers, config]:
            _upload(registry, repository, blob)
        manifest = self.manifest(store)
        for tag in tags:
            status, _, body = registry.request(
                "PUT", f"/v2/{repository}/manifests/{tag}", manifest,
                {"Content-Type": MANIFEST})
            if status != 201:
                raise DevClusterError(f"push {repository}:{tag}: {status} {body[:300]!r}")
        return "sha256:" + hashlib.sha256(manifest).hexdigest()


def _upload(registry: Registry, repository: str, blob: Blob) -> None:
    status, _, _ = registry.request("HEAD", f"/v2/{repository}/blobs/{blob.digest}")
    if status == 200:
        return
    status, headers, body = registry.request("POST", f"/v2/{repository}/blobs/uploads/", b"")
    if status != 202:
        raise DevClusterError(f"upload to {repository}: {status} {body[:300]!r}")
    location = headers["Location"]
    if location.startswith("http"):
        location = "/" + location.split("/", 3)[3]
    separator = "&" if "?" in location else "?"
    status, _, body = registry.request(
        "PUT", f"{location}{separator}digest={blob.digest}", blob.path.read_bytes(),
        {"Content-Type": "application/octet-stream"})
    if status != 201:
        raise DevClusterError(f"upload {blob.digest} to {repository}: {status} {body[:300]!r}")
