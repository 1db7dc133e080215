"""Real conda packages for tests: written with tarfile (as conda-build lays them out), indexed
with py-rattler, and served over HTTP like a remote channel."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import http.server
import io
import json
import os
import platform
import sys
import sysconfig
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rattler.index import index_fs

PLACEHOLDER = "/opt/anaconda1anaconda2anaconda3" + "_placehold" * 20
PY = f"python{sys.version_info[0]}.{sys.version_info[1]}"


@dataclass
class PkgFile:
    """One file of a package: bytes, or a symlink; optionally with a prefix placeholder."""

    data: bytes = b""
    mode: str | None = None  # "text" / "binary": has the placeholder
    perm: int = 0o644
    link: str | None = None


@dataclass
class Package:
    name: str
    version: str
    files: dict[str, PkgFile]
    depends: list[str] = field(default_factory=list)
    noarch: str | None = None
    entry_points: list[str] = field(default_factory=list)


def _add(tf: tarfile.TarFile, name: str, f: PkgFile) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = int(time.time())
    if f.link is not None:
        info.type = tarfile.SYMTYPE
        info.linkname = f.link
        tf.addfile(info)
        return
    info.size = len(f.data)
    info.mode = f.perm
    tf.addfile(info, io.BytesIO(f.data))


def _paths_entry(path: str, f: PkgFile) -> dict:
    if f.link is not None:
        digest = hashlib.sha256(f.link.encode()).hexdigest()
        return {
            "_path": path,
            "path_type": "softlink",
            "sha256": digest,
            "size_in_bytes": len(f.link),
        }
    entry = {
        "_path": path,
        "path_type": "hardlink",
        "sha256": hashlib.sha256(f.data).hexdigest(),
        "size_in_bytes": len(f.data),
    }
    if f.mode:
        entry.update(prefix_placeholder=PLACEHOLDER, file_mode=f.mode)
    return entry


def build_package(channel: Path, pkg: Package) -> Path:
    """Write ``pkg`` as a ``.tar.bz2`` conda package into the channel."""
    subdir = "noarch" if pkg.noarch else "linux-64"
    out = channel / subdir
    out.mkdir(parents=True, exist_ok=True)
    index = {
        "name": pkg.name,
        "version": pkg.version,
        "build": "0",
        "build_number": 0,
        "depends": pkg.depends,
        "subdir": subdir,
        "timestamp": int(time.time() * 1000),
    }
    if pkg.noarch:
        index["noarch"] = pkg.noarch
    else:
        index.update(platform="linux", arch="x86_64")
    info = {
        "info/index.json": json.dumps(index),
        "info/paths.json": json.dumps(
            {"paths_version": 1, "paths": [_paths_entry(p, f) for p, f in pkg.files.items()]}
        ),
        "info/files": "".join(p + "\n" for p in pkg.files),
    }
    prefixed = [(p, f) for p, f in pkg.files.items() if f.mode]
    if prefixed:
        info["info/has_prefix"] = "".join(f"{PLACEHOLDER} {f.mode} {p}\n" for p, f in prefixed)
    if pkg.entry_points:
        info["info/link.json"] = json.dumps(
            {
                "package_metadata_version": 1,
                "noarch": {"type": "python", "entry_points": pkg.entry_points},
            }
        )
    path = out / f"{pkg.name}-{pkg.version}-0.tar.bz2"
    with tarfile.open(path, "w:bz2") as tf:
        for p, f in pkg.files.items():
            _add(tf, p, f)
        for p, text in info.items():
            _add(tf, p, PkgFile(text.encode()))
    return path


def host_python_package() -> Package:
    """``python``: a venv-shaped tree whose interpreter is the host's (reports its own prefix)."""
    real = os.path.realpath(
        sys._base_executable if hasattr(sys, "_base_executable") else sys.executable
    )
    cfg = (
        f"home = {os.path.dirname(real)}\ninclude-system-site-packages = false\n"
        f"version = {platform.python_version()}\n"
    )
    return Package(
        "python",
        platform.python_version(),
        {
            "pyvenv.cfg": PkgFile(cfg.encode()),
            f"bin/{PY}": PkgFile(link=real),
            "bin/python": PkgFile(link=PY),
            "bin/python3": PkgFile(link=PY),
            f"lib/{PY}/site-packages/README.txt": PkgFile(b"site-packages\n"),
        },
    )


def ipykernel_package() -> Package:
    """``ipykernel``: a .pth that lets the env import the host's ipykernel (and pip)."""
    host_site = sysconfig.get_paths()["purelib"]
    return Package(
        "ipykernel",
        "6.99.0",
        {
            f"lib/{PY}/site-packages/studio_test_host.pth": PkgFile((host_site + "\n").encode()),
        },
        depends=["python"],
    )


def index_channel(root: Path) -> Path:
    """Write repodata.json for every subdir of a channel directory (noarch always exists)."""
    (root / "noarch").mkdir(parents=True, exist_ok=True)
    asyncio.run(index_fs(root))
    return root


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Always 200: http.server's bare 304 (no ETag or Last-Modified) makes rattler's sharded
    repodata client fail (conda/rattler#2719); real channel servers send those headers."""

    def send_head(self):  # type: ignore[no-untyped-def]
        del self.headers["If-Modified-Since"]
        return super().send_head()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib name)
        pass


@contextlib.contextmanager
def serve_directory(root: Path) -> Iterator[str]:
    """Serve a directory over HTTP on loopback (threaded); yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def library_package(name: str, version: str = "1.0", depends: tuple[str, ...] = (),
                    size: int = 0) -> Package:
    """A package with one data file of `size` bytes (incompressible: extraction costs time)."""
    payload = os.urandom(size) if size else f"{name} {version}\n".encode()
    return Package(name, version, {f"share/{name}/data.bin": PkgFile(payload)},
                   depends=list(depends))


def numbered_channel(root: Path, count: int, size: int = 0) -> list[str]:
    """A channel of `count` packages lib000…, each depending on the one before; their names."""
    names = [f"lib{i:03d}" for i in range(count)]
    for index, name in enumerate(names):
        depends = (names[index - 1],) if index else ()
        build_package(root, library_package(name, depends=depends, size=size))
    index_channel(root)
    return names


def write_wheel(directory: Path, name: str, version: str, code: str) -> Path:
    """A pure-Python wheel (module `name` with `code`) that pip installs from a local dir."""
    import base64
    import zipfile

    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": code.encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
                         b"Tag: py3-none-any\n",
    }

    def record_line(path: str, data: bytes) -> str:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        return f"{path},sha256={digest},{len(data)}\n"

    record = "".join(record_line(p, d) for p, d in files.items()) + f"{dist}/RECORD,,\n"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for p, data in {**files, f"{dist}/RECORD": record.encode()}.items():
            wheel.writestr(p, data)
    return path
