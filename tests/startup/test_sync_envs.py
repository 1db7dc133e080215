"""sync-envs: image envs become relocated, user-owned copies that are kept up to date safely."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import zipfile
from pathlib import Path

import pytest

from ..conda_packages import PLACEHOLDER, PY
from .conftest import BINARY_TAIL, Studio, snapshot

FULL = ["python", "ipykernel", "textpkg ==1.0", "binpkg", "hello"]


def run_in(prefix: Path, *argv: str) -> str:
    out = subprocess.run(
        [str(prefix / "bin" / argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def records(prefix: Path) -> set[str]:
    return {p.name for p in (prefix / "conda-meta").glob("*.json")}


def leftovers(studio: Studio) -> list[str]:
    return [p.name for p in studio.envs.iterdir() if p.name.startswith(".studio-")]


def make_wheel(tmp: Path) -> Path:
    """A tiny pure-Python wheel, to pip-install into a copy as a user would."""
    wheel = tmp / "userpkg-1.0-py3-none-any.whl"
    files = {
        "userpkg.py": "VALUE = 42\n",
        "userpkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: userpkg\nVersion: 1.0\n",
        "userpkg-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + "userpkg-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
        zf.writestr("userpkg-1.0.dist-info/RECORD", record)
    return wheel


def pip_install_wheel(prefix: Path, tmp_path: Path) -> None:
    """pip-install a small local wheel into the env at prefix, as a user would."""
    run_in(prefix, "python", "-m", "pip", "install", "-q", "--no-index", "--no-deps",
           str(make_wheel(tmp_path)))


def test_first_sync_relocates_the_copy(studio: Studio) -> None:
    """Text and binary placeholders, entry points, symlinks and the interpreter follow the copy."""
    image = studio.image_env("py", FULL)
    studio.ok("sync-envs")
    copy = studio.envs / "py"
    new, old = str(copy), str(image)

    conf = (copy / "etc" / "textpkg.conf").read_text()
    assert conf == f"version=1.0\nprefix={new}\nlib={new}/lib\n"
    assert (image / "etc" / "textpkg.conf").read_text().count(old) == 2  # image untouched

    blob = (copy / "lib" / "libbinpkg.so").read_bytes()
    original = (image / "lib" / "libbinpkg.so").read_bytes()
    assert len(blob) == len(original)
    assert blob.startswith(b"\x7fELF\x02\x01\x01\x00" + f"{new}/lib:{new}/lib64\0".encode())
    assert blob.endswith(BINARY_TAIL)
    assert old.encode() not in blob
    assert blob[8:].split(b"\0")[0] == f"{new}/lib:{new}/lib64".encode()

    assert run_in(copy, "python", "-c", "import sys; print(sys.prefix)").strip() == new
    assert run_in(copy, "textpkg-tool").split() == ["textpkg", "1.0", new]
    hello = run_in(copy, "hello").split()
    assert hello[1] == new and hello[2].startswith(new + "/lib/")
    assert os.readlink(copy / "bin" / "python") == PY

    meta = json.loads(next((copy / "conda-meta").glob("textpkg-*.json")).read_text())
    entry = next(p for p in meta["paths_data"]["paths"] if p["_path"] == "etc/textpkg.conf")
    assert entry["prefix_placeholder"] == PLACEHOLDER
    if "sha256_in_prefix" in entry:
        import hashlib

        assert entry["sha256_in_prefix"] == hashlib.sha256(conf.encode()).hexdigest()
    assert new in (studio.home / ".conda" / "environments.txt").read_text().split("\n")
    assert leftovers(studio) == []


def test_pip_in_the_copy_installs_into_the_copy(studio: Studio, tmp_path: Path) -> None:
    studio.image_env("py", FULL)
    studio.ok("sync-envs")
    copy = studio.envs / "py"
    pip_install_wheel(copy, tmp_path)
    assert (copy / "lib" / PY / "site-packages" / "userpkg.py").exists()
    assert not (studio.image_envs / "py" / "lib" / PY / "site-packages" / "userpkg.py").exists()


def test_long_home_falls_back_for_shebangs_and_keeps_binaries(studio: Studio) -> None:
    """Over 127 bytes a shebang becomes /usr/bin/env; a binary needing more room is left as is."""
    studio.home = studio.root / ("h" * 120) / ("o" * 120) / ("m" * 40)
    studio.home.mkdir(parents=True)
    image = studio.image_env("py", FULL)
    studio.ok("sync-envs")
    copy = studio.envs / "py"
    assert len(str(copy)) > len(PLACEHOLDER)
    tool = (copy / "bin" / "textpkg-tool").read_text()
    assert tool.startswith("#!/usr/bin/env python\n")
    assert (copy / "lib" / "libbinpkg.so").read_bytes() == (
        image / "lib" / "libbinpkg.so"
    ).read_bytes()
    assert "binary file(s) keep the image path" in studio.log("sync-envs")


def test_unchanged_restart_writes_nothing(studio: Studio) -> None:
    studio.image_env("py", FULL)
    studio.image_env("other", ["python", "textpkg ==1.0"])
    studio.ok("sync-envs")
    before = snapshot(studio.envs)
    result = studio.ok("sync-envs")
    assert snapshot(studio.envs) == before
    assert "py: unchanged" in result.stdout and "other: unchanged" in result.stdout


def test_image_update_reaches_an_unmodified_copy(studio: Studio) -> None:
    studio.image_env("py", FULL)
    studio.ok("sync-envs")
    studio.image_env("py", ["python", "ipykernel", "textpkg ==2.0", "binpkg", "hello"])
    result = studio.ok("sync-envs")
    copy = studio.envs / "py"
    assert "py: updated" in result.stdout
    assert "textpkg-2.0-0.json" in records(copy)
    assert (copy / "etc" / "textpkg.conf").read_text().startswith(f"version=2.0\nprefix={copy}\n")
    assert [p.name for p in studio.envs.iterdir()] == ["py"]


@pytest.mark.parametrize("change", ["pip", "conda"])
def test_user_change_survives_an_image_update(studio: Studio, tmp_path: Path, change: str) -> None:
    studio.image_env("py", FULL)
    studio.ok("sync-envs")
    copy = studio.envs / "py"
    if change == "pip":
        pip_install_wheel(copy, tmp_path)
    else:
        studio.install(copy, FULL + ["extra"])
    user_view = snapshot(copy)

    studio.image_env("py", ["python", "ipykernel", "textpkg ==2.0", "binpkg", "hello"])
    result = studio.ok("sync-envs")
    assert snapshot(copy) == user_view  # not a byte of the user's env was touched
    beside = [p for p in studio.envs.iterdir() if p.name.startswith("py-image-")]
    assert len(beside) == 1, list(studio.envs.iterdir())
    assert "textpkg-2.0-0.json" in records(beside[0])
    assert (
        (beside[0] / "etc" / "textpkg.conf")
        .read_text()
        .startswith(f"version=2.0\nprefix={beside[0]}\n")
    )
    assert "you changed your copy" in result.stdout and str(beside[0]) in result.stdout

    again = snapshot(studio.envs)
    studio.ok("sync-envs")
    assert snapshot(studio.envs) == again


def test_existing_env_not_made_by_us_is_kept(studio: Studio) -> None:
    studio.image_env("py", FULL)
    mine = studio.envs / "py"
    (mine / "conda-meta").mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    studio.ok("sync-envs")
    assert sorted(p.name for p in mine.iterdir()) == ["conda-meta", "notes.txt"]
    assert len([p for p in studio.envs.iterdir() if p.name.startswith("py-image-")]) == 1


def run_until_paused(studio: Studio, point: str) -> None:
    """Start sync-envs, wait until it reaches ``point``, then SIGKILL it."""
    proc = subprocess.Popen(
        studio.argv("sync-envs"),
        env=studio.environ(STUDIO_TEST_PAUSE_AT=point),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        for line in proc.stderr:
            if line.startswith(f"studio-test-paused {point}"):
                break
        else:
            pytest.fail(f"sync-envs never reached {point} (exit {proc.wait()})")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.parametrize("point", ["copied", "relocating", "before-rename"])
def test_first_sync_killed_midway_recovers(studio: Studio, point: str) -> None:
    studio.image_env("py", FULL)
    run_until_paused(studio, point)
    assert not (studio.envs / "py").exists()
    studio.ok("sync-envs")
    copy = studio.envs / "py"
    assert leftovers(studio) == []
    assert (copy / "etc" / "textpkg.conf").read_text().startswith(f"version=1.0\nprefix={copy}\n")
    assert run_in(copy, "textpkg-tool").split() == ["textpkg", "1.0", str(copy)]


@pytest.mark.parametrize("point", ["copied", "relocating", "before-swap", "between-renames"])
def test_update_killed_midway_keeps_then_completes(studio: Studio, point: str) -> None:
    studio.image_env("py", FULL)
    studio.ok("sync-envs")
    copy = studio.envs / "py"
    studio.image_env("py", ["python", "ipykernel", "textpkg ==2.0", "binpkg", "hello"])
    run_until_paused(studio, point)
    if point != "between-renames":
        assert "textpkg-1.0-0.json" in records(copy)  # the previous env is intact in place
    studio.ok("sync-envs", STUDIO_IMAGE_ENV_DIRS=str(studio.root / "no-envs"))
    assert "textpkg-1.0-0.json" in records(copy)  # recovery alone gives back the previous env
    assert leftovers(studio) == []
    studio.ok("sync-envs")
    assert leftovers(studio) == []
    assert "textpkg-2.0-0.json" in records(copy)
    assert run_in(copy, "textpkg-tool").split() == ["textpkg", "2.0", str(copy)]


def test_no_image_envs_is_fine(studio: Studio) -> None:
    result = studio.ok("sync-envs")
    assert "nothing to sync" in result.stdout
    assert (studio.state / "sync-envs.log").exists()
