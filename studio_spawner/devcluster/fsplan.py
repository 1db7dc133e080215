"""Plan a container's filesystem: which overlays and bind mounts the start helper makes.

Pure functions (the host filesystem is only read through `exists`/`isdir` callables) so they
are unit-tested without namespaces. The helper (`container_exec.py`) carries the plan out.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

#: top-level paths never overlaid: the helper owns /dev, the kernel owns /proc and /sys
SPECIAL = ("/dev", "/proc", "/sys")


@dataclass(frozen=True)
class Bind:
    """A bind mount of a host path at a container path."""

    source: str
    target: str
    readonly: bool = False

    def to_json(self) -> dict:
        return {"source": self.source, "target": self.target, "readonly": self.readonly}


@dataclass(frozen=True)
class Overlay:
    """An overlay at `target`: `lower` layers (first wins) plus a private writable upper layer."""

    target: str
    lower: tuple[str, ...]
    upper: str
    work: str

    def to_json(self) -> dict:
        return {"target": self.target, "lower": list(self.lower), "upper": self.upper,
                "work": self.work}


@dataclass
class FsPlan:
    """Everything the helper does to the filesystem, in order."""

    host_mkdirs: list[str]
    overlays: list[Overlay]
    binds: list[Bind]

    def to_json(self) -> dict:
        return {"host_mkdirs": self.host_mkdirs,
                "overlays": [o.to_json() for o in self.overlays],
                "binds": [b.to_json() for b in self.binds]}


def is_under(path: str, parent: str) -> bool:
    """True when `path` is `parent` or inside it."""
    return parent == "/" or path == parent or path.startswith(parent.rstrip("/") + "/")


def _special(path: str) -> bool:
    return any(is_under(path, s) for s in SPECIAL)


def _reduce(roots: Iterable[str]) -> list[str]:
    """Drop roots that lie inside another root (the outer overlay covers them)."""
    ordered = sorted(set(roots), key=lambda p: (p.count("/"), p))
    kept: list[str] = []
    for root in ordered:
        if not any(is_under(root, k) for k in kept):
            kept.append(root)
    return kept


def plan_filesystem(
    image_dir: str | os.PathLike | None,
    binds: list[Bind],
    scratch: str | os.PathLike,
    exists: Callable[[str], bool] = os.path.lexists,
    isdir: Callable[[str], bool] = os.path.isdir,
) -> FsPlan:
    """Plan overlays so that the image's files appear and every bind target can be created.

    - each top-level directory of the image becomes an overlay root (image over host);
    - a bind target that exists neither on the host nor in the image gets an overlay at its
      nearest existing ancestor, so its mount point is created in a private upper layer;
    - a missing top-level directory is created (empty) on the host as the overlay's lower layer;
    - an overlay root that contains `scratch` (where upper layers live) cannot be an overlay:
      missing mount points under it are created directly on the host instead.
    """
    scratch = str(scratch)
    image = str(image_dir) if image_dir else None
    host_mkdirs: set[str] = set()
    roots: set[str] = set()

    def in_image(path: str) -> bool:
        return bool(image) and exists(image + path)

    if image and isdir(image):
        for entry in sorted(os.listdir(image)):
            top = "/" + entry
            if _special(top) or not isdir(image + top):
                continue
            roots.add(top)
            if not exists(top):
                host_mkdirs.add(top)

    direct: list[str] = []
    for bind in binds:
        target = posixpath.normpath(bind.target)
        if _special(target) or exists(target) or in_image(target):
            continue
        ancestor = posixpath.dirname(target)
        while ancestor != "/" and not (exists(ancestor) or in_image(ancestor)):
            ancestor = posixpath.dirname(ancestor)
        if ancestor == "/":
            ancestor = "/" + target.strip("/").split("/", 1)[0]
            host_mkdirs.add(ancestor)
        roots.add(ancestor)
        direct.append(target)

    overlays = []
    for index, root in enumerate(_reduce(roots)):
        if is_under(scratch, root) or _special(root):
            host_mkdirs.update(posixpath.dirname(t) for t in direct if is_under(t, root))
            continue
        lower = [image + root] if image and isdir(image + root) else []
        lower.append(root)
        base = Path(scratch) / f"layer{index}"
        overlays.append(Overlay(root, tuple(lower), str(base / "upper"), str(base / "work")))

    ordered = sorted(binds, key=lambda b: posixpath.normpath(b.target).count("/"))
    return FsPlan(sorted(host_mkdirs), overlays, ordered)
