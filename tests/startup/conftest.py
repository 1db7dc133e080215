"""Fixtures for the start-up program: a local conda channel of real packages, image envs made
with py-rattler, and a runner that invokes the program exactly as the pod does."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import rattler  # test deps: py-rattler, jupyter_client, ipykernel, pyyaml

from studio_spawner.startup import program_files

from ..conda_packages import (
    PLACEHOLDER,
    Package,
    PkgFile,
    build_package,
    host_python_package,
    index_channel,
    ipykernel_package,
)

HERE = Path(__file__).parent
FAKE_CONDA = HERE / "fake_conda.py"
PY38 = Path("/root/.pyenv/versions/3.8.18/bin/python3")


def text_package(version: str) -> Package:
    tool = f"#!{PLACEHOLDER}/bin/python\nimport sys\nprint('textpkg {version}', sys.prefix)\n"
    conf = f"version={version}\nprefix={PLACEHOLDER}\nlib={PLACEHOLDER}/lib\n"
    return Package(
        "textpkg",
        version,
        {
            "etc/textpkg.conf": PkgFile(conf.encode(), mode="text"),
            "bin/textpkg-tool": PkgFile(tool.encode(), mode="text", perm=0o755),
        },
        depends=["python"],
    )


BINARY_TAIL = b"\x00after\x00"


def binary_package() -> Package:
    data = (
        b"\x7fELF\x02\x01\x01\x00"
        + PLACEHOLDER.encode()
        + b"/lib:"
        + PLACEHOLDER.encode()
        + b"/lib64"
        + BINARY_TAIL
    )
    return Package("binpkg", "1.0", {"lib/libbinpkg.so": PkgFile(data, mode="binary")})


def hello_package() -> Package:
    code = b"import sys\n\ndef main():\n    print('hello', sys.prefix, __file__)\n"
    return Package(
        "hello",
        "1.0",
        {"site-packages/hello_pkg/__init__.py": PkgFile(code)},
        depends=["python"],
        noarch="python",
        entry_points=["hello = hello_pkg:main"],
    )


def extra_package() -> Package:
    return Package("extra", "1.0", {"share/extra.txt": PkgFile(b"extra\n")})


@pytest.fixture(scope="session")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local conda channel with every test package, indexed with py-rattler."""
    root = tmp_path_factory.mktemp("channel")
    for pkg in (
        host_python_package(),
        ipykernel_package(),
        text_package("1.0"),
        text_package("2.0"),
        binary_package(),
        hello_package(),
        extra_package(),
    ):
        build_package(root, pkg)
    return index_channel(root)


async def _solve_install(channel: Path, specs: list[str], prefix: Path, cache: Path) -> None:
    records = await rattler.solve(
        sources=[rattler.Channel(channel.as_uri())],
        specs=specs,
        platforms=["linux-64", "noarch"],
        virtual_packages=[],
    )
    await rattler.install(records, target_prefix=prefix, cache_dir=cache, show_progress=False)


# --------------------------------------------------------------------------- the studio


@dataclass
class Studio:
    """A fake pod: image env dir, files dir, home; runs steps like the init containers do."""

    root: Path
    channel: Path
    home: Path
    files: Path
    image_envs: Path
    python: str
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def envs(self) -> Path:
        return self.home / ".local" / "envs"

    @property
    def state(self) -> Path:
        return self.home / ".local" / "state" / "studio"

    @property
    def kernels(self) -> Path:
        return self.home / ".local" / "share" / "jupyter" / "kernels"

    def image_env(self, name: str, specs: list[str]) -> Path:
        """Create (or update) the image env ``name`` with these specs."""
        prefix = self.image_envs / name
        asyncio.run(_solve_install(self.channel, specs, prefix, self.root / "pkgs"))
        return prefix

    def install(self, prefix: Path, specs: list[str]) -> None:
        """Install into any prefix (e.g. the user's copy, as `conda install` would)."""
        asyncio.run(_solve_install(self.channel, specs, prefix, self.root / "pkgs"))

    def environ(self, **extra: str) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "STUDIO_FILES": str(self.files),
            "STUDIO_IMAGE_ENV_DIRS": str(self.image_envs),
            "STUDIO_PYTHON_CANDIDATES": self.python,
            "STUDIO_TEST_CHANNEL": self.channel.as_uri(),
            "STUDIO_TEST_PKGS": str(self.root / "pkgs"),
            "STUDIO_TEST_CALLS": str(self.root / "installer-calls.txt"),
        }
        env.update(self.extra_env)
        env.update(extra)
        return env

    def argv(self, step: str, *args: str) -> list[str]:
        return ["sh", str(self.files / "studio_startup.sh"), step, *args]

    def run(
        self, step: str, *args: str, timeout: float = 300, **env: str
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.argv(step, *args),
            env=self.environ(**env),
            timeout=timeout,
            capture_output=True,
            text=True,
        )

    def ok(self, step: str, *args: str, **env: str) -> subprocess.CompletedProcess:
        result = self.run(step, *args, **env)
        assert result.returncode == 0, f"{step} failed:\n{result.stdout}\n{result.stderr}"
        return result

    def log(self, step: str) -> str:
        return (self.state / f"{step}.log").read_text()


def _program_python() -> str:
    """Run the program with Python 3.8 when available (the oldest we support)."""
    return str(PY38) if PY38.exists() else sys.executable


@pytest.fixture
def studio(tmp_path: Path, channel: Path) -> Studio:
    files = tmp_path / "etc" / "studio"
    files.mkdir(parents=True)
    for name, text in program_files().items():
        (files / name).write_text(text)
    home = tmp_path / "home" / "jovyan"
    home.mkdir(parents=True)
    image_envs = tmp_path / "image" / "opt" / "conda" / "envs"
    image_envs.mkdir(parents=True)
    return Studio(
        tmp_path,
        channel,
        home,
        files,
        image_envs,
        _program_python(),
        {"STUDIO_INSTALLER": f"{sys.executable} {FAKE_CONDA}"},
    )


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` with inode, size, mtime and ctime: any write changes it."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            out[os.path.relpath(path, root)] = (
                st.st_ino,
                st.st_size,
                st.st_mtime_ns,
                st.st_ctime_ns,
            )
    return out
