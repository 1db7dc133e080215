"""Real conda packages and a local channel, made from directory trees (PyPI wheels installed by
pip, scripts we write), and installed into image prefixes with py-rattler."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

PLACEHOLDER = "/opt/anaconda1anaconda2anaconda3" + "_placehold" * 20
PLATFORM = "linux-64"


@dataclass
class Package:
    """A conda package: files under the prefix (bytes or symlinks) and its metadata."""

    name: str
    version: str
    files: dict[str, bytes | Path] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    executable: set[str] = field(default_factory=set)
    depends: list[str] = field(default_factory=list)
    build: str = "0"

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}-{self.build}.tar.bz2"


def package_from_tree(name: str, version: str, root: Path, depends: list[str],
                      staged_prefix: str | None = None) -> Package:
    """Every file under ``root``; text mentioning ``staged_prefix`` gets the prefix placeholder."""
    pkg = Package(name, version, depends=list(depends))
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        for entry in sorted([*files, *(d for d in dirs if Path(directory, d).is_symlink())]):
            full = Path(directory, entry)
            rel = str(full.relative_to(root))
            if full.is_symlink():
                pkg.links[rel] = os.readlink(full)
                continue
            if rel.endswith(".pyc") or "/__pycache__/" in f"/{rel}":
                continue
            if full.stat().st_mode & stat.S_IXUSR:
                pkg.executable.add(rel)
            data = full.read_bytes()
            if staged_prefix and staged_prefix.encode() in data and b"\0" not in data[:8000]:
                data = data.replace(staged_prefix.encode(), PLACEHOLDER.encode())
            pkg.files[rel] = data if PLACEHOLDER.encode() in data else full
    return pkg


def _tar_add(tar: tarfile.TarFile, path: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(path)
    info.size, info.mode, info.mtime = len(data), mode, 1700000000
    tar.addfile(info, io.BytesIO(data))


def write_package(channel: Path, pkg: Package) -> Path:
    """Write ``pkg`` as ``<channel>/linux-64/<name>-<version>-<build>.tar.bz2``."""
    out = channel / PLATFORM / pkg.filename
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    with tarfile.open(out, "w:bz2", compresslevel=1) as tar:
        for rel, content in sorted(pkg.files.items()):
            data = content if isinstance(content, bytes) else content.read_bytes()
            entry = {"_path": rel, "path_type": "hardlink",
                     "sha256": hashlib.sha256(data).hexdigest(), "size_in_bytes": len(data)}
            if PLACEHOLDER.encode() in data:
                entry.update(prefix_placeholder=PLACEHOLDER, file_mode="text")
            paths.append(entry)
            _tar_add(tar, rel, data, 0o755 if rel in pkg.executable else 0o644)
        for rel, target in sorted(pkg.links.items()):
            info = tarfile.TarInfo(rel)
            info.type, info.linkname, info.mtime = tarfile.SYMTYPE, target, 1700000000
            tar.addfile(info)
            paths.append({"_path": rel, "path_type": "softlink",
                          "sha256": hashlib.sha256(target.encode()).hexdigest(),
                          "size_in_bytes": len(target)})
        index = {"name": pkg.name, "version": pkg.version, "build": pkg.build,
                 "build_number": 0, "depends": pkg.depends, "subdir": PLATFORM,
                 "platform": "linux", "arch": "x86_64", "timestamp": 1700000000000}
        prefixed = [p for p in paths if "prefix_placeholder" in p]
        _tar_add(tar, "info/index.json", json.dumps(index).encode())
        _tar_add(tar, "info/paths.json", json.dumps({"paths_version": 1, "paths": paths}).encode())
        _tar_add(tar, "info/files", "".join(p["_path"] + "\n" for p in paths).encode())
        if prefixed:
            _tar_add(tar, "info/has_prefix", "".join(
                f"{PLACEHOLDER} text {p['_path']}\n" for p in prefixed).encode())
    return out


def index_channel(channel: Path) -> None:
    """Write repodata.json for every subdir (noarch is required, even empty)."""
    from rattler.index import index_fs  # py-rattler

    (channel / "noarch").mkdir(parents=True, exist_ok=True)
    asyncio.run(index_fs(channel, target_platform=None))


async def _install(channel: Path, specs: list[str], prefix: Path) -> None:
    import rattler

    records = await rattler.solve(sources=[rattler.Channel(channel.resolve().as_uri())],
                                  specs=specs, platforms=[PLATFORM, "noarch"])
    await rattler.install(records, target_prefix=prefix)


def install(channel: Path, specs: list[str], prefix: Path) -> None:
    """Solve ``specs`` against the channel and install them at ``prefix`` (absolute path)."""
    asyncio.run(_install(channel, specs, prefix))
