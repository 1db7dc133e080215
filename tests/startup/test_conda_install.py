"""images/notebook/studio-conda-install against a conda channel served over HTTP: solve from an
environment.yml, install a lock without solving, reuse the package cache, keep user-added
packages on update; and the user-env step driving it with the hub's lock."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conda_packages import serve_directory, write_wheel
from .conftest import Studio

INSTALLER = Path(__file__).parents[2] / "images" / "notebook" / "studio-conda-install"
SPEC = "channels: [{name}]\ndependencies:\n  - python\n  - ipykernel\n  - hello\n  - binpkg\n"


class Channel:
    """A copy of the test channel served over HTTP: CONDA_CHANNEL_ALIAS + its name."""

    def __init__(self, root: Path, alias: str) -> None:
        self.root, self.alias, self.name = root, alias, root.name

    def spec(self, extra: str = "") -> str:
        return SPEC.format(name=self.name) + extra

    def drop_repodata(self) -> None:
        for repodata in self.root.glob("*/repodata*"):
            repodata.unlink()
        for shards in self.root.glob("*/shards"):
            shutil.rmtree(shards)


@pytest.fixture
def http_channel(channel: Path, tmp_path: Path) -> Iterator[Channel]:
    root = tmp_path / "served" / "local"
    shutil.copytree(channel, root)
    with serve_directory(root.parent) as url:
        yield Channel(root, url + "/")


def install(*args: str, alias: str, pkgs: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {"PATH": "/usr/bin:/bin", "HOME": str(pkgs.parent), "CONDA_CHANNEL_ALIAS": alias,
               "CONDA_PKGS_DIRS": str(pkgs), **env}
    return subprocess.run([sys.executable, str(INSTALLER), *args], env=environ,
                          capture_output=True, text=True, timeout=300)


def packages(prefix: Path) -> set[str]:
    return {json.loads(p.read_text())["name"] for p in (prefix / "conda-meta").glob("*.json")}


def test_create_solves_the_file_against_the_http_channel(http_channel: Channel, tmp_path: Path):
    spec = tmp_path / "environment.yml"
    spec.write_text(http_channel.spec())
    prefix = tmp_path / "env"
    result = install("env", "create", "-p", str(prefix), "-f", str(spec),
                     alias=http_channel.alias, pkgs=tmp_path / "pkgs")
    assert result.returncode == 0, result.stderr
    assert {"python", "ipykernel", "hello", "binpkg"} <= packages(prefix)
    assert str(prefix).encode() in (prefix / "lib" / "libbinpkg.so").read_bytes()
    assert "0 already in the package cache" in result.stdout


def test_a_lock_installs_without_solving_and_the_cache_makes_it_offline(
    http_channel: Channel, tmp_path: Path
):
    spec, lock, pkgs = tmp_path / "environment.yml", tmp_path / "environment.lock", tmp_path / "p"
    spec.write_text(http_channel.spec())
    locked = install("lock", "-f", str(spec), "-o", str(lock), alias=http_channel.alias, pkgs=pkgs)
    assert locked.returncode == 0, locked.stderr
    http_channel.drop_repodata()  # nothing left to solve against: only the lock's URLs work
    first = install("env", "create", "-p", str(tmp_path / "a"), "-f", str(spec),
                    "--lock", str(lock), alias=http_channel.alias, pkgs=pkgs)
    assert first.returncode == 0, first.stderr
    assert "Solving" not in first.stdout
    unsolvable = install("env", "create", "-p", str(tmp_path / "b"), "-f", str(spec),
                         alias=http_channel.alias, pkgs=pkgs, HOME=str(tmp_path / "new-home"))
    assert unsolvable.returncode != 0

    shutil.rmtree(http_channel.root)  # the channel is gone: the package cache is enough
    second = install("env", "create", "-p", str(tmp_path / "c"), "-f", str(spec),
                     "--lock", str(lock), alias=http_channel.alias, pkgs=pkgs)
    assert second.returncode == 0, second.stderr
    count = len(packages(tmp_path / "c"))
    assert f"Installing {count} package(s)" in second.stdout
    assert f"({count} already in the package cache {pkgs})" in second.stdout
    assert packages(tmp_path / "c") == packages(tmp_path / "a")


def test_update_keeps_packages_the_user_added(http_channel: Channel, tmp_path: Path):
    spec, prefix = tmp_path / "environment.yml", tmp_path / "env"
    spec.write_text(http_channel.spec())
    args = ("-p", str(prefix), "-f", str(spec))
    assert install("env", "create", *args, alias=http_channel.alias,
                   pkgs=tmp_path / "pkgs").returncode == 0
    extra = tmp_path / "extra.yml"
    extra.write_text(f"channels: [{http_channel.name}]\ndependencies: [extra]\n")
    assert install("env", "update", "-p", str(prefix), "-f", str(extra),
                   alias=http_channel.alias, pkgs=tmp_path / "pkgs").returncode == 0
    spec.write_text(http_channel.spec("  - textpkg=2.0\n"))
    result = install("env", "update", *args, alias=http_channel.alias, pkgs=tmp_path / "pkgs")
    assert result.returncode == 0, result.stderr
    assert {"extra", "textpkg", "hello"} <= packages(prefix)


def test_a_missing_package_fails_with_the_solver_message(http_channel: Channel, tmp_path: Path):
    spec = tmp_path / "environment.yml"
    spec.write_text(http_channel.spec("  - no-such-package-xyz\n"))
    result = install("env", "create", "-p", str(tmp_path / "env"), "-f", str(spec),
                     alias=http_channel.alias, pkgs=tmp_path / "pkgs")
    assert result.returncode == 1
    assert "no-such-package-xyz" in result.stderr
    assert not (tmp_path / "env" / "conda-meta").exists()


def test_user_env_builds_from_the_lock_and_reports_status(
    studio: Studio, http_channel: Channel, tmp_path: Path
):
    spec = studio.files / "environment.yml"
    spec.write_text(http_channel.spec())
    lock = studio.files / "environment.lock"
    pkgs = tmp_path / "shared-pkgs"
    assert install("lock", "-f", str(spec), "-o", str(lock), alias=http_channel.alias,
                   pkgs=pkgs).returncode == 0
    env = {"STUDIO_INSTALLER": f"{sys.executable} {INSTALLER}",
           "CONDA_CHANNEL_ALIAS": http_channel.alias, "CONDA_PKGS_DIRS": str(pkgs)}
    result = studio.ok("user-env", **env)
    assert "from the hub's lock" in result.stdout
    home = studio.home / ".local" / "share" / "studio"
    status = json.loads((home / "build.json").read_text())
    assert status["state"] == "built" and status["locked"] is True
    assert "Installing" in (home / "build.log").read_text()
    assert (home / "environment.lock").read_text() == lock.read_text()  # downloadable
    assert "hello" in packages(studio.envs / "studio")

    assert "unchanged" in studio.ok("user-env", **env).stdout
    assert json.loads((home / "build.json").read_text())["state"] == "unchanged"


def test_user_env_failure_is_in_the_status_and_the_message(
    studio: Studio, http_channel: Channel
):
    (studio.files / "environment.yml").write_text(http_channel.spec("  - no-such-package-xyz\n"))
    result = studio.run("user-env", STUDIO_INSTALLER=f"{sys.executable} {INSTALLER}",
                        CONDA_CHANNEL_ALIAS=http_channel.alias)
    assert result.returncode == 1
    assert "no-such-package-xyz" in result.stderr
    status = json.loads((studio.home / ".local/share/studio/build.json").read_text())
    assert status["state"] == "build-failed"
    assert "no-such-package-xyz" in status["error"]


def test_pip_requirements_go_into_the_env_with_its_own_pip(http_channel: Channel, tmp_path):
    wheels = tmp_path / "wheels"
    write_wheel(wheels, "studio_pip_probe", "1.0", "VALUE = 'probe'\n")
    spec, prefix = tmp_path / "environment.yml", tmp_path / "env"
    spec.write_text(http_channel.spec("  - pip:\n    - studio-pip-probe==1.0\n"))
    result = install("env", "create", "-p", str(prefix), "-f", str(spec),
                     alias=http_channel.alias, pkgs=tmp_path / "pkgs",
                     PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheels))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pip: installing 1 requirement(s)" in result.stdout
    probe = subprocess.run([str(prefix / "bin" / "python"), "-c",
                            "import studio_pip_probe, sys; print(studio_pip_probe.__file__)"],
                           capture_output=True, text=True)
    assert probe.stdout.startswith(str(prefix)), probe.stdout + probe.stderr


def test_a_pip_failure_says_so(http_channel: Channel, tmp_path: Path):
    spec = tmp_path / "environment.yml"
    spec.write_text(http_channel.spec("  - pip:\n    - not-on-any-index==9.9\n"))
    result = install("env", "create", "-p", str(tmp_path / "env"), "-f", str(spec),
                     alias=http_channel.alias, pkgs=tmp_path / "pkgs", PIP_NO_INDEX="1")
    assert result.returncode == 1
    assert "pip failed" in result.stderr and "not-on-any-index" in result.stdout + result.stderr


def test_update_from_a_new_lock_keeps_user_packages(http_channel: Channel, tmp_path: Path):
    spec, lock, pkgs = tmp_path / "environment.yml", tmp_path / "environment.lock", tmp_path / "p"
    prefix = tmp_path / "env"

    def locked(text: str, action: str) -> subprocess.CompletedProcess:
        spec.write_text(text)
        assert install("lock", "-f", str(spec), "-o", str(lock), alias=http_channel.alias,
                       pkgs=pkgs).returncode == 0
        return install("env", action, "-p", str(prefix), "-f", str(spec), "--lock", str(lock),
                       alias=http_channel.alias, pkgs=pkgs)

    assert locked(http_channel.spec(), "create").returncode == 0
    extra = tmp_path / "extra.yml"  # the user's own `conda install extra`
    extra.write_text(f"channels: [{http_channel.name}]\ndependencies: [extra]\n")
    assert install("env", "update", "-p", str(prefix), "-f", str(extra),
                   alias=http_channel.alias, pkgs=pkgs).returncode == 0
    result = locked(http_channel.spec("  - textpkg=1.0\n"), "update")
    assert result.returncode == 0, result.stderr
    assert {"extra", "textpkg", "hello"} <= packages(prefix)


def test_channel_names_in_specs_resolve_through_the_alias(http_channel: Channel, tmp_path):
    spec = tmp_path / "environment.yml"
    spec.write_text(f"channels: []\ndependencies: [python, '{http_channel.name}::hello']\n")
    result = install("env", "create", "-p", str(tmp_path / "env"), "-f", str(spec),
                     alias=http_channel.alias, pkgs=tmp_path / "pkgs")
    assert result.returncode == 1 and "names no channels" in result.stderr
    spec.write_text(f"channels: [{http_channel.name}]\n"
                    f"dependencies: [python, '{http_channel.name}::hello']\n")
    result = install("env", "create", "-p", str(tmp_path / "env"), "-f", str(spec),
                     alias=http_channel.alias, pkgs=tmp_path / "pkgs")
    assert result.returncode == 0, result.stderr
    assert "hello" in packages(tmp_path / "env")
