"""The devcluster's "image registry": image references mapped to local directories.

An images file (YAML or JSON) maps references to directories whose contents are overlaid on
the host's root filesystem inside a container::

    images:
      quay.io/jupyter/scipy-notebook: ./scipy        # this repository, any tag
      "busybox:1.36": {}                             # exact reference, host root only
      "demo/*":                                      # fnmatch pattern
        path: /srv/images/demo
        env: {PATH: "/opt/demo/bin:/usr/local/bin:/usr/bin:/bin"}
        workingDir: /home/jovyan
        command: ["/bin/sh", "-c"]
        args: ["echo hi"]
        user: 1000
      "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/*":
        path: ./team
        pullAuth: {username: AWS}   # a private registry: the pod needs a pull secret for it

Lookup order: exact reference, then the repository (any tag or digest), then patterns.
Relative paths are relative to the images file. The file is re-read when it changes.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ENV_VAR = "STUDIO_DEVCLUSTER_IMAGES"


@dataclass(frozen=True)
class Image:
    """A resolved image: an optional root overlay directory plus image config defaults."""

    ref: str
    path: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    user: int | None = None
    pull_username: str | None = None

    @property
    def registry(self) -> str:
        """The registry host of the reference (docker.io when it has none)."""
        first, _, rest = self.ref.partition("/")
        return first if rest and ("." in first or ":" in first or first == "localhost") \
            else "docker.io"

    @property
    def image_id(self) -> str:
        """A stable pseudo digest, shown as the container status `imageID`."""
        digest = hashlib.sha256(f"{self.ref}\0{self.path}".encode()).hexdigest()
        return f"{repository(self.ref)}@sha256:{digest}"


def normalize(ref: str) -> str:
    """Normalize a reference the way Docker does: drop `docker.io/library/`, default `:latest`."""
    ref = ref.strip()
    for prefix in ("docker.io/library/", "index.docker.io/library/", "docker.io/",
                   "index.docker.io/"):
        if ref.startswith(prefix):
            ref = ref[len(prefix):]
            break
    if ref.startswith("library/"):
        ref = ref[len("library/"):]
    if "@" not in ref and ":" not in ref.rsplit("/", 1)[-1]:
        ref += ":latest"
    return ref


def repository(ref: str) -> str:
    """The repository part of a reference (no tag, no digest)."""
    ref = ref.split("@", 1)[0]
    head, _, last = ref.rpartition("/")
    last = last.split(":", 1)[0]
    return f"{head}/{last}" if head else last


def _entry(ref: str, value: Any, base: Path) -> Image:
    if value is None or isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, dict):
        raise ValueError(f"image {ref!r}: expected a path or a mapping, got {value!r}")
    path = value.get("path")
    resolved = (base / os.path.expanduser(path)).resolve() if path else None
    user = value.get("user")
    return Image(
        ref=ref,
        path=resolved,
        env={str(k): str(v) for k, v in (value.get("env") or {}).items()},
        working_dir=value.get("workingDir"),
        command=list(value["command"]) if value.get("command") else None,
        args=list(value["args"]) if value.get("args") else None,
        user=int(user) if user is not None else None,
        pull_username=(value.get("pullAuth") or {}).get("username"),
    )


def parse_images(data: Any, base: Path) -> dict[str, Image]:
    """Parse the loaded images document into `{key: Image}` (keys as written)."""
    if data is None:
        return {}
    if isinstance(data, dict) and isinstance(data.get("images"), dict):
        data = data["images"]
    if not isinstance(data, dict):
        raise ValueError("images file: expected a mapping of image reference -> directory")
    return {str(key): _entry(str(key), value, base) for key, value in data.items()}


class ImageRegistry:
    """Resolve image references to `Image` entries from an images file (or a dict)."""

    def __init__(self, source: str | os.PathLike | dict | None = None):
        if source is None:
            source = os.environ.get(ENV_VAR)
        self._file: Path | None = None
        self._mtime: float | None = None
        self._images: dict[str, Image] = {}
        if isinstance(source, dict):
            self._images = parse_images(source, Path.cwd())
        elif source:
            self._file = Path(source)
            self._reload()

    def _reload(self) -> None:
        if self._file is None:
            return
        try:
            mtime = self._file.stat().st_mtime
        except FileNotFoundError:
            self._images, self._mtime = {}, None
            return
        if mtime != self._mtime:
            data = yaml.safe_load(self._file.read_text())
            self._images = parse_images(data, self._file.parent)
            self._mtime = mtime

    def lookup(self, ref: str) -> Image | None:
        """The image for `ref`, or None when the registry does not know it."""
        self._reload()
        wanted = normalize(ref)
        by_norm = {normalize(k): v for k, v in self._images.items() if "*" not in k}
        if wanted in by_norm:
            return _with_ref(by_norm[wanted], ref)
        repo = repository(wanted)
        for key, image in self._images.items():
            if "*" in key:
                continue
            untagged = ":" not in key.rsplit("/", 1)[-1] and "@" not in key
            if untagged and repository(normalize(key)) == repo:
                return _with_ref(image, ref)
        for key, image in self._images.items():
            if "*" in key and (fnmatch.fnmatchcase(ref, key) or fnmatch.fnmatchcase(wanted, key)):
                return _with_ref(image, ref)
        return None


def _with_ref(image: Image, ref: str) -> Image:
    return Image(ref=ref, path=image.path, env=image.env, working_dir=image.working_dir,
                 command=image.command, args=image.args, user=image.user,
                 pull_username=image.pull_username)
