"""The devcluster's images, built here from Debian packages, PyPI wheels and our own files.

- ``pause``: the pod sandbox (our static ``pause``).
- ``notebook``: shaped like Jupyter's docker-stacks: user ``jovyan`` (1000:100), ``HOME``
  ``/home/jovyan``, ``tini -g -- start.sh`` with start hooks, JupyterLab and
  ``jupyterhub-singleuser`` in a conda-format base env ``/opt/conda``, and two image envs under
  ``/opt/conda/envs`` (``python-data`` with ipykernel, ``tools`` without Python), all real conda
  packages installed with py-rattler; ``studio-conda-install`` builds an ``environment.yml``.
- ``tool``: no Jupyter: its command is ``python3 -m http.server $CONNECT_TOOL_PORT`` (on
  loopback, behind the studio's proxy); ``/opt/tool/connect_tool.py`` (tornado) is a WebSocket
  and streaming test tool.
- ``nopython``: busybox only (and ``/srv/index.html``), for the start-up program's POSIX sh path
  and tools without any runtime.
- ``studio-connect``: the tool studios' authenticating proxy (``connect/``), ``FROM scratch``.

Every piece is cached by the hash of what goes into it; an unchanged rebuild takes seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..controlplane import DevClusterError
from . import conda
from .oci import Blob, BlobStore, Image, tar_directory

HERE = Path(__file__).resolve().parent
FILES = HERE / "files"
SUITE = "bookworm"
BASE_PACKAGES = ["python3", "tini", "ca-certificates", "procps", "less"]
PY = "python3.11"
SITE = f"lib/{PY}/site-packages"
PATH = "/opt/conda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TOOL_TORNADO = "tornado==6.6.1"
NOTEBOOK_USER = {"User": "1000:100", "WorkingDir": "/home/jovyan"}


def _key(*parts: object) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.read_bytes() if isinstance(part, Path) else repr(part).encode())
    return digest.hexdigest()[:16]


class Builder:
    """Builds layers once per content key into ``cache`` and assembles the images."""

    def __init__(self, cache: Path, bin_dir: Path, log: Callable[[str], None] = print) -> None:
        self.cache = cache
        self.bin_dir = bin_dir
        self.store = BlobStore(cache / "blobs")
        self.log = log

    def _cached_layer(self, name: str, key: str, make: Callable[[Path], Path]) -> Blob:
        """The layer ``name`` for ``key``: from the cache, or made by ``make(workdir)``."""
        record = self.cache / f"{name}-{key}.json"
        if record.exists():
            saved = json.loads(record.read_text())
            path = self.store.root / saved["digest"].replace(":", "-")
            if path.exists():
                return Blob(path, saved["digest"], saved["size"], saved["diff_id"])
        self.log(f"images: building layer {name} ({key})…")
        with tempfile.TemporaryDirectory(prefix=f"devcluster-{name}-",
                                         dir=self.cache) as work:
            blob = self.store.layer_from_tar(make(Path(work)))
        record.write_text(json.dumps({"digest": blob.digest, "size": blob.size,
                                      "diff_id": blob.diff_id}))
        return blob

    # -- layers

    def debian_base(self) -> Blob:
        """Debian (minbase) with Python, tini and user jovyan (1000:100), from mmdebstrap."""
        hook = ('chroot "$1" useradd --create-home --uid 1000 --gid 100 --shell /bin/bash '
                'jovyan')
        argv = ["mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar",
                f"--include={','.join(BASE_PACKAGES)}",
                "--dpkgopt=path-exclude=/usr/share/doc/*",
                "--dpkgopt=path-exclude=/usr/share/man/*",
                "--dpkgopt=path-exclude=/usr/share/locale/*",
                f"--customize-hook={hook}", SUITE]

        def make(work: Path) -> Path:
            out = work / "base.tar"
            env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
            proc = subprocess.run([*argv, str(out)], capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise DevClusterError(f"mmdebstrap failed:\n{proc.stderr[-3000:]}")
            return out

        return self._cached_layer("debian", _key(argv), make)

    def busybox(self) -> Blob:
        def make(work: Path) -> Path:
            root = work / "root"
            for d in ("bin", "etc", "tmp", "home/jovyan"):
                (root / d).mkdir(parents=True)
            (root / "tmp").chmod(0o1777)
            shutil.copy2(shutil.which("busybox") or "/bin/busybox", root / "bin" / "busybox")
            applets = subprocess.run([str(root / "bin/busybox"), "--list"], text=True,
                                     capture_output=True, check=True).stdout.split()
            for applet in applets:
                if applet != "busybox":
                    (root / "bin" / applet).symlink_to("busybox")
            (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                             "jovyan:x:1000:100::/home/jovyan:/bin/sh\n")
            (root / "etc/group").write_text("root:x:0:\nusers:x:100:jovyan\n")
            (root / "srv").mkdir()
            (root / "srv/index.html").write_text("<h1>static tool</h1>\n")
            return tar_directory(root, work / "busybox.tar", owners={"home/jovyan": (1000, 100)})

        busybox = Path(shutil.which("busybox") or "/bin/busybox")
        return self._cached_layer("busybox", _key(busybox, "srv"), make)

    def tool_files(self) -> Blob:
        """``/opt/tool``: the test tool and tornado for it."""
        def make(work: Path) -> Path:
            root = work / "root"
            self._pip(work / "prefix", None, [TOOL_TORNADO])
            (root / "opt/tool").mkdir(parents=True)
            shutil.move(str(work / "prefix" / SITE), str(root / "opt/tool/lib"))
            shutil.copy2(FILES / "connect_tool.py", root / "opt/tool/connect_tool.py")
            return tar_directory(root, work / "tool.tar")

        return self._cached_layer("tool", _key(FILES / "connect_tool.py", TOOL_TORNADO), make)

    def connect(self) -> Blob:
        """The studio-connect binary, built by connect/build.sh."""
        proc = subprocess.run(["bash", str(HERE.parents[1] / "connect" / "build.sh")],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise DevClusterError(f"connect/build.sh failed:\n{proc.stderr[-3000:]}")
        return self._binary_layer("connect", Path(proc.stdout.strip().splitlines()[-1]),
                                  "studio-connect")

    def pause(self) -> Blob:
        return self._binary_layer("pause", self.bin_dir / "pause", "pause")

    def _binary_layer(self, name: str, binary: Path, target: str) -> Blob:
        """A layer holding one static binary at ``/<target>``."""
        def make(work: Path) -> Path:
            root = work / "root"
            root.mkdir()
            shutil.copy2(binary, root / target)
            return tar_directory(root, work / f"{name}.tar")

        return self._cached_layer(name, _key(binary), make)

    def notebook_envs(self) -> Blob:
        """``/opt/conda`` (base env and image envs) and the start scripts, one layer."""
        channel = self.channel()

        def make(work: Path) -> Path:
            root = work / "root"
            (root / "opt").mkdir(parents=True)
            # Install at the image's real prefix: /opt is our staging dir in a private namespace.
            script = " && ".join([
                f"mount --bind {root / 'opt'} /opt",
                f"{sys.executable} -m devcluster.images.install_env {channel} /opt/conda "
                "python studio-jupyter",
                f"{sys.executable} -m devcluster.images.install_env {channel} "
                "/opt/conda/envs/python-data python ipykernel studio-hello",
                f"{sys.executable} -m devcluster.images.install_env {channel} "
                "/opt/conda/envs/tools studio-tools"])
            proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "--",
                                   "sh", "-c", script], capture_output=True, text=True,
                                  cwd=HERE.parents[1])
            if proc.returncode != 0:
                raise DevClusterError(f"installing the image envs failed:\n{proc.stderr[-3000:]}")
            bin_dir = root / "usr/local/bin"
            (bin_dir / "start-notebook.d").mkdir(parents=True)
            for name in ("start.sh", "start-notebook.sh"):
                shutil.copy2(FILES / name, bin_dir / name)
                (bin_dir / name).chmod(0o755)
            shutil.copy2(FILES / "10-hello.sh", bin_dir / "start-notebook.d" / "10-hello.sh")
            installer = HERE.parents[1] / "images" / "notebook" / "studio-conda-install"
            if installer.exists():
                shutil.copy2(installer, bin_dir / "studio-conda-install")
                (bin_dir / "studio-conda-install").chmod(0o755)
            return tar_directory(root, work / "notebook.tar",
                                 owners={"opt/conda": (1000, 100)})

        installer = HERE.parents[1] / "images" / "notebook" / "studio-conda-install"
        extra = [installer] if installer.exists() else []
        return self._cached_layer("notebook", _key(channel.name, *extra), make)

    def channel(self) -> Path:
        """The conda channel the notebook image is installed from (served to pods too)."""
        lock = HERE / "notebook-lock.txt"
        key = _key(lock, *sorted(FILES.iterdir()), Path(conda.__file__))
        channel = self.cache / f"channel-{key}"
        if (channel / "linux-64" / "repodata.json").exists():
            return channel
        self.log(f"images: building the conda channel {channel.name}…")
        tmp = Path(tempfile.mkdtemp(prefix="channel-", dir=self.cache))
        try:
            self._write_channel(tmp / "channel", tmp / "pip")
            (tmp / "channel").rename(channel)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return channel

    def _write_channel(self, channel: Path, work: Path) -> None:
        self._pip(work / "jupyter", HERE / "notebook-lock.txt")
        self._pip(work / "ipykernel", None, ["ipykernel==7.4.0"])
        packages = [
            conda.Package("python", "3.11.2", links={
                f"bin/{PY}": f"/usr/bin/{PY}", "bin/python3": PY, "bin/python": PY},
                files={"pyvenv.cfg": b"home = /usr/bin\ninclude-system-site-packages = false"
                                     b"\nversion = 3.11.2\n",
                       f"{SITE}/.keep": b""}),
            conda.package_from_tree("studio-jupyter", "2026.11", work / "jupyter",
                                    ["python 3.11.*"], str(work / "jupyter")),
            conda.package_from_tree("ipykernel", "7.4.0", work / "ipykernel",
                                    ["python 3.11.*"], str(work / "ipykernel")),
            conda.Package("studio-hello", "1.0", depends=["python"],
                          files={"bin/studio-hello": (FILES / "studio-hello").read_bytes()},
                          executable={"bin/studio-hello"}),
            conda.Package("studio-tools", "1.0",
                          files={"bin/studio-tools": (FILES / "studio-tools.sh").read_bytes(),
                                 "etc/studio-tools.conf":
                                     (FILES / "studio-tools.conf").read_bytes()},
                          executable={"bin/studio-tools"}),
        ]
        for package in packages:
            conda.write_package(channel, package)
        conda.index_channel(channel)

    def _pip(self, prefix: Path, lock: Path | None, requirements: list[str] = ()) -> None:
        """pip-install wheels into ``prefix`` laid out as a conda prefix (bin/, lib/python3.11).

        The host's Python 3.11 and glibc match the image's Debian, so its wheels fit.
        """
        target = prefix / SITE
        args = ["-r", str(lock), "--no-deps"] if lock else list(requirements)
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile",
             "--disable-pip-version-check", "--only-binary=:all:", "--target", str(target),
             *args],
            capture_output=True, text=True)
        if proc.returncode != 0:
            raise DevClusterError(f"pip install failed:\n{proc.stderr[-3000:]}")
        scripts = target / "bin"
        if scripts.is_dir():  # console scripts: point them at the env's python via the prefix
            scripts.rename(prefix / "bin")
            for script in (prefix / "bin").iterdir():
                text = script.read_bytes()
                if text.startswith(b"#!"):
                    first, _, rest = text.partition(b"\n")
                    script.write_bytes(f"#!{prefix}/bin/python\n".encode() + rest)
        for extra in ("share", "etc"):  # data files (jupyter labextensions, configs)
            if (target / extra).is_dir():
                shutil.move(str(target / extra), str(prefix / extra))

    # -- images

    def images(self) -> dict[str, Image]:
        """Every devcluster image by repository name (tag ``1``)."""
        debian = self.debian_base()
        return {
            "pause": Image([self.pause()], {"Entrypoint": ["/pause"], "User": "65535:65535"}),
            "notebook": Image([debian, self.notebook_envs()], {
                **NOTEBOOK_USER,
                "Env": [f"PATH={PATH}", "HOME=/home/jovyan", "SHELL=/bin/bash",
                        "CONDA_DIR=/opt/conda", "LANG=C.UTF-8"],
                "Entrypoint": ["tini", "-g", "--", "start.sh"],
                "Cmd": ["start-notebook.sh"], "ExposedPorts": {"8888/tcp": {}}}),
            "tool": Image([debian, self.tool_files()], {
                **NOTEBOOK_USER,
                "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/home/jovyan",
                        "PYTHONPATH=/opt/tool/lib"],
                "Cmd": ["sh", "-c",
                        'exec python3 -m http.server "$CONNECT_TOOL_PORT" --bind 127.0.0.1']}),
            "studio-connect": Image([self.connect()], {
                "Entrypoint": ["/studio-connect"], "User": "65534:65534"}),
            "nopython": Image([self.busybox()], {
                **NOTEBOOK_USER, "Env": ["PATH=/bin", "HOME=/home/jovyan"],
                "Cmd": ["sh", "-c", 'exec httpd -f -p "${CONNECT_TOOL_PORT:-8888}"']}),
        }
